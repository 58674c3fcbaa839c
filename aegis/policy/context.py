"""What the axioms need to know besides the changeset itself.

The policy engine is pure: it sees a changeset and a :class:`PolicyContext`, and
nothing else. Whoever asks for a decision (the lifecycle, a test, ``aegis policy
check``) gathers the facts (who acts, how many players the change touches, which
alerts fire, what the world model predicts, how much budget is left) and hands
them over here, so that a decision can be replayed exactly from its ledger record.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aegis.domain import Alert, ExecutionPolicy, Integrity, ShardInfo, utcnow


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, str_strip_whitespace=True)


class ShardContext(_Strict):
    """The target shard as the availability and security axioms see it."""

    shard_id: str | None = Field(None, description="Shard id (defaults to the changeset target when omitted)")
    region: str = Field(min_length=1)
    players_online: int = Field(0, ge=0)
    players_total: int = Field(0, ge=0)

    @classmethod
    def from_shard_info(cls, info: ShardInfo) -> ShardContext:
        return cls(
            shard_id=info.id,
            region=info.region,
            players_online=info.players_online,
            players_total=info.players_total,
        )


class BudgetContext(_Strict):
    """The cost envelope: what was spent this month and what the change would cost."""

    spent_usd: float = Field(0.0, ge=0)
    estimated_cost_usd: float = Field(0.0, ge=0)
    monthly_budget_usd: float = Field(0.0, ge=0)

    @property
    def remaining_usd(self) -> float:
        return self.monthly_budget_usd - self.spent_usd


class PolicyContext(_Strict):
    """Everything the axioms need besides the changeset.

    ``predicted`` holds KPI predictions for the shard after the change (keys used by
    the bands in ``policies/data.json``: ``inflation``, ``velocity``,
    ``abandon_rate``, ``deaths``); a missing prediction for a KPI the change touches
    sends the change to the simulation gate rather than letting it through blind.
    ``integrity_before``/``integrity_after`` are integrities of the same snapshot
    before and after the change is applied to it (no game time in between), as
    the simulation gate measures them: any drop is player data lost.
    """

    actor: ExecutionPolicy
    shard: ShardContext
    canary_players_share: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of all players the change would touch (0..1)"
    )
    firing_alerts: list[Alert] = Field(
        default_factory=list, description="Alerts currently firing on the target"
    )
    integrity_before: Integrity | None = None
    integrity_after: Integrity | None = None
    predicted: dict[str, float] = Field(default_factory=dict, description="KPI predictions after the change")
    budget: BudgetContext = Field(default_factory=BudgetContext)
    changes_in_last_hour: int = Field(0, ge=0, description="Changes this actor applied in the last hour")
    now: datetime = Field(default_factory=utcnow)
    known_shards: list[str] | None = Field(
        None,
        description="Shard ids the backend knows; a target outside them is denied (None: not checked, "
        "for callers that cannot ask the backend; the lifecycle always fills it)",
    )

    @field_validator("predicted")
    @classmethod
    def _finite(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k, x in v.items() if not math.isfinite(x))
        if bad:
            raise ValueError(f"predictions must be finite numbers; not finite: {', '.join(bad)}")
        return v

    def merged_with(self, given: PolicyContext) -> PolicyContext:
        """This context (measured from the world) completed by facts ``given`` states, never less strict.

        For ``aegis changeset run`` on an example file: the file states facts the
        world cannot measure (the actor's policy, predictions, the budget). What was
        measured is never relaxed by the file: the shard, the known shards and the
        integrity counts are the measured ones; firing alerts are the union; the
        players share, the changes in the last hour and the money spent or estimated
        are the larger of the two; a monthly budget is the smaller one given;
        predictions the world model made are kept and the file only fills gaps.
        The actor's policy is the file's (as ``--actor-policy`` would give it).
        """
        seen = {(a.name, a.target, a.id) for a in self.firing_alerts}
        alerts = [
            *self.firing_alerts,
            *(a for a in given.firing_alerts if (a.name, a.target, a.id) not in seen),
        ]
        budgets = [b for b in (self.budget.monthly_budget_usd, given.budget.monthly_budget_usd) if b > 0]
        return self.model_copy(
            update={
                "actor": given.actor,
                "canary_players_share": max(self.canary_players_share, given.canary_players_share),
                "firing_alerts": alerts,
                "predicted": {**given.predicted, **self.predicted},
                "budget": BudgetContext(
                    spent_usd=max(self.budget.spent_usd, given.budget.spent_usd),
                    estimated_cost_usd=max(self.budget.estimated_cost_usd, given.budget.estimated_cost_usd),
                    monthly_budget_usd=min(budgets) if budgets else 0.0,
                ),
                "changes_in_last_hour": max(self.changes_in_last_hour, given.changes_in_last_hour),
            }
        )

    def policy_input(self) -> dict[str, Any]:
        """The context as the Rego policies read it (``input.context``)."""
        return self.model_dump(mode="json")


def load_given_context(path: Path) -> PolicyContext | None:
    """The ``context`` an example-shaped file (``{"changeset", "context"}``) states, or None if it has none.

    Read with the strict loader; for ``aegis changeset run`` to merge into the
    measured context with :meth:`PolicyContext.merged_with`. Raises
    StrictJsonError (a ValueError) or pydantic's ValidationError for bad input.
    """
    from aegis.policy.strict_json import load_strict

    doc = load_strict(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("context"), dict):
        return None
    return PolicyContext.model_validate(doc["context"])
