"""The training and evaluation assets end to end on a synthetic warehouse, plus the retrain sensor."""

from __future__ import annotations

import dagster as dg
import duckdb
import pandas as pd
import pytest

from aegis.config import AegisPaths
from aegis.worldmodel.registry import CHAMPION
from aegis.worldmodel.synthetic import synthetic_kpis
from assets.evaluation import champion_is_sound, model_evaluation
from assets.resources.lake import LakeNotConfigured, LakeResource
from assets.resources.mlflow import MlflowResource
from assets.resources.training import TrainingResource
from assets.training import training_dataset, training_defs, world_model, world_model_new_telemetry

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
        resources={"mlflow": MlflowResource(), "lake": LakeResource()},
        run_config=RUN_CONFIG,
        instance=instance,
    )
    assert result.success
    mats = {
        e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    assert len(mats["training_dataset"]["content_hash"].value) == 64
    assert mats["world_model"]["model_version"].value == "1"
    assert mats["model_evaluation"]["decision"].value == "promoted", mats["model_evaluation"]["reason"].value
    checks = result.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [True]
    reg = MlflowResource().registry()
    assert str(reg.version(CHAMPION).version) == "1"
    assert str(aegis_home.mlflow) in reg.tracking_uri


def _dataset(lake: LakeResource) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [training_dataset],
        resources={"lake": lake},
        raise_on_error=False,
        instance=dg.DagsterInstance.ephemeral(),
    )


def test_empty_warehouse_is_a_clear_failure(aegis_home: AegisPaths) -> None:
    _warehouse(aegis_home, synthetic_kpis(shards=1, hours=2))
    result = _dataset(LakeResource())
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "no training dataset" in str(failure.event_specific_data.error.message)
    assert "at least 2" in str(failure.event_specific_data.error.message)


def test_missing_warehouse_is_a_clear_failure(aegis_home: AegisPaths) -> None:
    result = _dataset(LakeResource())
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


def test_dataset_reads_the_lake_resource_warehouse(aegis_home: AegisPaths, tmp_path) -> None:
    """AEGIS_HOME has no warehouse; the configured LakeResource's home has one."""
    other = AegisPaths.from_env(tmp_path / "other").ensure()
    rows = synthetic_kpis(shards=3, hours=14, seed=1)
    _warehouse(other, rows)
    result = _dataset(LakeResource(home=str(other.home)))
    assert result.success
    (mat,) = result.get_asset_materialization_events()
    assert mat.materialization.metadata["source_rows"].value == len(rows)
    assert not aegis_home.warehouse.exists()


def _tick(
    instance: dg.DagsterInstance, training: TrainingResource, cursor: str | None = None, **lake: str
) -> dg.SensorResult | dg.SkipReason:
    resources = {"lake": LakeResource(**lake), "training": training}
    return world_model_new_telemetry(
        dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    )


def test_retrain_sensor_waits_for_enough_new_rows(aegis_home: AegisPaths) -> None:
    instance = dg.DagsterInstance.ephemeral()
    training = TrainingResource()  # the default threshold: 2000 rows
    # no warehouse yet: skip with a reason
    skipped = _tick(instance, training)
    assert isinstance(skipped, dg.SkipReason) and "not readable" in skipped.skip_message
    rows = synthetic_kpis(shards=2, hours=4)  # 96 rows: below the threshold
    _warehouse(aegis_home, rows)
    few = _tick(instance, training)
    assert isinstance(few, dg.SkipReason) and "retrain at 2000" in few.skip_message
    # the profile's threshold, not a constant read at import, decides
    assert isinstance(_tick(instance, TrainingResource(retrain_new_rows=90)), dg.SensorResult)
    many = synthetic_kpis(shards=6, hours=36)
    _warehouse(aegis_home, many)
    fired = _tick(instance, training)
    assert isinstance(fired, dg.SensorResult) and len(fired.run_requests) == 1
    assert fired.cursor == str(len(many))
    again = _tick(instance, training, cursor=fired.cursor)
    assert isinstance(again, dg.SkipReason)


def test_retrain_sensor_reads_the_home_warehouse_also_with_an_s3_lake(aegis_home: AegisPaths) -> None:
    """prod: the lake is S3 but dbt keeps the marts in the home, so training still finds them."""
    _warehouse(aegis_home, synthetic_kpis(shards=2, hours=4))
    s3 = LakeResource(s3_bucket="lake-bucket")
    with pytest.raises(LakeNotConfigured):
        s3.paths()
    assert s3.warehouse_path() == aegis_home.warehouse
    fired = _tick(
        dg.DagsterInstance.ephemeral(), TrainingResource(retrain_new_rows=10), s3_bucket="lake-bucket"
    )
    assert isinstance(fired, dg.SensorResult) and fired.cursor == "96"


def test_retrain_threshold_comes_from_the_resource_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AEGIS_RETRAIN_NEW_ROWS", raising=False)
    assert TrainingResource().retrain_threshold() == 2000
    monkeypatch.setenv("AEGIS_RETRAIN_NEW_ROWS", "50")  # read when the sensor ticks, not at import
    assert TrainingResource().retrain_threshold() == 50
    assert TrainingResource(retrain_new_rows=700).retrain_threshold() == 700
    monkeypatch.setenv("AEGIS_RETRAIN_NEW_ROWS", "lots")
    with pytest.raises(ValueError, match="AEGIS_RETRAIN_NEW_ROWS='lots'"):
        TrainingResource().retrain_threshold()


def test_training_definitions_resolve() -> None:
    defs = dg.Definitions.merge(
        training_defs,
        dg.Definitions(
            assets=[model_evaluation],
            asset_checks=[champion_is_sound],
            resources={"mlflow": MlflowResource(), "lake": LakeResource(), "training": TrainingResource()},
        ),
    )
    job = defs.resolve_job_def("world_model_training_job")
    keys = {n.path[-1] for n in job.asset_layer.selected_asset_keys}
    assert {"training_dataset", "world_model", "model_evaluation"} <= keys
    sched = defs.resolve_schedule_def("world_model_daily")
    assert sched.default_status == dg.DefaultScheduleStatus.RUNNING
    assert (
        defs.resolve_sensor_def("world_model_new_telemetry").default_status == dg.DefaultSensorStatus.RUNNING
    )


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
    assert TrainingResource().retrain_new_rows is None  # unset: the environment's, else 2000
