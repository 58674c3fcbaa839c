"""The training and evaluation assets end to end on a synthetic warehouse, plus the retrain sensor."""

from __future__ import annotations

import os

import dagster as dg
import duckdb
import pandas as pd
import pytest

from aegis.config import AegisPaths
from aegis.worldmodel.registry import CHAMPION
from aegis.worldmodel.synthetic import synthetic_kpis
from assets.evaluation import champion_is_sound, model_evaluation
from assets.training import (
    RETRAIN_NEW_ROWS,
    training_dataset,
    training_defs,
    world_model,
    world_model_new_telemetry,
)
from pipelines.resources.mlflow import MlflowResource

RUN_CONFIG = {
    "ops": {
        "world_model": {"config": {"epochs": 12, "members": 2, "hidden": 32, "batch_size": 64}},
    }
}


def _warehouse(home: AegisPaths, rows: pd.DataFrame) -> None:
    con = duckdb.connect(str(home.warehouse))
    con.execute("create or replace table fct_shard_kpis as select * from rows")
    con.close()


@pytest.mark.slow  # trains and logs a model through Dagster: ~30-60 s
def test_training_chain_registers_promotes_and_checks(aegis_home: AegisPaths) -> None:
    _warehouse(aegis_home, synthetic_kpis(shards=6, hours=36, seed=0))
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [training_dataset, world_model, model_evaluation, champion_is_sound],
        resources={"mlflow": MlflowResource()},
        run_config=RUN_CONFIG,
        instance=instance,
    )
    assert result.success
    mats = (
        {m.asset_key.path[-1]: m.metadata for m in result.get_asset_materialization_events_iter()}
        if hasattr(result, "get_asset_materialization_events_iter")
        else {
            e.asset_key.path[-1]: e.materialization.metadata
            for e in result.get_asset_materialization_events()
        }
    )
    assert len(mats["training_dataset"]["content_hash"].value) == 64
    assert mats["world_model"]["model_version"].value == "1"
    assert mats["model_evaluation"]["decision"].value == "promoted", mats["model_evaluation"]["reason"].value
    checks = result.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [True]
    reg = MlflowResource().registry()
    assert str(reg.version(CHAMPION).version) == "1"
    assert str(aegis_home.mlflow) in reg.tracking_uri


def test_empty_warehouse_is_a_clear_failure(aegis_home: AegisPaths) -> None:
    _warehouse(aegis_home, synthetic_kpis(shards=1, hours=2))
    result = dg.materialize([training_dataset], raise_on_error=False, instance=dg.DagsterInstance.ephemeral())
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "no training dataset" in str(failure.event_specific_data.error.message)
    assert "at least 2" in str(failure.event_specific_data.error.message)


def test_missing_warehouse_is_a_clear_failure(aegis_home: AegisPaths) -> None:
    result = dg.materialize([training_dataset], raise_on_error=False, instance=dg.DagsterInstance.ephemeral())
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "does not exist" in str(failure.event_specific_data.error.message)


def test_no_champion_fails_the_blocking_check(aegis_home: AegisPaths, wm_free_dataset) -> None:
    result = champion_is_sound(training_dataset=wm_free_dataset, mlflow=MlflowResource())
    assert not result.passed and "no champion yet" in result.description


@pytest.fixture
def wm_free_dataset():
    from aegis.worldmodel.dataset import build_dataset

    return build_dataset(synthetic_kpis(shards=3, hours=14, seed=1))


def test_retrain_sensor_waits_for_enough_new_rows(aegis_home: AegisPaths) -> None:
    instance = dg.DagsterInstance.ephemeral()
    # no warehouse yet: skip with a reason
    skipped = world_model_new_telemetry(dg.build_sensor_context(instance=instance))
    assert isinstance(skipped, dg.SkipReason) and "not readable" in skipped.skip_message
    rows = synthetic_kpis(shards=2, hours=4)  # 96 rows: below the threshold
    _warehouse(aegis_home, rows)
    few = world_model_new_telemetry(dg.build_sensor_context(instance=instance))
    assert isinstance(few, dg.SkipReason) and f"retrain at {RETRAIN_NEW_ROWS}" in few.skip_message
    many = synthetic_kpis(shards=6, hours=36)
    _warehouse(aegis_home, many)
    fired = world_model_new_telemetry(dg.build_sensor_context(instance=instance))
    assert isinstance(fired, dg.SensorResult) and len(fired.run_requests) == 1
    assert fired.cursor == str(len(many))
    again = world_model_new_telemetry(dg.build_sensor_context(instance=instance, cursor=fired.cursor))
    assert isinstance(again, dg.SkipReason)


def test_training_definitions_resolve() -> None:
    defs = dg.Definitions.merge(
        training_defs,
        dg.Definitions(
            assets=[model_evaluation],
            asset_checks=[champion_is_sound],
            resources={"mlflow": MlflowResource()},
        ),
    )
    job = defs.resolve_job_def("world_model_training_job")
    keys = {n.path[-1] for n in job.asset_layer.selected_asset_keys}
    assert {"training_dataset", "world_model", "model_evaluation"} <= keys
    sched = defs.get_schedule_def("world_model_daily")
    assert sched.default_status == dg.DefaultScheduleStatus.RUNNING
    assert defs.get_sensor_def("world_model_new_telemetry").default_status == dg.DefaultSensorStatus.RUNNING


def test_config_and_resource_defaults_are_pinned() -> None:
    """Snapshot of what a user sees in the launchpad; the values now come from aegis.worldmodel.settings."""
    from assets.evaluation import EvaluationConfig
    from assets.training import TrainingDatasetConfig, WorldModelConfig

    assert TrainingDatasetConfig().model_dump() == {
        "window": 12,
        "seed": 0,
        "test_shard_fraction": 0.25,
        "test_time_fraction": 0.2,
        "val_fraction": 0.15,
    }
    assert WorldModelConfig().model_dump() == {
        "epochs": 60,
        "patience": 10,
        "members": 5,
        "hidden": 64,
        "batch_size": 128,
        "lr": 2e-3,
        "seed": 0,
        "device": "auto",
    }
    assert EvaluationConfig().model_dump() == {"margin": 0.02, "baseline_margin": 0.05}
    resource = MlflowResource()
    assert (resource.experiment, resource.model_name) == ("aegis-world-model", "aegis-world-model")
    assert int(os.environ.get("AEGIS_RETRAIN_NEW_ROWS", "2000")) == RETRAIN_NEW_ROWS
