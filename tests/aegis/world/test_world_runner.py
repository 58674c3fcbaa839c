"""The batch runner and exploration."""

from __future__ import annotations

from datetime import timedelta

import pyarrow.parquet as pq
import pytest

from aegis.domain import PARAM_BOUNDS, WorldParams
from aegis.telemetry import WORLD_EPOCH, config_landing_path
from aegis.world.exploration import SAFE_BANDS, exploration_epoch, explore, shard_offset_minutes
from aegis.world.runner import run_world
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
