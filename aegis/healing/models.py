"""Typed records of healing: incidents, their actions, diagnoses and playbooks.

An *incident* is one problem on one target (``shard-eu-1`` + ``latency``), however
many alerts report it. It moves ``open`` -> ``contained`` (a remediation was
applied) -> ``resolved`` (the SLIs are back inside their objectives, verified) or
``escalated`` (every playbook action failed, or a breaker tripped: a person must act).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aegis.domain import OperationKind, new_id, utcnow


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IncidentStatus(StrEnum):
    OPEN = "open"
    CONTAINED = "contained"
    RESOLVED = "resolved"
    ESCALATED = "escalated"


TERMINAL = frozenset({IncidentStatus.RESOLVED, IncidentStatus.ESCALATED})


class ActionOutcome(StrEnum):
    """What became of one playbook step."""

    APPLIED = "applied"  # ran; verification pending
    VERIFIED = "verified"  # ran and the SLIs came back: the incident is resolved
    UNVERIFIED = "unverified"  # ran, but the SLIs stayed outside their objective
    DENIED = "denied"  # the policy engine did not let it run
    FAILED = "failed"  # the call itself failed
    SKIPPED = "skipped"  # its condition did not hold (e.g. no suspect changeset)
    ESCALATED = "escalated"  # the escalation step (webhook sent or not: see detail)


class IncidentAction(_Model):
    """One row of an incident's timeline."""

    name: str
    outcome: ActionOutcome
    at: datetime = Field(default_factory=utcnow)
    operation: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)

    def as_output(self) -> dict[str, Any]:
        return {"name": self.name, "outcome": self.outcome.value, "at": self.at.isoformat()}


class Diagnosis(_Model):
    """Why the incident probably happened, and the facts behind it."""

    probable_cause: str = Field(description="changeset | fault:<kind> | load | unknown")
    summary: str
    suspect_changeset: str | None = None
    faults: list[str] = Field(default_factory=list)
    evidence: dict[str, Any] = Field(default_factory=dict)


class Incident(_Model):
    id: str = Field(default_factory=lambda: new_id("inc"))
    target: str
    kind: str = Field(description="Problem type: the playbook key (shard_down, latency, economy, ...)")
    status: IncidentStatus = IncidentStatus.OPEN
    opened_at: datetime = Field(default_factory=utcnow)
    contained_at: datetime | None = None
    resolved_at: datetime | None = None
    escalated_at: datetime | None = None
    alerts: list[str] = Field(default_factory=list, description="Alert names that reported it")
    alert_count: int = 0
    first_alert_at: datetime | None = Field(None, description="When the first alert was received")
    diagnosis: Diagnosis | None = None
    actions: list[IncidentAction] = Field(default_factory=list)
    run_id: str | None = None
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.target}|{self.kind}"

    def as_output(self) -> dict[str, Any]:
        """Exactly the fields of ``aegis incidents list/show --json``."""
        return {
            "id": self.id,
            "target": self.target,
            "kind": self.kind,
            "status": self.status.value,
            "opened_at": self.opened_at.isoformat(),
            "contained_at": self.contained_at.isoformat() if self.contained_at else None,
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "actions": [a.as_output() for a in self.actions],
        }


# ------------------------------------------------------------------- playbooks


class Check(_Model):
    """One SLI condition: ``signals[signal] <op> value``."""

    signal: str = Field(min_length=1, description="A field of GET /v1/shards/{id}/signals")
    op: Literal["eq", "ne", "le", "ge", "lt", "gt", "contains", "not_contains"]
    value: Any

    def holds(self, signals: dict[str, Any]) -> bool:
        if self.signal not in signals:
            return False
        got = signals[self.signal]
        v = self.value
        match self.op:
            case "eq":
                return bool(got == v)
            case "ne":
                return bool(got != v)
            case "le":
                return float(got) <= float(v)
            case "ge":
                return float(got) >= float(v)
            case "lt":
                return float(got) < float(v)
            case "gt":
                return float(got) > float(v)
            case "contains":
                return v in got
            case "not_contains":
                return v not in got
        return False  # pragma: no cover - Literal is closed

    def describe(self) -> str:
        return f"{self.signal} {self.op} {self.value}"


class Verification(_Model):
    """How an action is verified: every check holds on ``hold_reads`` consecutive reads
    ``interval_s`` apart, within ``timeout_s`` wall seconds of the action."""

    checks: list[Check] = Field(min_length=1)
    timeout_s: float = Field(30.0, gt=0, le=600)
    interval_s: float = Field(0.5, gt=0, le=60)
    hold_reads: int = Field(3, ge=1, le=100)


class PlaybookAction(_Model):
    name: str = Field(min_length=1)
    operation: OperationKind
    description: str = ""
    args: dict[str, Any] = Field(default_factory=dict)
    diff: dict[str, float] = Field(
        default_factory=dict, description="patch_economy: relative change per parameter (0.05 = +5%)"
    )
    when: Literal["always", "suspect_changeset"] = "always"
    verify: Verification
    on_failure: str = Field("escalate", description="Name of the next action, or 'escalate'")
    on_success: str = Field(
        "resolve", description="'resolve', or the name of an action that must also run (containment in steps)"
    )


class Playbook(_Model):
    problem: str
    alerts: list[str] = Field(min_length=1, description="Alert names that open this problem")
    description: str
    runbook: str = Field(description="docs/runbooks/<page>.md")
    actions: list[PlaybookAction] = Field(min_length=1)

    def action(self, name: str) -> PlaybookAction | None:
        return next((a for a in self.actions if a.name == name), None)


class Limits(_Model):
    """The storm guards (see docs/healing.md)."""

    max_launches_per_minute: int = Field(6, ge=1)
    max_active_per_target: int = Field(1, ge=1)
    breaker_max_incidents: int = Field(3, ge=1, description="Incidents per target+problem in the window")
    breaker_window_s: float = Field(1800.0, gt=0)
    max_actions_per_target_hour: int = Field(12, ge=1)
    suspect_window_s: float = Field(1800.0, gt=0, description="A changeset this recent is a suspect")


class Escalation(_Model):
    url_env: str = "AEGIS_ESCALATION_URL"
    url: str | None = None
    timeout_s: float = Field(5.0, gt=0)


class PlaybookBook(_Model):
    """The whole of ``policies/playbooks.json``."""

    version: int = 1
    description: str = ""
    limits: Limits = Field(default_factory=Limits)
    escalation: Escalation = Field(default_factory=Escalation)
    playbooks: list[Playbook] = Field(min_length=1)

    def for_alert(self, name: str) -> Playbook | None:
        return next((p for p in self.playbooks if name in p.alerts), None)

    def get(self, problem: str) -> Playbook | None:
        return next((p for p in self.playbooks if p.problem == problem), None)
