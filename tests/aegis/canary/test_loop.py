"""The canary loop's pure parts: verdict -> action, wave planning, wave changesets."""

from __future__ import annotations

import pytest

from aegis.canary.loop import (
    PROMOTER_ACTOR,
    LoopError,
    action_for,
    plan_waves,
    wave_changeset,
    wave_child_id,
)
from aegis.domain import AutonomousChangeSet, ParamChange, ShardInfo, WorldParams


def _shard(sid: str, players: int, status: str = "up", region: str = "eu-west") -> ShardInfo:
    return ShardInfo(
        id=sid, region=region, status=status, players_online=players, players_total=players, capacity=1000,
        config_version=1,
    )  # fmt: skip


def test_loop_verdicts_map_to_actions() -> None:
    assert action_for("promote", 5, 24) == "promote"
    assert action_for("rollback", 2, 24) == "rollback"
    assert action_for("inconclusive", 24, 24) == "rollback"
    assert action_for("continue", 3, 24) == "wait"
    # a look that ran out of budget without a decision is inconclusive: roll back
    assert action_for("continue", 24, 24) == "rollback"


def test_loop_waves_cover_every_other_up_shard_once_smallest_first() -> None:
    shards = [_shard(f"s{i:02d}", players=100 + i) for i in range(12)]
    shards[5] = _shard("s05", 105, status="down")
    waves = plan_waves("s00", shards)
    flat = [s for w in waves for s in w]
    assert sorted(flat) == sorted(s.id for s in shards if s.id not in ("s00", "s05"))
    assert len(flat) == len(set(flat))
    assert [len(w) for w in waves] == [3, 2, 5]  # 10 remaining: cumulative ceil(2.5)=3, ceil(5)=5, all 10
    assert waves[0] == ["s01", "s02", "s03"]  # fewest players first
    assert plan_waves("a", [_shard("a", 1), _shard("b", 2)]) == [["b"]]
    assert plan_waves("a", [_shard("a", 1)]) == []
    with pytest.raises(LoopError):
        plan_waves("a", shards, fractions=(0.5, 0.25))


def test_loop_wave_changeset_shifts_each_shard_from_its_own_values() -> None:
    parent = AutonomousChangeSet(
        id="cs-parent",
        target="s00",
        diff={
            "sink_multiplier": ParamChange(before=1.0, after=1.1),
            "spawn_rate": ParamChange(before=[1.0] * 6, after=[1.0, 1.0, 1.2, 1.0, 1.0, 1.0]),
        },
    )
    live = WorldParams(sink_multiplier=1.2, spawn_rate=[0.5, 0.5, 0.5, 0.5, 0.5, 3.95])
    child = wave_changeset(parent, "s07", live, 2)
    assert child is not None
    assert child.id == wave_child_id("cs-parent", 2, "s07") == "cs-parent-w2-s07"
    assert child.actor == PROMOTER_ACTOR and child.target == "s07"
    assert child.diff["sink_multiplier"].before == 1.2
    assert child.diff["sink_multiplier"].after == pytest.approx(1.3)
    assert child.diff["spawn_rate"].after == pytest.approx([0.5, 0.5, 0.7, 0.5, 0.5, 3.95])
    # clipped to the hard bounds
    hot = WorldParams(sink_multiplier=4.95)
    assert wave_changeset(parent, "s08", hot, 1).diff["sink_multiplier"].after == 5.0
    # a shard already there needs no change
    done = WorldParams(sink_multiplier=5.0, spawn_rate=[0.5, 0.5, 5.0 - 1.0, 0.5, 0.5, 0.5])
    parent_small = AutonomousChangeSet(
        id="cs-p2", target="s00", diff={"sink_multiplier": ParamChange(before=1.0, after=1.1)}
    )
    assert wave_changeset(parent_small, "s09", done, 1) is None
