"""World instance ids: two worlds in one AEGIS_HOME never share an event id, a restarted world
continues its own, and the lake keeps every real event of both."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from aegis.config import AegisPaths
from aegis.lake.bronze import ID_COLLISION, ingest_batches
from aegis.world.landing import WORLD_INSTANCE_META_KEY, read_instances
from aegis.world.runner import run_world
from aegis.world.service import ServiceOptions, WorldService
from aegis.world.sim import World
from aegis.world.sim_events import EventBuffer, check_instance_id, stamp_instance

SMALL = {"speed": 0.0, "players_per_shard": 60, "shards_per_region": 1, "retention_hours": None}
ID = re.compile(r"^(?P<shard>[a-z]+-[a-z]+-\d)-(?P<inst>[0-9a-f]{8})-[0-9a-f]{13}-[0-9a-f]{7}$")


def _landed(paths: AegisPaths) -> pa.Table:
    files = sorted(paths.landing_telemetry.rglob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def _instances(table: pa.Table) -> set[str]:
    return {ID.match(i).group("inst") for i in table.column("event_id").to_pylist()}  # type: ignore[union-attr]


def _without_instance(ids: list[str]) -> set[str]:
    return {re.sub(r"-[0-9a-f]{8}-", "-", i, count=1) for i in ids}


def _svc(home: Path, **kw: object) -> WorldService:
    return WorldService(AegisPaths(home), ServiceOptions(**{**SMALL, **kw}))  # type: ignore[arg-type]


def test_two_batch_worlds_with_different_seeds_lose_nothing(aegis_home: AegisPaths) -> None:
    runs = [
        run_world(aegis_home, 1.0, world=World(seed=seed, players_per_shard=60), explore=False, workers=1)
        for seed in (1, 2)
    ]
    assert runs[0].instance_id != runs[1].instance_id
    landed = _landed(aegis_home)
    assert _instances(landed) == {r.instance_id for r in runs}
    # Without the instance the two worlds' ids coincide (the defect): the same shard, tick, sequence.
    ids = landed.column("event_id").to_pylist()
    assert len(_without_instance(ids)) < 0.8 * len(ids)
    report = ingest_batches(aegis_home)
    assert report.rows_in == runs[0].events + runs[1].events
    assert report.bronze_rows == report.rows_in
    assert report.duplicate_rows == report.quarantined_rows == 0
    assert {x["id"] for x in read_instances(aegis_home.landing_telemetry)} == {r.instance_id for r in runs}


def test_a_repeated_batch_run_is_counted_as_duplicates_not_doubled(aegis_home: AegisPaths) -> None:
    def run() -> str:
        world = World(seed=5, players_per_shard=40, shards_per_region=1)
        return run_world(aegis_home, 0.5, world=world, explore=False, workers=1).instance_id

    first = run()
    once = ingest_batches(aegis_home)
    assert run() == first  # the same world from the same state: the same instance
    again = ingest_batches(aegis_home)
    assert again.rows_in == once.rows_in == again.duplicate_rows
    assert again.bronze_rows == again.quarantined_rows == 0


def test_service_worlds_new_and_restarted(aegis_home: AegisPaths) -> None:
    """A restart continues the world's instance (replayed ticks are true duplicates at most); a
    new world in the same home (world.db removed), even with the same seed, gets a new one."""
    home = aegis_home.home
    svc = _svc(home, seed=3)
    first = svc.landing.instance_id  # type: ignore[union-attr]
    assert svc.store.get_meta(WORLD_INSTANCE_META_KEY) == first
    svc.step(13)  # mid window: some ticks only in the journal
    svc.store._db.close()  # killed: no flush
    resumed = _svc(home, seed=3)
    assert resumed.landing.instance_id == first  # type: ignore[union-attr]
    resumed.step(10)
    resumed.stop()
    shutil.rmtree(aegis_home.world_db.parent)  # a new world in the same home and lake
    other = _svc(home, seed=3)
    second = other.landing.instance_id  # type: ignore[union-attr]
    assert second != first
    other.step(12)
    other.stop()
    landed = _landed(aegis_home)
    assert _instances(landed) == {first, second}
    report = ingest_batches(aegis_home)
    assert report.quarantined_rows == 0 and ID_COLLISION not in {r for r, _, _ in report.by_rule()}
    bronze_ids = set(landed.column("event_id").to_pylist())
    assert report.bronze_rows == len(bronze_ids)  # every distinct event kept, only true repeats dropped
    per_instance = {i: sum(1 for e in bronze_ids if f"-{i}-" in e) for i in (first, second)}
    assert per_instance[first] > 0 and per_instance[second] > 0
    registry = json.loads((aegis_home.landing_telemetry / "_world_instances.json").read_text())
    assert [x["id"] for x in registry["instances"]] == [first, second]


def test_stamped_simulator_tables_match_buffers_built_with_the_instance() -> None:
    world = World(seed=9, players_per_shard=30, shards_per_region=1)
    clone = World(seed=9, players_per_shard=30, shards_per_region=1)
    shard = world.shards["eu-west-1"]
    plain = shard.step(1.0, world.game_time)
    buf = EventBuffer("eu-west-1", shard.region, instance="00c0ffee")
    clone.shards["eu-west-1"].step_into(1.0, clone.game_time, buf)
    built = buf.to_table()
    assert stamp_instance(plain, "eu-west-1", "00c0ffee").equals(built)
    assert pc.all(pc.starts_with(built.column("event_id"), "eu-west-1-00c0ffee-")).as_py()
    with pytest.raises(ValueError, match="must start with"):
        stamp_instance(plain, "us-east-1", "00c0ffee")
    for bad in ("", "XYZ", "0123456789", "0123abc!"):
        with pytest.raises(ValueError, match="instance id"):
            check_instance_id(bad)
