"""The vocabulary of Aegis: typed records shared by the world server, the assets,
the policies, the ledger and the API.

Every model forbids unknown fields: a typo in a changeset or a config must be
an error a person can read (see :func:`explain`), never a silently ignored key.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# The world layout every shard shares. WorldParams vectors have these lengths.
N_ZONES = 6
N_STAGES = 5
SAVE_SCHEMA_VERSION = 3


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, str_strip_whitespace=True)


# --------------------------------------------------------------------------- world


ZoneVector = Annotated[list[float], Field(min_length=N_ZONES, max_length=N_ZONES)]
StageVector = Annotated[list[float], Field(min_length=N_STAGES, max_length=N_STAGES)]

# Hard bounds of every tunable: what the world server accepts at all. Policy bands
# (what Aegis may change on its own) are narrower and live in policies/data.json.
PARAM_BOUNDS: dict[str, tuple[float, float]] = {
    "npc_aggression": (0.1, 3.0),
    "spawn_rate": (0.1, 4.0),
    "elite_share": (0.0, 1.0),
    "quest_difficulty": (0.2, 3.0),
    "quest_pacing": (0.25, 4.0),
    "quest_reward": (0.0, 5.0),
    "drop_rate": (0.0, 5.0),
    "source_multiplier": (0.0, 5.0),
    "sink_multiplier": (0.0, 5.0),
    "map_event_frequency": (0.0, 24.0),
}


class WorldParams(_Model):
    """The tunables of one shard: what a changeset may mutate.

    Scalars are multipliers around 1.0 (the designers' baseline) unless noted;
    ``spawn_rate`` and ``elite_share`` are per zone (the spawn mix), and
    ``quest_difficulty`` is per quest stage.
    """

    npc_aggression: float = Field(1.0, description="NPC aggression multiplier: damage and pursuit")
    spawn_rate: ZoneVector = Field(
        default_factory=lambda: [1.0] * N_ZONES, description="Monster spawn rate per zone"
    )
    elite_share: ZoneVector = Field(
        default_factory=lambda: [0.1] * N_ZONES,
        description="Share of elite monsters in each zone's spawn mix (0..1)",
    )
    quest_difficulty: StageVector = Field(
        default_factory=lambda: [1.0] * N_STAGES, description="Difficulty multiplier per quest stage"
    )
    quest_pacing: float = Field(1.0, description="Stage duration multiplier (>1 slower)")
    quest_reward: float = Field(1.0, description="Quest currency reward multiplier")
    drop_rate: float = Field(1.0, description="Loot drop rate multiplier")
    source_multiplier: float = Field(1.0, description="Currency faucet multiplier (loot gold, vendor sales)")
    sink_multiplier: float = Field(1.0, description="Currency sink multiplier (repairs, fees, taxes)")
    map_event_frequency: float = Field(2.0, description="World map events per game day")

    @model_validator(mode="after")
    def _within_bounds(self) -> WorldParams:
        problems = []
        for name, (lo, hi) in PARAM_BOUNDS.items():
            value = getattr(self, name)
            values = value if isinstance(value, list) else [value]
            for i, v in enumerate(values):
                if not (lo <= v <= hi) or v != v:  # v != v catches NaN
                    where = f"{name}[{i}]" if isinstance(value, list) else name
                    problems.append(f"{where}={v} is outside [{lo}, {hi}]")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def field_names(cls) -> list[str]:
        return list(PARAM_BOUNDS)

    def to_vector(self) -> list[float]:
        """Flattened, in a fixed order (see :meth:`vector_names`): the world model's action."""
        out: list[float] = []
        for name in PARAM_BOUNDS:
            value = getattr(self, name)
            out.extend(value if isinstance(value, list) else [value])
        return out

    @classmethod
    def vector_names(cls) -> list[str]:
        names: list[str] = []
        defaults = cls()
        for name in PARAM_BOUNDS:
            value = getattr(defaults, name)
            names.extend([f"{name}_{i}" for i in range(len(value))] if isinstance(value, list) else [name])
        return names

    def diff(self, other: WorldParams) -> dict[str, ParamChange]:
        """Changes that turn ``self`` into ``other``, by parameter name."""
        out: dict[str, ParamChange] = {}
        for name in PARAM_BOUNDS:
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                out[name] = ParamChange(before=a, after=b)
        return out

    def apply(self, changes: dict[str, ParamChange]) -> WorldParams:
        data = self.model_dump()
        for name, change in changes.items():
            if name not in PARAM_BOUNDS:
                raise ValueError(f"unknown world parameter {name!r}; known: {', '.join(PARAM_BOUNDS)}")
            data[name] = change.after
        return WorldParams.model_validate(data)


class ShardRole(StrEnum):
    CONTROL = "control"
    CANARY = "canary"


class ShardConfig(_Model):
    """A shard's world parameters and their version (the ``If-Match`` token)."""

    shard_id: str
    version: int = Field(ge=1)
    params: WorldParams
    updated_at: datetime = Field(default_factory=utcnow)


class ShardInfo(_Model):
    """One row of ``GET /v1/shards``."""

    id: str
    region: str
    role: ShardRole = ShardRole.CONTROL
    status: Literal["up", "down"] = "up"
    players_online: int = Field(ge=0)
    players_total: int = Field(ge=0)
    capacity: int = Field(ge=1)
    config_version: int = Field(ge=1)


class Integrity(_Model):
    """What proves that no active inventory or quest was lost (``GET /v1/shards/{id}/integrity``).

    Counts and order-independent checksums over the shard's active inventories
    and active quests, and the save schema version. Two integrities are equal
    exactly when the same items and quests are held by the same players.
    """

    shard_id: str
    players: int = Field(ge=0)
    active_inventory_items: int = Field(ge=0)
    active_inventory_checksum: str
    active_quests: int = Field(ge=0)
    active_quest_checksum: str
    save_schema_version: int = Field(ge=1)

    def same_player_data(self, other: Integrity) -> bool:
        return (
            self.players == other.players
            and self.active_inventory_items == other.active_inventory_items
            and self.active_inventory_checksum == other.active_inventory_checksum
            and self.active_quests == other.active_quests
            and self.active_quest_checksum == other.active_quest_checksum
            and self.save_schema_version == other.save_schema_version
        )


class SnapshotInfo(_Model):
    snapshot_id: str
    shard_id: str
    game_time: datetime
    config_version: int = Field(ge=1)
    integrity: Integrity


class FaultKind(StrEnum):
    LATENCY_SPIKE = "latency_spike"
    SHARD_CRASH = "shard_crash"
    DUPLICATION_EXPLOIT = "duplication_exploit"
    CORRUPT_TELEMETRY = "corrupt_telemetry"


class Fault(_Model):
    """``POST /v1/faults``: inject a fault for chaos tests and demos."""

    kind: FaultKind
    shard_id: str
    duration_minutes: float = Field(30.0, gt=0, le=24 * 60, description="Game minutes the fault lasts")
    magnitude: float = Field(
        1.0, gt=0, le=100, description="Fault strength (latency multiplier, exploit rate, ...)"
    )


# --------------------------------------------------------------------- changesets


class ParamChange(_Model):
    before: float | list[float]
    after: float | list[float]

    def relative_delta(self) -> float:
        """Largest relative change over the elements (0.5 = 50%)."""
        a = self.before if isinstance(self.before, list) else [self.before]
        b = self.after if isinstance(self.after, list) else [self.after]
        if len(a) != len(b):
            return float("inf")
        return max((abs(y - x) / max(abs(x), 1e-9) for x, y in zip(a, b, strict=True)), default=0.0)


class OperationKind(StrEnum):
    SET_PARAMS = "set_params"
    RETIRE_QUEST = "retire_quest"
    REMOVE_ITEM = "remove_item"
    MIGRATE_SAVE_SCHEMA = "migrate_save_schema"
    RESTART_SHARD = "restart_shard"
    RESTORE_SNAPSHOT = "restore_snapshot"
    SCALE_SHARD = "scale_shard"
    FAILOVER = "failover"
    # Healing remediations (aegis.healing; the world's POST /v1/shards/{id}/remediations).
    SHED_LOAD = "shed_load"
    FREEZE_TRADING = "freeze_trading"
    ISOLATE_TELEMETRY = "isolate_telemetry"
    ROLLBACK_CHANGESET = "rollback_changeset"
    ROTATE_CREDENTIAL = "rotate_credential"
    ISOLATE_CALLER = "isolate_caller"


class Operation(_Model):
    """One thing a changeset does besides tuning, with its declared effect on player data.

    The integrity axiom reads the declared effects; the lifecycle verifies them
    against the integrity endpoint before and after the change.
    """

    kind: OperationKind
    args: dict[str, Any] = Field(default_factory=dict)
    deletes_active_inventory: int = Field(
        0, ge=0, description="Active inventory items this operation removes"
    )
    invalidates_active_quests: int = Field(0, ge=0, description="Active quests this operation invalidates")
    save_schema_to: int | None = Field(None, ge=1, description="Save schema version after this operation")

    @property
    def structural(self) -> bool:
        return self.kind != OperationKind.SET_PARAMS


class PromotionState(StrEnum):
    PROPOSED = "proposed"
    POLICY_CHECKED = "policy_checked"
    SIMULATED = "simulated"
    CANARY = "canary"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"


TERMINAL_STATES = frozenset({PromotionState.PROMOTED, PromotionState.ROLLED_BACK, PromotionState.REJECTED})


class CanaryVerdict(StrEnum):
    PROMOTE = "promote"
    ROLL_BACK = "roll_back"
    CONTINUE = "continue"


class CanaryResult(_Model):
    canary_shard: str
    control_shards: list[str]
    metric: str
    effect: float
    interval: tuple[float, float] | None = None
    statistic: float | None = None
    threshold: float | None = None
    samples: int = Field(0, ge=0)
    verdict: CanaryVerdict
    detail: str = ""


class ChangeKind(StrEnum):
    TUNING = "tuning"
    HEALING = "healing"


class AutonomousChangeSet(_Model):
    """A proposed change to the live game and everything known about its fate."""

    id: str = Field(default_factory=lambda: new_id("cs"))
    created_at: datetime = Field(default_factory=utcnow)
    actor: str = Field("aegis-proposer", min_length=1)
    kind: ChangeKind = ChangeKind.TUNING
    target: str = Field(min_length=1, description="Shard id the change applies to")
    goal_id: str | None = None
    diff: dict[str, ParamChange] = Field(default_factory=dict, description="World parameter changes by name")
    operations: list[Operation] = Field(default_factory=list)
    rationale: str = ""
    risk_score: float | None = Field(None, ge=0.0, le=1.0)
    canary_result: CanaryResult | None = None
    promotion_state: PromotionState = PromotionState.PROPOSED

    @field_validator("diff")
    @classmethod
    def _known_params(cls, v: dict[str, ParamChange]) -> dict[str, ParamChange]:
        unknown = sorted(set(v) - set(PARAM_BOUNDS))
        if unknown:
            raise ValueError(f"unknown world parameter(s) {unknown}; known: {', '.join(PARAM_BOUNDS)}")
        return v

    @property
    def structural(self) -> bool:
        return any(op.structural for op in self.operations)


# -------------------------------------------------------------------- governance


class Comparator(StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"


class GoalSpec(_Model):
    """What the autonomous loop is asked to improve, and the bands it must stay in."""

    id: str = Field(default_factory=lambda: new_id("goal"))
    name: str = Field(min_length=1)
    kpi: str = Field(min_length=1, description="KPI column of fct_shard_kpis to move")
    direction: Comparator
    target: float | None = None
    guardrails: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="KPI name -> [low, high] band that must hold"
    )
    horizon_hours: float = Field(24.0, gt=0)
    priority: int = Field(3, ge=1, le=5)
    description: str = Field("", description="Plain words: why the operator wants this")
    regions: list[str] | None = Field(
        None, description="Only shards of these regions count toward the goal; None: every shard"
    )


class ResourceLimits(_Model):
    max_changes_per_hour: int = Field(4, ge=0)
    max_cpu_seconds: float = Field(3600.0, ge=0)
    max_gpu_hours: float = Field(0.0, ge=0)
    max_cost_usd: float = Field(0.0, ge=0)


class ExecutionPolicy(_Model):
    """What one actor may do: least privilege, made explicit."""

    actor: str = Field(min_length=1)
    allowed_tools: list[str] = Field(
        default_factory=list, description="Operation kinds or tool names allowed"
    )
    data_scope: list[str] = Field(
        default_factory=list, description="Regions or shard ids the actor may touch ('*' = all)"
    )
    limits: ResourceLimits = Field(default_factory=ResourceLimits)


class StepStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    RUNNING = "running"


class TraceStep(_Model):
    name: str
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    status: StepStatus = StepStatus.RUNNING
    detail: dict[str, Any] = Field(default_factory=dict)


class TaskTrace(_Model):
    """What an autonomous task did, step by step."""

    task_id: str = Field(default_factory=lambda: new_id("task"))
    actor: str
    goal_id: str | None = None
    changeset_id: str | None = None
    steps: list[TraceStep] = Field(default_factory=list)
    status: StepStatus = StepStatus.RUNNING


class ReflectionRecord(_Model):
    """What was expected, what happened, and what to do differently."""

    id: str = Field(default_factory=lambda: new_id("refl"))
    created_at: datetime = Field(default_factory=utcnow)
    changeset_id: str
    outcome: PromotionState
    expected: dict[str, float] = Field(default_factory=dict)
    observed: dict[str, float] = Field(default_factory=dict)
    lessons: list[str] = Field(default_factory=list)
    hypothesis: str = Field("", description="Why the change was proposed, in plain words")
    expected_intervals: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="KPI -> the world model's 90% interval of the predicted effect"
    )
    observed_intervals: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="KPI -> the canary judge's confidence interval of the effect"
    )
    verdict: str | None = Field(None, description="The canary verdict (promote | rollback | inconclusive)")
    why: str = Field("", description="Why the changeset ended as it did")
    root_cause: (
        Literal[
            "model_error",
            "guardrail_regression",
            "integrity_failure",
            "stale_config",
            "inconclusive",
            "policy_denied",
            "simulation_failed",
            "operator",
            "rollout_failed",
        ]
        | None
    ) = Field(None, description="For a change that failed: the class of cause")


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class SecurityIncident(_Model):
    id: str = Field(default_factory=lambda: new_id("sec"))
    detected_at: datetime = Field(default_factory=utcnow)
    actor: str
    kind: Literal[
        "policy_violation",
        "unauthorized_tool",
        "scope_violation",
        "signature_failure",
        "ledger_tamper",
        "rate_limit",
    ]
    severity: Severity = Severity.WARNING
    detail: str
    changeset_id: str | None = None


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Alert(_Model):
    """An alert from Alertmanager, CloudWatch or Aegis's own SLO checks."""

    id: str = Field(default_factory=lambda: new_id("alert"))
    source: Literal["alertmanager", "cloudwatch", "slo", "world"] = "slo"
    name: str = Field(min_length=1, description="e.g. SLOBurnRateFast, TickLatencyHigh, EconomyInflation")
    severity: Severity = Severity.WARNING
    status: AlertStatus = AlertStatus.FIRING
    target: str = Field(min_length=1, description="Shard id (or resource) the alert is about")
    labels: dict[str, str] = Field(default_factory=dict)
    value: float | None = None
    threshold: float | None = None
    starts_at: datetime = Field(default_factory=utcnow)
    summary: str = ""
    fingerprint: str | None = Field(
        None, description="Alertmanager's fingerprint (same for firing and resolved); None: derived"
    )
    ends_at: datetime | None = Field(None, description="When the alert resolved (resolved notifications)")


