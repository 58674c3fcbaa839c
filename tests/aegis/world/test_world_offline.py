"""Paired offline simulation with common random numbers (aegis.world.offline)."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest

from aegis.domain import WorldParams
from aegis.telemetry import KPI_COLUMNS, SCHEMA_V1, WORLD_EPOCH
from aegis.world.offline import SimulationReport, kpis, simulate_pair
from aegis.world.sim import ShardSim


@pytest.fixture(scope="module")
def state() -> dict:
    shard = ShardSim("eu-west-1", "eu-west", players=300, seed=11)
    for _ in range(20):
        shard.step(1.0, shard.clock)
    return shard.state_dict()


def test_world_offline_unchanged_pair_gives_exactly_zero_deltas(state: dict) -> None:
    report = simulate_pair(state, WorldParams.model_validate_json(state["params_json"]), 1.0)
    assert report.ticks == 60
    assert report.events["control"] == report.events["treatment"] > 0
    assert report.control == report.treatment
    assert all(d == 0.0 for d in report.delta.values())
    assert report.integrity_before == report.integrity_after


def test_world_offline_seeded_pair_is_common_and_reproducible(state: dict) -> None:
    params = WorldParams.model_validate_json(state["params_json"])
    a = simulate_pair(state, params, 0.5, seed=5)
    b = simulate_pair(state, params, 0.5, seed=5)
    c = simulate_pair(state, params, 0.5, seed=6)
    assert all(d == 0.0 for d in a.delta.values())
    assert a.control == b.control
    assert a.control != c.control  # another seed is another stream


def test_world_offline_harder_quests_raise_abandonment(state: dict) -> None:
    params = WorldParams.model_validate_json(state["params_json"])
    harder = params.model_copy(update={"quest_difficulty": [d * 2 for d in params.quest_difficulty]})
    report = simulate_pair(state, harder, 2.0)
    assert report.delta["abandon_rate"] > 0.1
    assert report.treatment["deaths_late"] + report.treatment["deaths_mid"] > (
        report.control["deaths_late"] + report.control["deaths_mid"]
    )
    # the change touches no player data by itself
    assert report.integrity_before.same_player_data(report.integrity_after)
    # the report survives JSON (it is the HTTP endpoint's body)
    assert SimulationReport.model_validate_json(report.model_dump_json()) == report


def test_world_offline_rejects_bad_input(state: dict) -> None:
    params = WorldParams()
    with pytest.raises(ValueError, match="hours"):
        simulate_pair(state, params, 0.0)
    with pytest.raises(ValueError, match="hours"):
        simulate_pair(state, params, float("nan"))
    with pytest.raises(TypeError, match="WorldParams"):
        simulate_pair(state, {"npc_aggression": 2.0}, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="missing"):
        simulate_pair({"format": state["format"]}, params, 1.0)


def _table(rows: list[dict]) -> pa.Table:
    cols = {name: [r.get(name) for r in rows] for name in SCHEMA_V1.names}
    return pa.Table.from_pydict(cols, schema=SCHEMA_V1)


def test_world_offline_kpis_follow_the_mart_definitions() -> None:
    t0 = WORLD_EPOCH + timedelta(days=1)
    base = {"schema_version": 1, "region": "eu-west", "shard_id": "s", "config_version": 1}
    rows = []
    for i, (kind, extra) in enumerate(
        [
            ("server_tick", {"tick_ms": 10.0, "players_online": 100}),
            ("server_tick", {"tick_ms": 30.0, "players_online": 50}),
            ("combat_death", {"zone": 0, "x": 1.0, "y": 1.0, "cause": "npc", "player_id": 1}),
            ("combat_death", {"zone": 5, "x": 1.0, "y": 1.0, "cause": "npc", "player_id": 1}),
            ("quest_abandon", {"quest_id": 1, "stage": 4, "player_id": 1}),
            ("quest_complete", {"quest_id": 1, "stage": 5, "player_id": 2}),
            ("quest_complete", {"quest_id": 1, "stage": 5, "player_id": 3}),
            ("quest_stage", {"quest_id": 1, "stage": 3, "player_id": 3}),
            ("currency_source", {"currency": "gold", "amount": 100, "cause": "loot", "player_id": 1}),
            ("currency_source", {"currency": "gems", "amount": 999, "cause": "loot", "player_id": 1}),
            ("currency_sink", {"currency": "gold", "amount": 40, "cause": "repair", "player_id": 1}),
            ("trade", {"item_id": 1, "price": 10, "currency": "gold", "player_id": 1}),
            ("session_end", {"cause": "churn", "player_id": 4}),
            ("reconnect", {"player_id": 5}),
        ]
    ):
        rows.append({**base, "event_id": f"e{i}", "ts": t0 + timedelta(seconds=i), "kind": kind, **extra})
    k = kpis(_table(rows), capacity=200)
    assert set(k) <= set(KPI_COLUMNS) and len(k) == len(KPI_COLUMNS)
    assert k["players_online"] == 75.0 and k["saturation"] == 75.0 / 200
    assert (k["deaths_early"], k["deaths_mid"], k["deaths_late"]) == (1.0, 0.0, 1.0)
    assert k["abandons_late"] == 1.0 and k["abandon_rate"] == pytest.approx(1 / 3)
    assert k["completions_mid"] == 1.0 and k["quest_completions"] == 2.0
    assert (k["currency_sources"], k["currency_sinks"], k["net_inflow"]) == (100.0, 40.0, 60.0)
    assert k["trade_volume"] == 10.0 and k["price_index"] == 1.0
    assert k["velocity"] == pytest.approx(10 / 60)
    assert k["churned"] == 1.0 and k["churn_rate"] == pytest.approx(1 / 75)
    assert k["reconnect_rate"] == pytest.approx(1 / 75)
