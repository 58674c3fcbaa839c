"""Typed records the proposal engine hands to the canary loop (contract C7).

A :class:`Proposal` wraps a well-formed :class:`~aegis.domain.AutonomousChangeSet`
with why it was proposed (hypothesis and evidence numbers), what the world
model predicts it does (with intervals), and how much it is worth against the
operator's goals. :func:`select_next` is the one place that decides which
proposal may start a canary now, so the loop and the asset agree on the rules.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aegis.domain import AutonomousChangeSet


class PredictedEffect(BaseModel):
    """A KPI delta versus no change, with its 90% interval (``lo`` <= ``mean`` <= ``hi``)."""

    model_config = ConfigDict(extra="forbid")

    kpi: str = Field(min_length=1)
    mean: float
    lo: float
    hi: float


class Proposal(BaseModel):
    """One ranked candidate change: the changeset plus why, what is expected, and its worth."""

    model_config = ConfigDict(extra="forbid")

    changeset: AutonomousChangeSet
    goal_id: str = Field(min_length=1)
    hypothesis: str = Field(min_length=1, description="Plain words: what the marts show and what should help")
    evidence: dict[str, Any] = Field(default_factory=dict, description="The numbers behind the hypothesis")
    predicted: list[PredictedEffect] = Field(default_factory=list)
    utility: float
    rank: int = Field(ge=1, description="1 = best")

    @property
    def shard(self) -> str:
        return self.changeset.target


def select_next(
    proposals: list[Proposal], busy_shards: set[str], changes_today: int, daily_budget: int
) -> Proposal | None:
    """The best proposal that may start now, or None.

    Rules: nothing once ``changes_today`` reaches ``daily_budget``; never a
    shard in ``busy_shards`` (a live canary's shard and its control shards, so
    two experiments never share a shard, and at most one canary per shard);
    only proposals worth doing (utility > 0). Among the rest the lowest rank wins.
    """
    if daily_budget <= 0 or changes_today >= daily_budget:
        return None
    for proposal in sorted(proposals, key=lambda p: (p.rank, -p.utility)):
        if proposal.utility <= 0:
            continue
        if proposal.changeset.target in busy_shards:
            continue
        return proposal
    return None
