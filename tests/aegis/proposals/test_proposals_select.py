"""select_next: budget, one canary per shard, no two experiments on one shard; its inputs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aegis.domain import AutonomousChangeSet, ParamChange, PromotionState, ShardInfo, ShardRole
from aegis.proposals.engine import busy_shards_from, changes_today
from aegis.proposals.model import PredictedEffect, Proposal, select_next


def _p(target: str, rank: int, utility: float) -> Proposal:
    cs = AutonomousChangeSet(target=target, diff={"drop_rate": ParamChange(before=1.0, after=1.05)})
    return Proposal(
        changeset=cs,
        goal_id="g",
        hypothesis="h",
        predicted=[PredictedEffect(kpi="deaths_late", mean=-1, lo=-2, hi=0)],
        utility=utility,
        rank=rank,
    )


RANKED = [_p("eu-1", 1, 3.0), _p("eu-2", 2, 2.0), _p("us-1", 3, 1.0), _p("us-2", 4, -0.5)]


def test_the_best_free_proposal_goes_forward() -> None:
    assert select_next(RANKED, set(), 0, 5) is RANKED[0]
    # rank decides, not list order
    assert select_next(list(reversed(RANKED)), set(), 0, 5) is RANKED[0]


def test_busy_shards_are_skipped_canary_and_controls_alike() -> None:
    # eu-1 runs a canary, eu-2 is one of its controls: neither may host a second experiment
    assert select_next(RANKED, {"eu-1", "eu-2"}, 0, 5) is RANKED[2]


def test_the_daily_budget_stops_everything() -> None:
    assert select_next(RANKED, set(), 4, 5) is RANKED[0]
    assert select_next(RANKED, set(), 5, 5) is None
    assert select_next(RANKED, set(), 0, 0) is None


def test_nothing_worth_doing_is_not_done() -> None:
    assert select_next(RANKED, {"eu-1", "eu-2", "us-1"}, 0, 5) is None  # us-2 has negative utility
    assert select_next([], set(), 0, 5) is None


def test_busy_shards_from_the_backend_roles_and_live_controls() -> None:
    shards = [
        ShardInfo(
            id="eu-1",
            region="eu",
            role=ShardRole.CANARY,
            players_online=1,
            players_total=1,
            capacity=1,
            config_version=2,
        ),
        ShardInfo(id="eu-2", region="eu", players_online=1, players_total=1, capacity=1, config_version=1),
        ShardInfo(id="us-1", region="us", players_online=1, players_total=1, capacity=1, config_version=1),
    ]
    assert busy_shards_from(shards) == {"eu-1"}
    assert busy_shards_from(shards, live_controls=["eu-2"]) == {"eu-1", "eu-2"}


@dataclass
class T:
    dst: PromotionState
    at: datetime


def test_changes_today_counts_canary_starts_since_utc_midnight() -> None:
    now = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    transitions = [
        T(PromotionState.CANARY, now - timedelta(hours=1)),
        T(PromotionState.CANARY, now - timedelta(hours=9, minutes=59)),
        T(PromotionState.CANARY, now - timedelta(hours=10, minutes=1)),  # yesterday
        T(PromotionState.POLICY_CHECKED, now - timedelta(hours=1)),  # not a start
    ]
    assert changes_today(transitions, now) == 2
