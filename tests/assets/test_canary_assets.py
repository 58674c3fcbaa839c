"""The canary stage in the code location: graph shape, sensor behaviour without work, reality_delta,
the charts. The loop against a real world and warehouse is tests/e2e/test_e2e_loop.py."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest

from aegis.changes.store import ChangeSetStore
from aegis.domain import AutonomousChangeSet, ParamChange, PromotionState, ReflectionRecord
from assets import canary
from assets.resources.changes import ChangeSetResource

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def code_location() -> dg.Definitions:
    from pipelines.definitions import defs

    return defs


def test_canary_assets_are_in_the_code_location(code_location) -> None:
    graph = code_location.resolve_asset_graph()
    launch = graph.get(dg.AssetKey("canary_launch"))
    assert launch.group_name == "canary"
    assert launch.parent_keys == {dg.AssetKey("proposals"), dg.AssetKey("fct_shard_kpis")}
    assert launch.automation_condition is not None  # starts on its own when the ranking updates
    assert graph.get(dg.AssetKey("reality_delta")).parent_keys == {dg.AssetKey("canary_judgement")}
    job = code_location.resolve_job_def(canary.LOOP_JOB_NAME)
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "canary_judgement",
        "reality_delta",
    }
    sensor = code_location.resolve_sensor_def("canary_judge_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert 5 <= sensor.minimum_interval_seconds <= 15
    assert sensor.job_name == canary.LOOP_JOB_NAME
    retrain = code_location.resolve_sensor_def("reality_delta_retrain_sensor")
    assert retrain.job_name == canary.TRAINING_JOB_NAME
    code_location.resolve_job_def(canary.TRAINING_JOB_NAME)


def test_canary_sensor_skips_without_a_live_canary(aegis_home) -> None:
    changes = ChangeSetResource(backend_url="http://127.0.0.1:9")
    with dg.DagsterInstance.ephemeral() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources={"changes": changes})
        out = canary.canary_judge_sensor(ctx)
    assert not out.run_requests and out.skip_reason and "no live canary" in str(out.skip_reason)


def test_canary_sensor_waits_for_the_warehouse(aegis_home) -> None:
    store = ChangeSetStore()
    cs = AutonomousChangeSet(
        id="cs-live", target="eu-west-1", diff={"drop_rate": ParamChange(before=1.0, after=1.05)}
    )
    store.add(cs)
    with (
        store.engine.begin() as conn
    ):  # a canary the lifecycle started (state set as the lifecycle leaves it)
        from aegis.changes.store import changesets_t

        conn.execute(changesets_t.update().values(state=PromotionState.CANARY.value))
    store.put_canary_spec("cs-live", "eu-west-1", ["eu-west-2"], 12)
    store.close()
    changes = ChangeSetResource(backend_url="http://127.0.0.1:9")
    with dg.DagsterInstance.ephemeral() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources={"changes": changes})
        out = canary.canary_judge_sensor(ctx)
    assert not out.run_requests and "not readable" in str(out.skip_reason)


def test_reality_delta_materializes_calibration_and_chart(aegis_home) -> None:
    store = ChangeSetStore()
    for i in range(6):
        cid = f"cs-r{i}"
        store.add(
            AutonomousChangeSet(
                id=cid, target="eu-west-1", diff={"drop_rate": ParamChange(before=1.0, after=1.05)}
            )
        )
        refl = ReflectionRecord(
            changeset_id=cid, outcome=PromotionState.PROMOTED, expected={"abandon_rate": 0.0},
            expected_intervals={"abandon_rate": (-0.01, 0.01)}, observed={"abandon_rate": 0.03 if i % 2 else 0.0},
        )  # fmt: skip
        store.put_reflection(cid, refl.model_dump(mode="json"))
    store.close()
    result = dg.materialize(
        [canary.reality_delta], resources={"changes": ChangeSetResource(backend_url="http://127.0.0.1:9")}
    )
    assert result.success
    meta = result.asset_materializations_for_node("reality_delta")[0].metadata
    assert meta["pairs"].value == 6 and meta["miscalibrated"].value is True
    assert meta["interval_scale"].value == pytest.approx(3.0)
    assert meta["retrain"].value is True  # 3x wider is past widening: retrain
    assert "data:image/png;base64," in meta["chart"].value
    doc = json.loads((aegis_home.home / "proposals" / "calibration.json").read_text())
    assert doc["interval_scale"] == pytest.approx(3.0) and doc["updated_at"]


def test_canary_charts_render() -> None:
    starts = pd.date_range("2026-01-01", periods=20, freq="5min", tz="UTC")
    rows = [
        {
            "shard_id": sid,
            "bucket_start": t,
            "abandon_rate": 0.2 + (0.05 if sid == "a" and i > 10 else 0),
            "players_online": 100,
        }
        for sid in ("a", "b", "c")
        for i, t in enumerate(starts)
    ]
    assert canary.kpi_chart(pd.DataFrame(rows), "a", ["b", "c"], starts[10])[:8] == PNG
    trace = [{"bucket_start": t, "abandon_rate": (0.1, 0.0, 0.2)} for t in starts[10:]]
    metrics = [{"name": "abandon_rate", "margin": 0.2, "direction": "lower", "role": "guardrail"}]
    assert canary.sequence_chart(trace, metrics, "continue")[:8] == PNG
