"""The world service in-process: restart continuity, verified restores, atomic config applies."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from aegis.config import AegisPaths
from aegis.domain import Fault, ShardRole, WorldParams
from aegis.world.service import (
    IdempotencyConflictError,
    IntegrityMismatchError,
    InvalidRequest,
    NotFoundError,
    PreconditionRequired,
    ServiceOptions,
    StaleVersion,
    WorldService,
)

SMALL = {"speed": 0.0, "players_per_shard": 150, "shards_per_region": 1}


def _svc(home: Path, **kw: object) -> WorldService:
    return WorldService(AegisPaths(home), ServiceOptions(**{**SMALL, **kw}))  # type: ignore[arg-type]


def _shard_states(svc: WorldService) -> dict:
    return {sid: s.state_dict() for sid, s in svc.world.shards.items()}


def _assert_states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for sid in a:
        for key, value in a[sid].items():
            if isinstance(value, np.ndarray):
                assert np.array_equal(value, b[sid][key]), f"{sid}.{key} differs"
            else:
                assert value == b[sid][key], f"{sid}.{key} differs"


def _event_ids(home: Path) -> set[str]:
    files = sorted((home / "lake" / "landing" / "telemetry").rglob("*.parquet"))
    ids: set[str] = set()
    for f in files:
        ids.update(pq.read_table(f, columns=["event_id"]).column("event_id").to_pylist())
    return ids


def test_crash_and_restart_continues_bit_identically(tmp_path: Path) -> None:
    """A service abandoned mid-run (no stop, no flush: what kill -9 leaves) resumes exactly."""
    opts = {"explore_every_hours": 0.1}  # exploration epochs change every 6 game minutes
    ref = _svc(tmp_path / "ref", **opts)
    ref.step(23)
    ref.stop()

    crashed = _svc(tmp_path / "crash", **opts)
    crashed.step(13)  # mid batch window: ticks 11..13 only in the journal
    config_before = {sid: s.config_version for sid, s in crashed.world.shards.items()}
    crashed.store._db.close()  # the process dies: buffered Parquet and memory are gone

    resumed = _svc(tmp_path / "crash", **opts)
    assert resumed.tick == 13
    assert {sid: s.config_version for sid, s in resumed.world.shards.items()} == config_before
    resumed.step(10)
    resumed.stop()

    _assert_states_equal(_shard_states(ref), _shard_states(resumed))
    assert ref.world.game_time == resumed.world.game_time
    # Telemetry: every event of the uninterrupted run landed, none invented.
    assert _event_ids(tmp_path / "ref") == _event_ids(tmp_path / "crash")
    assert len(_event_ids(tmp_path / "ref")) > 1000


def test_restore_with_tampered_integrity_is_refused_and_keeps_state(tmp_path: Path) -> None:
    svc = _svc(tmp_path)
    try:
        svc.step(3)
        snap = svc.snapshot("eu-west-1")
        svc.step(4)
        before = svc.world.shards["eu-west-1"].state_dict()
        version = svc.config("eu-west-1").version
        with sqlite3.connect(svc.paths.world_db) as db:
            db.execute(
                "UPDATE snapshots SET integrity_json = json_set(integrity_json, '$.active_quests', 999999)"
                " WHERE snapshot_id = ?",
                (snap.snapshot_id,),
            )
        with pytest.raises(IntegrityMismatchError) as err:
            svc.restore("eu-west-1", snap.snapshot_id)
        assert err.value.details["expected"]["active_quests"] == 999999
        assert err.value.details["restored"]["active_quests"] == snap.integrity.active_quests
        _assert_states_equal({"s": before}, {"s": svc.world.shards["eu-west-1"].state_dict()})
        assert svc.config("eu-west-1").version == version
    finally:
        svc.stop()


def test_restore_returns_snapshot_integrity_and_bumps_config(tmp_path: Path) -> None:
    svc = _svc(tmp_path)
    try:
        svc.step(2)
        params = WorldParams(quest_reward=2.0)
        snap = svc.snapshot("us-east-1")
        v = svc.config("us-east-1").version
        svc.put_config("us-east-1", WorldParams(quest_reward=0.5), str(v), None)
        svc.step(5)
        assert svc.integrity("us-east-1") != snap.integrity
        result = svc.restore("us-east-1", snap.snapshot_id)
        assert result.integrity == snap.integrity == svc.integrity("us-east-1")
        assert result.config_version == v + 2
        assert svc.config("us-east-1").params == WorldParams()  # the snapshot's params, not 0.5
        assert [c.source for c in svc.store.config_history("us-east-1")][-1] == "restore"
        with pytest.raises(InvalidRequest, match="belongs to shard us-east-1"):
            svc.restore("eu-west-1", snap.snapshot_id)
        with pytest.raises(NotFoundError, match="unknown snapshot"):
            svc.restore("us-east-1", "snap-nope")
        del params
    finally:
        svc.stop()


def test_config_put_preconditions_and_idempotency(tmp_path: Path) -> None:
    svc = _svc(tmp_path)
    try:
        with pytest.raises(PreconditionRequired):
            svc.put_config("eu-west-1", WorldParams(), None, None)
        with pytest.raises(StaleVersion) as stale:
            svc.put_config("eu-west-1", WorldParams(), "7", None)
        assert stale.value.details["current_version"] == 1
        with pytest.raises(InvalidRequest, match="If-Match"):
            svc.put_config("eu-west-1", WorldParams(), "abc", None)
        status, body, replayed = svc.put_config("eu-west-1", WorldParams(drop_rate=2.0), '"1"', "key-1")
        assert (status, body["version"], replayed) == (200, 2, False)
        again = svc.put_config("eu-west-1", WorldParams(drop_rate=2.0), '"1"', "key-1")
        assert again == (200, body, True)
        assert svc.config("eu-west-1").version == 2
        with pytest.raises(IdempotencyConflictError):
            svc.put_config("eu-west-1", WorldParams(drop_rate=3.0), '"2"', "key-1")
        assert svc.config("eu-west-1").params.drop_rate == 2.0
    finally:
        svc.stop()
    # Keys survive a restart.
    svc = _svc(tmp_path)
    try:
        assert svc.put_config("eu-west-1", WorldParams(drop_rate=2.0), '"1"', "key-1")[2] is True
        assert svc.config("eu-west-1").version == 2
    finally:
        svc.stop()


def test_no_shard_explores_while_a_canary_runs_and_faults_are_durable(tmp_path: Path) -> None:
    svc = _svc(tmp_path, explore_every_hours=0.05)
    try:
        svc.set_role("eu-west-1", ShardRole.CANARY)
        svc.step(12)
        assert svc.config("eu-west-1").version == 1
        assert svc.config("us-east-1").version == 1  # a control holds still during the experiment
        svc.set_role("eu-west-1", ShardRole.CONTROL)
        svc.step(12)
        assert svc.config("us-east-1").version > 1  # exploration resumes once the canary ends
        svc.set_role("eu-west-1", ShardRole.CANARY)
        svc.inject_fault(Fault(kind="shard_crash", shard_id="us-east-1", duration_minutes=30))
    finally:
        svc.store._db.close()
    svc = _svc(tmp_path, explore_every_hours=0.05)
    try:
        assert svc.shard("eu-west-1").role == ShardRole.CANARY
        assert svc.shard("us-east-1").status == "down"
        assert svc.health().status == "degraded"
    finally:
        svc.stop()


def test_a_duplication_exploit_shows_in_the_currency_created_metric(tmp_path: Path) -> None:
    """EconomyInflation reads the AMOUNT created per shard: the exploited shard must stand out."""
    svc = _svc(tmp_path)
    try:
        svc.inject_fault(
            Fault(kind="duplication_exploit", shard_id="eu-west-1", duration_minutes=60, magnitude=3)
        )
        svc.step(6)
        created = svc.metrics.currency_created
        gold = {
            sid: created.labels(shard=sid, currency="gold")._value.get() for sid in ("eu-west-1", "us-east-1")
        }
        assert gold["us-east-1"] > 0
        assert gold["eu-west-1"] > 2 * gold["us-east-1"], gold
    finally:
        svc.stop()