# ------------------------------------------------------------------- decisions


class Axiom(StrEnum):
    """The axioms, in order: a lower one never overrides a higher one."""

    INTEGRITY = "integrity"
    SECURITY = "security"
    AVAILABILITY = "availability"
    ECONOMY = "economy"
    EXPERIENCE = "experience"
    COST = "cost"

    @property
    def rank(self) -> int:
        return list(Axiom).index(self) + 1


class Verdict(StrEnum):
    AUTO = "auto"
    SIMULATE = "simulate"
    DENY = "deny"


class Finding(_Model):
    """One rule's judgement: which axiom, which rule, which numbers."""

    axiom: Axiom
    rule: str
    verdict: Verdict
    message: str
    numbers: dict[str, Any] = Field(default_factory=dict)


class Decision(_Model):
    id: str = Field(default_factory=lambda: new_id("dec"))
    decided_at: datetime = Field(default_factory=utcnow)
    changeset_id: str
    verdict: Verdict
    axiom: Axiom | None = Field(
        None, description="The highest axiom behind the verdict (None when auto with no finding)"
    )
    rule: str | None = None
    risk_score: float = Field(ge=0.0, le=1.0)
    findings: list[Finding] = Field(default_factory=list)
    policy_version: str = ""
    explanation: str = ""


