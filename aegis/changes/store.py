"""Durable state of every changeset: its promotion state, its step journal and its artifacts.

SQLAlchemy 2 Core over SQLite locally (``AEGIS_HOME/changesets.db``) and the
platform's PostgreSQL in production (schema ``aegis_changes``; :mod:`aegis.db`
picks the URL from the profile and migrates the schema on open). Every write
transaction takes the store's write lock first (``BEGIN IMMEDIATE`` on SQLite,
an advisory lock on PostgreSQL), so a read-then-write (an intent's attempt
count, an idempotent outbox row) never interleaves with another writer's.

Crash safety rests on two tables:

* ``steps`` is a write-ahead journal: before every external side effect (a
  snapshot, a config PUT, a restore) the lifecycle commits an *intent* row with
  everything needed to find out later whether the effect happened; after it,
  the *outcome*. A step left at ``intent`` after a crash is "outcome unknown",
  and :meth:`Lifecycle.resume` resolves it by asking the backend.
* ``transitions`` is an outbox: a state change and its transition row commit in
  one transaction, and the ledger record is appended afterwards; a row whose
  ``ledger_seq`` is still NULL after a crash is appended again on resume.

State changes are compare-and-set (``UPDATE ... WHERE state = :from``), so two
processes driving the same changeset can never both move it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from aegis import db
from aegis.changes.states import IllegalTransition, check_transition
from aegis.config import AegisPaths, paths
from aegis.domain import AutonomousChangeSet, Decision, PromotionState, Verdict, utcnow

STORE = "changes"
STORE_FILE = "changesets.db"
SQLITE_TIMEOUT_S = db.SQLITE_BUSY_TIMEOUT_S
WRITE_LOCK = db.store_schema(STORE)

metadata = sa.MetaData()

changesets_t = sa.Table(
    "changesets",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("verdict", sa.String(16)),
    sa.Column("changeset_json", sa.Text, nullable=False),
    sa.Column("decision_json", sa.Text),
    sa.Column("simulation_json", sa.Text),
    sa.Column("snapshot_json", sa.Text, doc="the pre-change SnapshotInfo"),
    sa.Column("config_before_json", sa.Text),
    sa.Column("config_after_json", sa.Text),
    sa.Column("reason", sa.Text, doc="why the changeset is where it is (rejection, rollback)"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

steps_t = sa.Table(
    "steps",
    metadata,
    sa.Column("changeset_id", sa.String(64), sa.ForeignKey("changesets.id"), primary_key=True),
    sa.Column("step", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),  # intent | done | failed
    sa.Column("attempts", sa.Integer, nullable=False, default=1),
    sa.Column("intent_json", sa.Text, nullable=False),
    sa.Column("outcome_json", sa.Text),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
)

transitions_t = sa.Table(
    "transitions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("changeset_id", sa.String(64), sa.ForeignKey("changesets.id"), nullable=False, index=True),
    sa.Column("src", sa.String(32), nullable=False),
    sa.Column("dst", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ledger_seq", sa.Integer),
)

decisions_t = sa.Table(
    "decisions",
    metadata,
    sa.Column("decision_id", sa.String(64), primary_key=True),
    sa.Column("changeset_id", sa.String(64), sa.ForeignKey("changesets.id"), nullable=False, index=True),
    sa.Column("decision_json", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ledger_seq", sa.Integer),
)

artifacts_t = sa.Table(
    "artifacts",
    metadata,
    sa.Column("changeset_id", sa.String(64), sa.ForeignKey("changesets.id"), primary_key=True),
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


# Added after the first release; migration 1 creates them in an existing store
# (new tables only, no column changes), so an old ``changesets.db`` opens unchanged.
canary_specs_t = sa.Table(
    "canary_specs",
    metadata,
    sa.Column("changeset_id", sa.String(64), sa.ForeignKey("changesets.id"), primary_key=True),
    sa.Column("canary", sa.String(64), nullable=False),
    sa.Column("controls_json", sa.Text, nullable=False),
    sa.Column(
        "start", sa.DateTime(timezone=True), doc="first KPI bucket under the change (None: not applied)"
    ),
    sa.Column("max_buckets", sa.Integer, nullable=False, doc="exposure budget in KPI buckets"),
    sa.Column("proposal_json", sa.Text, doc="hypothesis, predicted effects, goal and utility"),
    sa.Column("judgement_json", sa.Text, doc="the latest live judgement"),
    sa.Column("judged_at", sa.DateTime(timezone=True)),
    sa.Column("rollout_json", sa.Text, doc="promotion waves: plan, progress, outcome"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# An outbox of loop events (canary started, verdicts, waves, reflections) for the ledger:
# ``key`` makes each event happen once however often a retried run records it.
events_t = sa.Table(
    "loop_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(200), nullable=False, unique=True),
    sa.Column("changeset_id", sa.String(64), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("payload_json", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ledger_seq", sa.Integer),
)

reflections_t = sa.Table(
    "reflections",
    metadata,
    sa.Column("changeset_id", sa.String(64), sa.ForeignKey("changesets.id"), primary_key=True),
    sa.Column("record_json", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


class ChangeSetNotFound(KeyError):
    def __init__(self, changeset_id: str) -> None:
        super().__init__(changeset_id)
        self.changeset_id = changeset_id

    def __str__(self) -> str:
        return f"no changeset with id {self.changeset_id!r} in the changeset store"


class ChangeSetConflict(ValueError):
    """The same id was proposed again with different content."""


@dataclass(frozen=True)
class StepRecord:
    changeset_id: str
    step: str
    status: str
    attempts: int
    intent: dict[str, Any]
    outcome: dict[str, Any] | None
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class TransitionRecord:
    id: int
    changeset_id: str
    src: PromotionState
    dst: PromotionState
    reason: str
    at: datetime
    ledger_seq: int | None


@dataclass(frozen=True)
class ChangeSetRecord:
    """One changeset as stored, with everything the lifecycle learned about it."""

    changeset: AutonomousChangeSet
    state: PromotionState
    decision: Decision | None
    simulation: dict[str, Any] | None
    snapshot: dict[str, Any] | None
    config_before: dict[str, Any] | None
    config_after: dict[str, Any] | None
    reason: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def id(self) -> str:
        return self.changeset.id

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "target": self.changeset.target,
            "state": self.state.value,
            "verdict": self.decision.verdict.value if self.decision else None,
            "snapshot_id": (self.snapshot or {}).get("snapshot_id"),
            "config_version_before": (self.config_before or {}).get("version"),
            "config_version_after": (self.config_after or {}).get("version"),
            "reason": self.reason,
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class CanarySpecRecord:
    """How a changeset's canary is judged: the canary shard, its fair controls, the start bucket
    and the exposure budget, with the latest live judgement and the promotion rollout."""

    changeset_id: str
    canary: str
    controls: list[str]
    start: datetime | None
    max_buckets: int
    proposal: dict[str, Any] | None
    judgement: dict[str, Any] | None
    judged_at: datetime | None
    rollout: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True)
class LoopEvent:
    """One loop event waiting for (or already in) the ledger."""

    id: int
    key: str
    changeset_id: str
    kind: str
    payload: dict[str, Any]
    at: datetime
    ledger_seq: int | None


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite drops tzinfo; every time here is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def default_url(aegis_paths: AegisPaths | None = None) -> str:
    """The store's URL: ``$AEGIS_CHANGES_URL``, the platform database in prod, else ``AEGIS_HOME/changesets.db``."""
    p = aegis_paths or paths()
    return db.store_url(STORE, sqlite_path=p.home / STORE_FILE)


