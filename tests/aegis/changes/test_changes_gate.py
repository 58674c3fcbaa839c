"""The simulation gate: bands from policies/data.json, harmful vs benign, the HTTP endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from aegis.changes.gate import InProcessRunner, bands_from_policy_data, judge, measure
from aegis.domain import WorldParams
from aegis.world.offline import simulate_pair
from aegis.world.sim import ShardSim
from aegis.world.simulations_api import make_router

DATA = Path(__file__).resolve().parents[3] / "policies" / "data.json"


@pytest.fixture(scope="module")
def bands() -> dict[str, tuple[float, float]]:
    return bands_from_policy_data(json.loads(DATA.read_text()))


@pytest.fixture(scope="module")
def state() -> dict:
    shard = ShardSim("us-east-2", "us-east", players=300, seed=23)
    for _ in range(20):
        shard.step(1.0, shard.clock)
    return shard.state_dict()


def test_changes_gate_reads_every_band_of_the_policy_document(bands: dict) -> None:
    doc = json.loads(DATA.read_text())["aegis"]["config"]
    declared = {**doc["economy"]["bands"], **doc["experience"]["bands"]}
    assert set(bands) == set(declared)
    for name, band in declared.items():
        assert bands[name] == (band["low"], band["high"])
    with pytest.raises(ValueError, match="no economy/experience bands"):
        bands_from_policy_data({"aegis": {"config": {}}})
    with pytest.raises(ValueError, match="low, high"):
        bands_from_policy_data({"aegis": {"config": {"economy": {"bands": {"inflation": {"lo": 1}}}}}})


def test_changes_gate_fails_a_harmful_change_and_passes_a_benign_one(state: dict, bands: dict) -> None:
    params = WorldParams.model_validate_json(state["params_json"])
    runner = InProcessRunner(lambda shard, snap: state)
    harmful = params.model_copy(update={"quest_difficulty": [d * 2 for d in params.quest_difficulty]})
    bad = judge(runner.simulate("us-east-2", "snap-x", harmful, 2.0, None), bands)
    assert not bad.passed
    assert any(v.startswith("abandon_rate") for v in bad.violations), bad.violations
    # more currency sink: lowers inflation, touches nothing else
    benign = params.model_copy(update={"sink_multiplier": params.sink_multiplier * 1.05})
    good = judge(runner.simulate("us-east-2", "snap-x", benign, 2.0, None), bands)
    assert good.passed, good.violations
    assert {b.kpi for b in good.bands} == set(bands)


def test_changes_gate_judges_relative_to_the_unchanged_shard(state: dict) -> None:
    params = WorldParams.model_validate_json(state["params_json"])
    report = simulate_pair(state, params, 0.5)
    abandon = measure(report.control, "abandon_rate", report.hours)
    # a band the unchanged shard already violates: an unchanged arm is no worse, so it passes ...
    below = {"abandon_rate": (abandon + 0.5, abandon + 1.0)}
    assert judge(report, below).passed
    # ... and a band it respects passes too; one it leaves fails
    assert judge(report, {"abandon_rate": (0.0, 1.0)}).passed
    worse = report.model_copy(update={"treatment": {**report.treatment, "abandon_rate": abandon + 0.4}})
    assert not judge(worse, {"abandon_rate": (0.0, abandon + 0.1)}).passed
    with pytest.raises(ValueError, match="does not measure"):
        judge(report, {"no_such_kpi": (0.0, 1.0)})


def test_changes_simulations_endpoint_runs_the_pair_and_rejects_bad_input(state: dict) -> None:
    def load(shard_id: str, snapshot_id: str) -> dict:
        if snapshot_id != "snap-1":
            raise KeyError(snapshot_id)
        return state

    app = FastAPI()
    app.include_router(make_router(load))
    client = TestClient(app)
    params = WorldParams.model_validate_json(state["params_json"]).model_dump(mode="json")
    ok = client.post(
        "/v1/shards/us-east-2/simulations", json={"snapshot_id": "snap-1", "params": params, "hours": 0.25}
    )
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["snapshot_id"] == "snap-1" and body["ticks"] == 15
    assert all(v == 0 for v in body["delta"].values())
    missing = client.post("/v1/shards/us-east-2/simulations", json={"snapshot_id": "nope", "params": params})
    assert missing.status_code == 404 and "nope" in missing.text
    other = client.post("/v1/shards/eu-west-1/simulations", json={"snapshot_id": "snap-1", "params": params})
    assert other.status_code == 409
    bad = client.post(
        "/v1/shards/us-east-2/simulations",
        json={"snapshot_id": "snap-1", "params": {**params, "npc_aggression": 99}, "hours": 1},
    )
    assert bad.status_code == 422
    too_long = client.post(
        "/v1/shards/us-east-2/simulations", json={"snapshot_id": "snap-1", "params": params, "hours": 1e6}
    )
    assert too_long.status_code == 422
