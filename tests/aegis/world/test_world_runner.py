"""The batch runner and exploration."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aegis.config import AegisPaths
from aegis.domain import PARAM_BOUNDS, Fault, FaultKind, WorldParams
from aegis.telemetry import WORLD_EPOCH, config_landing_path
from aegis.world.exploration import SAFE_BANDS, exploration_epoch, explore, shard_offset_minutes
from aegis.world.landing import LandingStats
from aegis.world.runner import _merge, _Plan, _simulate, _split, run_world
from aegis.world.sim import World


def test_explore_is_deterministic_and_inside_safe_bands():
    base = WorldParams(npc_aggression=2.5, source_multiplier=4.0)  # far outside the bands
    seen_changed = set()
    for epoch in range(40):
        p = explore(base, 7, "eu-west-1", epoch)
        assert p == explore(base, 7, "eu-west-1", epoch)
        for name, change in base.diff(p).items():
            seen_changed.add(name)
            lo, hi = SAFE_BANDS[name]
            values = change.after if isinstance(change.after, list) else [change.after]
            assert all(lo <= v <= hi for v in values), (name, values)
        assert base.diff(p)  # something changes every epoch
    assert seen_changed == set(PARAM_BOUNDS)
    assert explore(base, 7, "eu-west-1", 3) != explore(base, 7, "eu-west-2", 3)
    assert explore(base, 7, "eu-west-1", 3) != explore(base, 8, "eu-west-1", 3)
    with pytest.raises(ValueError):
        explore(base, 7, "eu-west-1", -1)


def test_exploration_schedule_is_offset_per_shard():
    every = 6.0
    offsets = {
        shard_offset_minutes(s, every) for s in ("eu-west-1", "eu-west-2", "us-east-1", "ap-southeast-3")
    }
    assert len(offsets) > 1 and all(0 <= o < every * 60 for o in offsets)
    sid = "us-east-2"
    t0 = WORLD_EPOCH + timedelta(minutes=shard_offset_minutes(sid, every))
    assert exploration_epoch(t0 - timedelta(seconds=1), sid, every) == 0
    assert exploration_epoch(t0, sid, every) == 1
    assert exploration_epoch(t0 + timedelta(hours=every), sid, every) == 2


def test_run_world_explores_but_not_canaries(aegis_home):
    world = World(players_per_shard=60, shards_per_region=1, tick_minutes=5)
    summary = run_world(
        aegis_home,
        hours=13,
        world=world,
        explore=True,
        no_explore_shards=["us-east-1"],
        retention_hours=None,
        batch_minutes=60,
    )
    assert summary.ticks == 13 * 12 and summary.shards == 3
    assert world.game_time == world.shards["eu-west-1"].clock
    assert world.shards["us-east-1"].config_version == 1
    assert world.shards["us-east-1"].params == WorldParams()
    for sid in ("eu-west-1", "ap-southeast-1"):
        shard = world.shards[sid]
        assert shard.config_version >= 3  # >= 2 exploration epochs in 13 hours
        assert shard.config_source == "exploration"
        feed = pq.read_table(config_landing_path(aegis_home.landing_telemetry, sid, shard.config_version))
        assert feed.to_pylist()[0]["source"] == "exploration"
    assert summary.config_files == 3 + sum(s.config_version - 1 for s in world.shards.values())
    assert summary.events > 0 and summary.events_per_second > 0
    # Events carry the version in force: every version that was in force shows up.
    versions = set()
    for f in aegis_home.landing_telemetry.rglob("shard=eu-west-1/*.parquet"):
        versions |= set(pq.read_table(f, columns=["config_version"])["config_version"].to_pylist())
    assert versions == set(range(1, world.shards["eu-west-1"].config_version + 1))


def test_run_world_refuses_bad_arguments(aegis_home):
    with pytest.raises(ValueError, match="hours"):
        run_world(aegis_home, hours=0)
    with pytest.raises(ValueError, match="unknown shards"):
        run_world(
            aegis_home,
            hours=1,
            world=World(players_per_shard=5, shards_per_region=1),
            no_explore_shards=["mars-1"],
        )


def _landed_rows(root) -> pa.Table:
    files = sorted(root.rglob("*.parquet"))
    t = pa.concat_tables([pq.read_table(f) for f in files])
    return t.sort_by("event_id")


@pytest.mark.slow  # spawns worker processes (~10-30 s on a loaded machine)
def test_run_world_is_identical_whatever_the_number_of_workers(tmp_path):
    """Shards in worker processes land the same events and end in the same state as in-process."""
    results = {}
    for workers in (1, 2):
        home = AegisPaths(tmp_path / f"w{workers}")
        world = World(seed=3, players_per_shard=300, shards_per_region=1, tick_minutes=5)
        world.shards["us-east-1"].inject(
            Fault(kind=FaultKind.SHARD_CRASH, shard_id="us-east-1", duration_minutes=20), world.game_time
        )
        before = {sid: id(s) for sid, s in world.shards.items()}
        summary = run_world(
            home, hours=7, world=world, workers=workers, explore_every_hours=2.0, retention_hours=None
        )
        assert summary.workers == workers
        assert {sid: id(s) for sid, s in world.shards.items()} == before  # advanced in place
        results[workers] = (summary, world, _landed_rows(home.landing_telemetry))
    (s1, w1, t1), (s2, w2, t2) = results[1], results[2]
    assert t1.num_rows == s1.events == s2.events > 0
    assert t1.equals(t2)
    assert s1.kinds == s2.kinds and s1.files == s2.files and s1.config_files == s2.config_files
    assert w1.game_time == w2.game_time
    for sid in w1.shards:
        a, b = w1.shards[sid], w2.shards[sid]
        assert a.integrity() == b.integrity()
        assert a.rng.bit_generator.state == b.rng.bit_generator.state
        assert a.config_version == b.config_version > 1  # exploration ran in the workers too
        assert a.kind_counts == b.kind_counts
    # Both worlds keep going identically after the run.
    ta, tb = w1.step(), w2.step()
    assert all(ta[sid].equals(tb[sid]) for sid in ta)


def test_run_world_refuses_bad_worker_counts(aegis_home):
    with pytest.raises(ValueError, match="workers"):
        run_world(aegis_home, hours=1, world=World(players_per_shard=5, shards_per_region=1), workers=0)


def test_shard_groups_simulate_independently(tmp_path):
    """What a worker runs (_simulate on its group) lands what the whole world lands in one process."""
    plan_kw = dict(
        ticks=30,
        tick_minutes=5.0,
        seed=4,
        explore=True,
        explore_every_hours=1.0,
        frozen=("eu-west-1",),
        retention_hours=None,
        batch_minutes=15.0,
    )
    whole = World(seed=4, players_per_shard=150, shards_per_region=1, tick_minutes=5)
    parts = World(seed=4, players_per_shard=150, shards_per_region=1, tick_minutes=5)
    start = whole.game_time.isoformat()
    stats = _simulate(
        _Plan(landing_root=str(tmp_path / "a"), start=start, **plan_kw), list(whole.shards.values())
    )
    groups = _split(list(parts.shards.values()), 2)
    assert sorted(len(g) for g in groups) == [1, 2]
    merged = LandingStats()
    for g in groups:
        _merge(merged, asdict(_simulate(_Plan(landing_root=str(tmp_path / "b"), start=start, **plan_kw), g)))
    assert merged.events == stats.events and merged.kinds == stats.kinds and merged.files == stats.files
    assert _landed_rows(tmp_path / "a").equals(_landed_rows(tmp_path / "b"))
    assert whole.shards["eu-west-1"].config_version == 1  # frozen (canary) shard never explored
    for sid, shard in whole.shards.items():
        assert shard.integrity() == parts.shards[sid].integrity()
        assert shard.config_version == parts.shards[sid].config_version


def test_run_world_keeps_everything_by_default_and_never_deletes_pending_batches(aegis_home):
    from datetime import UTC, datetime

    from aegis.lake.bronze import ingest_batches

    root = aegis_home.landing_telemetry
    w = World(seed=2, players_per_shard=30, shards_per_region=1, tick_minutes=5)
    kept = run_world(aegis_home, hours=3, world=w, explore=False, batch_minutes=30)
    assert kept.deleted_files == 0 and len(list(root.rglob("*.parquet"))) == kept.files == 3 * 6
    # With a retention but nothing ingested yet: every batch is still pending, so kept.
    pending = run_world(aegis_home, hours=1, world=w, explore=False, batch_minutes=30, retention_hours=1)
    assert pending.deleted_files == 0 and pending.kept_files > 0
    assert len(list(root.rglob("*.parquet"))) == 4 * 6
    ingest_batches(aegis_home, now=datetime(2030, 1, 1, tzinfo=UTC))
    after = run_world(aegis_home, hours=1, world=w, explore=False, batch_minutes=30, retention_hours=1)
    assert after.deleted_files > 0 and after.kept_files == 0
    hours = {p.parent.parent.name for p in root.rglob("*.parquet")}
    assert len(hours) <= 2
    with pytest.raises(ValueError, match="retention_hours"):
        run_world(aegis_home, hours=1, world=w, retention_hours=-1)