def make_engine(url: str) -> Engine:
    """An engine for the store (:func:`aegis.db.make_engine`: WAL, ``synchronous=FULL``, foreign keys)."""
    return db.make_engine(url)


def _create_tables(conn: Connection) -> None:
    metadata.create_all(conn)  # only what is missing: adopts a store made before migrations


MIGRATIONS = [db.Migration(1, "changesets, journal, outboxes, artifacts, canary specs", _create_tables)]


class ChangeSetStore:
    """The changeset database; safe to share between threads and processes."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = db.open_store(self.url, STORE, MIGRATIONS)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """A write transaction holding the store's write lock from its first statement."""
        with db.write_transaction(self.engine, WRITE_LOCK) as conn:
            yield conn

    # ------------------------------------------------------------- changesets

    def add(self, changeset: AutonomousChangeSet) -> tuple[ChangeSetRecord, bool]:
        """Store a proposed changeset; (record, created). Re-proposing the same content is a no-op."""
        body = changeset.model_copy(update={"promotion_state": PromotionState.PROPOSED}).model_dump_json()
        now = utcnow()
        with self._tx() as conn:
            row = conn.execute(
                sa.select(changesets_t.c.changeset_json).where(changesets_t.c.id == changeset.id)
            ).first()
            if row is not None:
                stored = AutonomousChangeSet.model_validate_json(row[0])
                if _content(stored) != _content(changeset):
                    raise ChangeSetConflict(
                        f"changeset {changeset.id} already exists with different content; propose it under a new id"
                    )
                created = False
            else:
                conn.execute(
                    changesets_t.insert().values(
                        id=changeset.id,
                        target=changeset.target,
                        state=PromotionState.PROPOSED.value,
                        changeset_json=body,
                        created_at=now,
                        updated_at=now,
                    )
                )
                created = True
        return self.get(changeset.id), created

    def get(self, changeset_id: str) -> ChangeSetRecord:
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(changesets_t).where(changesets_t.c.id == changeset_id))
                .mappings()
                .first()
            )
        if row is None:
            raise ChangeSetNotFound(changeset_id)
        return _record(row)

    def changesets(self, states: set[PromotionState] | None = None) -> list[ChangeSetRecord]:
        query = sa.select(changesets_t).order_by(changesets_t.c.created_at, changesets_t.c.id)
        if states:
            query = query.where(changesets_t.c.state.in_([s.value for s in states]))
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_record(r) for r in rows]

    def update_fields(self, changeset_id: str, **fields: Any) -> None:
        """Record what was learned (decision, snapshot, configs) without changing the state."""
        allowed = {
            "changeset",
            "decision",
            "simulation",
            "snapshot",
            "config_before",
            "config_after",
            "reason",
            "verdict",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown changeset field(s) {sorted(unknown)}")
        values = _columns(fields)
        values["updated_at"] = utcnow()
        with self._tx() as conn:
            n = conn.execute(
                changesets_t.update().where(changesets_t.c.id == changeset_id).values(**values)
            ).rowcount
        if n != 1:
            raise ChangeSetNotFound(changeset_id)

    def transition(
        self, changeset_id: str, src: PromotionState, dst: PromotionState, reason: str, **fields: Any
    ) -> TransitionRecord | None:
        """Move ``src -> dst`` atomically (compare-and-set); None if it already happened.

        Raises :class:`IllegalTransition` when the table or the verdict forbids it, or
        when the changeset is in neither ``src`` nor ``dst``.
        """
        src, dst = PromotionState(src), PromotionState(dst)
        values = _columns(fields)
        values.pop("reason", None)
        now = utcnow()
        with self._tx() as conn:
            row = conn.execute(
                sa.select(changesets_t.c.state, changesets_t.c.verdict).where(
                    changesets_t.c.id == changeset_id
                )
            ).first()
            if row is None:
                raise ChangeSetNotFound(changeset_id)
            current = PromotionState(row[0])
            verdict = fields.get("verdict", row[1])
            verdict_v = Verdict(verdict.value if hasattr(verdict, "value") else verdict) if verdict else None
            if current == dst and current != src:
                return None
            if current != src:
                raise IllegalTransition(
                    changeset_id, current, dst, f"expected it in {src.value}, it is {current.value}"
                )
            check_transition(changeset_id, src, dst, verdict_v)
            n = conn.execute(
                changesets_t.update()
                .where(changesets_t.c.id == changeset_id, changesets_t.c.state == src.value)
                .values(state=dst.value, updated_at=now, reason=reason, **values)
            ).rowcount
            if n != 1:  # another process moved it between our read and write
                raise IllegalTransition(changeset_id, src, dst, "the changeset was moved concurrently")
            inserted = conn.execute(
                transitions_t.insert().values(
                    changeset_id=changeset_id, src=src.value, dst=dst.value, reason=reason, at=now
                )
            ).inserted_primary_key
            assert inserted is not None
            tid = inserted[0]
        return TransitionRecord(int(tid), changeset_id, src, dst, reason, now, None)

    # ------------------------------------------------------------- the journal

    def step(self, changeset_id: str, step: str) -> StepRecord | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    sa.select(steps_t).where(steps_t.c.changeset_id == changeset_id, steps_t.c.step == step)
                )
                .mappings()
                .first()
            )
        return None if row is None else _step(row)

    def steps(self, changeset_id: str | None = None, status: str | None = None) -> list[StepRecord]:
        query = sa.select(steps_t).order_by(steps_t.c.started_at)
        if changeset_id is not None:
            query = query.where(steps_t.c.changeset_id == changeset_id)
        if status is not None:
            query = query.where(steps_t.c.status == status)
        with self.engine.connect() as conn:
            return [_step(r) for r in conn.execute(query).mappings().all()]

    def write_intent(self, changeset_id: str, step: str, intent: dict[str, Any]) -> StepRecord:
        """Commit the intent of a side effect before performing it (a new attempt if one is pending)."""
        now = utcnow()
        with self._tx() as conn:
            row = conn.execute(
                sa.select(steps_t.c.status, steps_t.c.attempts).where(
                    steps_t.c.changeset_id == changeset_id, steps_t.c.step == step
                )
            ).first()
            if row is not None and row[0] == "done":
                raise ValueError(
                    f"changeset {changeset_id}: step {step!r} already completed; read its outcome"
                )
            if row is None:
                conn.execute(
                    steps_t.insert().values(
                        changeset_id=changeset_id,
                        step=step,
                        status="intent",
                        attempts=1,
                        intent_json=_dumps(intent),
                        started_at=now,
                    )
                )
            else:
                conn.execute(
                    steps_t.update()
                    .where(steps_t.c.changeset_id == changeset_id, steps_t.c.step == step)
                    .values(
                        status="intent",
                        attempts=row[1] + 1,
                        intent_json=_dumps(intent),
                        outcome_json=None,
                        started_at=now,
                        ended_at=None,
                    )
                )
        record = self.step(changeset_id, step)
        assert record is not None
        return record

    def write_outcome(self, changeset_id: str, step: str, outcome: dict[str, Any], ok: bool = True) -> None:
        with self._tx() as conn:
            n = conn.execute(
                steps_t.update()
                .where(steps_t.c.changeset_id == changeset_id, steps_t.c.step == step)
                .values(status="done" if ok else "failed", outcome_json=_dumps(outcome), ended_at=utcnow())
            ).rowcount
        if n != 1:
            raise ValueError(f"changeset {changeset_id}: no intent recorded for step {step!r}")

    # ------------------------------------------------------------- ledger outbox

    def _outbox_rows(self, table: sa.Table, changeset_id: str | None, unrecorded: bool) -> list[Any]:
        """Rows of a ledger outbox table in order, for one changeset and/or not yet in the ledger."""
        query = sa.select(table).order_by(table.c.id)
        if changeset_id is not None:
            query = query.where(table.c.changeset_id == changeset_id)
        if unrecorded:
            query = query.where(table.c.ledger_seq.is_(None))
        with self.engine.connect() as conn:
            return list(conn.execute(query).mappings().all())

    def transitions(
        self, changeset_id: str | None = None, unrecorded: bool = False
    ) -> list[TransitionRecord]:
        rows = self._outbox_rows(transitions_t, changeset_id, unrecorded)
        return [
            TransitionRecord(
                r["id"],
                r["changeset_id"],
                PromotionState(r["src"]),
                PromotionState(r["dst"]),
                r["reason"],
                _aware(r["at"]) or utcnow(),
                r["ledger_seq"],
            )
            for r in rows
        ]

    def mark_transition_recorded(self, transition_id: int, seq: int) -> None:
        with self._tx() as conn:
            conn.execute(
                transitions_t.update().where(transitions_t.c.id == transition_id).values(ledger_seq=seq)
            )

    def add_decision(self, decision: Decision) -> None:
        """Queue ``decision`` for the ledger (the outbox); idempotent by decision id."""
        with self._tx() as conn:
            self._queue_decision(conn, decision)

    def save_decision(self, changeset_id: str, decision: Decision) -> None:
        """Store the decision on the changeset AND queue it for the ledger, in one transaction.

        Two transactions would leave a window (a ``kill -9`` between them) where the
        changeset has its decision but the ledger outbox never gets it.
        """
        if decision.changeset_id != changeset_id:
            raise ValueError(f"decision {decision.id} is about {decision.changeset_id}, not {changeset_id}")
        values = _columns({"decision": decision})
        values["updated_at"] = utcnow()
        with self._tx() as conn:
            n = conn.execute(
                changesets_t.update().where(changesets_t.c.id == changeset_id).values(**values)
            ).rowcount
            if n != 1:
                raise ChangeSetNotFound(changeset_id)
            self._queue_decision(conn, decision)

    @staticmethod
    def _queue_decision(conn: Connection, decision: Decision) -> None:
        exists = conn.execute(
            sa.select(decisions_t.c.decision_id).where(decisions_t.c.decision_id == decision.id)
        ).first()
        if exists is None:
            conn.execute(
                decisions_t.insert().values(
                    decision_id=decision.id,
                    changeset_id=decision.changeset_id,
                    decision_json=decision.model_dump_json(),
                    at=utcnow(),
                )
            )

    def unrecorded_decisions(self) -> list[Decision]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(decisions_t.c.decision_json).where(decisions_t.c.ledger_seq.is_(None))
            ).all()
        return [Decision.model_validate_json(r[0]) for r in rows]

    def mark_decision_recorded(self, decision_id: str, seq: int) -> None:
        with self._tx() as conn:
            conn.execute(
                decisions_t.update().where(decisions_t.c.decision_id == decision_id).values(ledger_seq=seq)
            )

    # ------------------------------------------------------------- artifacts

    def put_artifact(self, changeset_id: str, kind: str, path: Path, sha256: str) -> None:
        with self._tx() as conn:
            conn.execute(
                artifacts_t.delete().where(
                    artifacts_t.c.changeset_id == changeset_id, artifacts_t.c.kind == kind
                )
            )
            conn.execute(
                artifacts_t.insert().values(
                    changeset_id=changeset_id, kind=kind, path=str(path), sha256=sha256, created_at=utcnow()
                )
            )

    def artifacts(self, changeset_id: str) -> dict[str, dict[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(artifacts_t).where(artifacts_t.c.changeset_id == changeset_id)
            ).mappings()
            return {r["kind"]: {"path": r["path"], "sha256": r["sha256"]} for r in rows}

    # ------------------------------------------------------------- canary specs

    def put_canary_spec(
        self,
        changeset_id: str,
        canary: str,
        controls: list[str],
        max_buckets: int,
        proposal: dict[str, Any] | None = None,
    ) -> CanarySpecRecord:
        """Store how a changeset's canary is judged (once: a second call returns the first)."""
        if max_buckets < 1:
            raise ValueError(f"max_buckets must be >= 1, got {max_buckets}")
        if canary in controls:
            raise ValueError(f"canary shard {canary} cannot be its own control")
        now = utcnow()
        with self._tx() as conn:
            exists = conn.execute(
                sa.select(canary_specs_t.c.changeset_id).where(canary_specs_t.c.changeset_id == changeset_id)
            ).first()
            if exists is None:
                conn.execute(
                    canary_specs_t.insert().values(
                        changeset_id=changeset_id,
                        canary=canary,
                        controls_json=_dumps(list(controls)),
                        max_buckets=max_buckets,
                        proposal_json=_dumps(proposal),
                        created_at=now,
                        updated_at=now,
                    )
                )
        spec = self.canary_spec(changeset_id)
        assert spec is not None
        return spec

    def canary_spec(self, changeset_id: str) -> CanarySpecRecord | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(canary_specs_t).where(canary_specs_t.c.changeset_id == changeset_id))
                .mappings()
                .first()
            )
        return None if row is None else _spec(row)

    def canary_specs(self) -> list[CanarySpecRecord]:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(sa.select(canary_specs_t).order_by(canary_specs_t.c.created_at)).mappings().all()
            )
        return [_spec(r) for r in rows]

    def update_canary_spec(self, changeset_id: str, **fields: Any) -> None:
        """Set ``start``, ``judgement`` (with ``judged_at``) or ``rollout`` of a canary spec."""
        allowed = {"start", "judgement", "judged_at", "rollout"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown canary spec field(s) {sorted(unknown)}")
        values: dict[str, Any] = {"updated_at": utcnow()}
        for key, value in fields.items():
            values[key if key in ("start", "judged_at") else f"{key}_json"] = (
                value if key in ("start", "judged_at") else _dumps(value)
            )
        with self._tx() as conn:
            n = conn.execute(
                canary_specs_t.update().where(canary_specs_t.c.changeset_id == changeset_id).values(**values)
            ).rowcount
        if n != 1:
            raise ChangeSetNotFound(changeset_id)

    # ------------------------------------------------------------- loop events (ledger outbox)

    def add_event(self, changeset_id: str, kind: str, key: str, payload: dict[str, Any]) -> bool:
        """Queue a loop event for the ledger; False when an event with ``key`` exists (idempotent)."""
        with self._tx() as conn:
            exists = conn.execute(sa.select(events_t.c.id).where(events_t.c.key == key)).first()
            if exists is not None:
                return False
            conn.execute(
                events_t.insert().values(
                    key=key,
                    changeset_id=changeset_id,
                    kind=kind,
                    payload_json=_dumps(payload),
                    at=utcnow(),
                )
            )
        return True

    def events(self, changeset_id: str | None = None, unrecorded: bool = False) -> list[LoopEvent]:
        rows = self._outbox_rows(events_t, changeset_id, unrecorded)
        return [
            LoopEvent(
                r["id"],
                r["key"],
                r["changeset_id"],
                r["kind"],
                _loads(r["payload_json"]) or {},
                _aware(r["at"]) or utcnow(),
                r["ledger_seq"],
            )
            for r in rows
        ]

    def mark_event_recorded(self, event_id: int, seq: int) -> None:
        with self._tx() as conn:
            conn.execute(events_t.update().where(events_t.c.id == event_id).values(ledger_seq=seq))

    # ------------------------------------------------------------- reflections

    def put_reflection(self, changeset_id: str, record: dict[str, Any]) -> bool:
        """Store the reflection of a finished changeset once; False when it already has one."""
        with self._tx() as conn:
            exists = conn.execute(
                sa.select(reflections_t.c.changeset_id).where(reflections_t.c.changeset_id == changeset_id)
            ).first()
            if exists is not None:
                return False
            conn.execute(
                reflections_t.insert().values(
                    changeset_id=changeset_id, record_json=_dumps(record), created_at=utcnow()
                )
            )
        return True

    def reflections(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(sa.select(reflections_t).order_by(reflections_t.c.created_at)).mappings().all()
            )
        return [_loads(r["record_json"]) for r in rows]


def _content(cs: AutonomousChangeSet) -> dict[str, Any]:
    """What identifies a proposal's content (not its state or later findings)."""
    return cs.model_dump(mode="json", exclude={"promotion_state", "canary_result", "created_at"})


def _columns(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "changeset":
            out["changeset_json"] = value.model_dump_json()
        elif key == "decision":
            out["decision_json"] = value.model_dump_json() if value is not None else None
            if value is not None:
                out["verdict"] = value.verdict.value
        elif key == "verdict":
            out["verdict"] = value.value if hasattr(value, "value") else value
        elif key == "reason":
            out["reason"] = value
        else:
            out[f"{key}_json"] = _dumps(value)
    return out


def _spec(row: Any) -> CanarySpecRecord:
    return CanarySpecRecord(
        changeset_id=row["changeset_id"],
        canary=row["canary"],
        controls=list(_loads(row["controls_json"]) or []),
        start=_aware(row["start"]),
        max_buckets=int(row["max_buckets"]),
        proposal=_loads(row["proposal_json"]),
        judgement=_loads(row["judgement_json"]),
        judged_at=_aware(row["judged_at"]),
        rollout=_loads(row["rollout_json"]),
        created_at=_aware(row["created_at"]) or utcnow(),
    )


def _record(row: Any) -> ChangeSetRecord:
    state = PromotionState(row["state"])
    cs = AutonomousChangeSet.model_validate_json(row["changeset_json"]).model_copy(
        update={"promotion_state": state}
    )
    return ChangeSetRecord(
        changeset=cs,
        state=state,
        decision=Decision.model_validate_json(row["decision_json"]) if row["decision_json"] else None,
        simulation=_loads(row["simulation_json"]),
        snapshot=_loads(row["snapshot_json"]),
        config_before=_loads(row["config_before_json"]),
        config_after=_loads(row["config_after_json"]),
        reason=row["reason"],
        created_at=_aware(row["created_at"]) or utcnow(),
        updated_at=_aware(row["updated_at"]) or utcnow(),
    )


def _step(row: Any) -> StepRecord:
    return StepRecord(
        changeset_id=row["changeset_id"],
        step=row["step"],
        status=row["status"],
        attempts=int(row["attempts"]),
        intent=_loads(row["intent_json"]) or {},
        outcome=_loads(row["outcome_json"]),
        started_at=_aware(row["started_at"]) or utcnow(),
        ended_at=_aware(row["ended_at"]),
    )