class AuditRecord(_Model):
    """One entry of the append-only, hash-chained, signed ledger."""

    seq: int = Field(ge=1)
    record_id: str = Field(default_factory=lambda: new_id("aud"))
    recorded_at: datetime = Field(default_factory=utcnow)
    actor: str
    kind: str = Field(description="decision | transition | incident | reflection | healing | ...")
    subject: str = Field(description="What the record is about, usually a changeset id")
    payload: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str = Field(min_length=64, max_length=64)
    hash: str = Field(min_length=64, max_length=64)
    signature: str
    key_id: str


CORE_TYPES: dict[str, type[BaseModel]] = {
    m.__name__: m
    for m in (
        GoalSpec,
        ExecutionPolicy,
        TaskTrace,
        ReflectionRecord,
        SecurityIncident,
        AutonomousChangeSet,
        WorldParams,
        ShardConfig,
        ShardInfo,
        Integrity,
        SnapshotInfo,
        Fault,
        Alert,
        Decision,
        AuditRecord,
        CanaryResult,
    )
}


def explain(exc: ValidationError, what: str = "input") -> str:
    """Render a pydantic error as lines a person can act on.

    ``diff.npc_aggresion: unknown field (got 1.2)`` reads better than pydantic's
    default, and names the path the user must fix.
    """
    lines = [f"invalid {what}: {exc.error_count()} problem(s)"]
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        got = err.get("input")
        got_txt = "" if err["type"] == "missing" else f" (got {got!r:.80})"
        lines.append(f"  - {loc}: {msg}{got_txt}")
    return "\n".join(lines)


def json_schemas() -> dict[str, dict[str, Any]]:
    return {name: model.model_json_schema() for name, model in CORE_TYPES.items()}
