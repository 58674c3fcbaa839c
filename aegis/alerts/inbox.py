"""The alert inbox: every alert the receiver acknowledged, durable before the 2xx.

One row per alert *fingerprint* (Alertmanager's own, which stays the same for the
firing and the resolved notification of one alert; otherwise a sha256 over name,
target and labels).  A repeat of a firing alert only bumps ``last_seen`` and
``count``; a resolved notification flips the row to ``resolved`` and keeps it.

``seq`` is a *change* sequence: it is (re)assigned, strictly increasing, whenever a
row is created or its status changes (firing -> resolved, resolved -> firing
again).  A consumer that remembers the last ``seq`` it handled and calls
:meth:`AlertInbox.since` sees every new alert and every status change exactly
once, in order, and is not woken by Alertmanager's periodic repeats.

Alerts whose name Aegis does not know are recorded (``known=False``) so an
operator can see them, but :meth:`since` and :meth:`firing` leave them out unless
asked: an unknown alert never drives an action.

SQLite (``AEGIS_HOME/alerts.db``) runs in WAL mode with ``synchronous=FULL``; in
prod the inbox lives in the platform's PostgreSQL (schema ``aegis_alerts``,
:mod:`aegis.db`).  Every :meth:`put` commits before it returns, so an alert the
receiver acknowledged survives a kill -9 or a power cut.  Writers take the write
lock up front (``BEGIN IMMEDIATE`` on SQLite, the store's advisory lock on
PostgreSQL) so concurrent receivers never hand out the same ``seq``, and ``seq``
commits in order (a consumer of :meth:`since` never skips one committed late).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field

from aegis import db
from aegis.config import AegisPaths, paths
from aegis.domain import Alert, AlertStatus, utcnow

STORE = "alerts"
SQLITE_BUSY_TIMEOUT_S = db.SQLITE_BUSY_TIMEOUT_S
DEFAULT_LIMIT = 500
MAX_LIMIT = 10_000
WRITE_LOCK = db.store_schema(STORE)
BULK_CHUNK = 500  # fingerprints per IN (...) query: under SQLite's variable limit

# The alert names Aegis acts on (labels ``alertname``); the healing playbooks key on these.
KNOWN_ALERTS: frozenset[str] = frozenset(
    {
        "ShardDown",
        "TickLatencyHigh",
        "SLOBurnRateFast",
        "SLOBurnRateSlow",
        "EconomyInflation",
        "TelemetryQuarantineSpike",
        "SecurityRefusals",
        # CloudWatch alarms of the production infrastructure (see aegis.alerts.receiver).
        "ReplicaLagHigh",
        "TelemetryDeliveryFailing",
        "TelemetryDeliveryStale",
        "GpuNodeUnhealthy",
    }
)

metadata = sa.MetaData()

alerts_table = sa.Table(
    "alerts",
    metadata,
    sa.Column("fingerprint", sa.String(128), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False, index=True),
    sa.Column("target", sa.String(200), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("known", sa.Boolean, nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("alert", sa.Text, nullable=False),
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.Column("last_seen", sa.DateTime, nullable=False),
    sa.Column("resolved_at", sa.DateTime, nullable=True),
    sa.Column("count", sa.Integer, nullable=False),
)

# Every accepted delivery, verbatim: what was said, when, by which source.
deliveries_table = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("alerts", sa.Integer, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
)


class InboxEntry(BaseModel):
    """One alert as the inbox holds it now."""

    seq: int = Field(description="Change sequence: bumped when the alert is new or changes status")
    fingerprint: str
    alert: Alert
    status: Literal["firing", "resolved"]
    received_at: datetime = Field(description="First time this fingerprint arrived")
    last_seen: datetime = Field(description="Last notification about it (repeats included)")
    count: int = Field(description="Notifications received for this fingerprint")
    known: bool = Field(True, description="False: an alert name Aegis does not act on (recorded, ignored)")
    resolved_at: datetime | None = None


class InboxStats(BaseModel):
    """Counts for the receiver's /metrics."""

    entries: int
    firing: int
    resolved: int
    unknown: int
    deliveries: int
    latest_seq: int


def fingerprint_of(alert: Alert) -> str:
    """Alertmanager's fingerprint when it gave one, else sha256(name, target, labels)."""
    if alert.fingerprint:
        return alert.fingerprint
    doc = {"name": alert.name, "target": alert.target, "labels": dict(sorted(alert.labels.items()))}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def is_known(name: str) -> bool:
    return name in KNOWN_ALERTS


def default_url(aegis_paths: AegisPaths | None = None) -> str:
    """The inbox's URL: ``$AEGIS_ALERTS_URL``, the platform database in prod, else ``AEGIS_HOME/alerts.db``."""
    return db.store_url(STORE, sqlite_path=(aegis_paths or paths()).alerts_db)


def _create_tables(conn: sa.Connection) -> None:
    metadata.create_all(conn)  # only what is missing: adopts an inbox made before migrations


MIGRATIONS = [db.Migration(1, "alerts and deliveries", _create_tables)]


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _naive(value: datetime) -> datetime:
    # Stored as naive UTC (SQLite has no time zones); read back through _aware.
    return value.astimezone(UTC).replace(tzinfo=None)


def _next_row(
    row: dict[str, Any] | None, fp: str, alert: Alert, now: datetime, head: int
) -> tuple[dict[str, Any], int]:
    """The row of ``fp`` after ``alert`` arrives, and the new change-sequence head."""
    status = alert.status.value
    if row is None:
        head += 1
        return {
            "fingerprint": fp,
            "seq": head,
            "name": alert.name,
            "target": alert.target,
            "status": status,
            "known": is_known(alert.name),
            "source": alert.source,
            "alert": alert.model_dump_json(),
            "received_at": now,
            "last_seen": now,
            "resolved_at": now if status == AlertStatus.RESOLVED else None,
            "count": 1,
        }, head
    stored = Alert.model_validate_json(row["alert"])
    body = alert.model_copy(update={"id": stored.id}).model_dump_json()  # one id per fingerprint
    new = {**row, "last_seen": now, "count": int(row["count"]) + 1}
    if status != row["status"]:
        if status == AlertStatus.RESOLVED and _utc(alert.starts_at) < _utc(stored.starts_at):
            return new, head  # a late "resolved" for an older firing: the newer firing stands
        head += 1
        new |= {
            "seq": head,
            "status": status,
            "alert": body,
            "resolved_at": now if status == AlertStatus.RESOLVED else None,
        }
    elif status == AlertStatus.FIRING:
        new["alert"] = body  # latest value and annotations
    return new, head


class AlertInbox:
    """The durable alert inbox; safe to share between threads and processes."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = db.open_store(self.url, STORE, MIGRATIONS)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with db.write_transaction(self.engine, WRITE_LOCK) as conn:
            yield conn

    # ------------------------------------------------------------------ writes

    def put(self, alerts: list[Alert], source_payload: dict[str, Any] | None = None) -> list[InboxEntry]:
        """Store ``alerts`` (and the delivery they came in) in one committed transaction.

        Returns the entry for each input alert, in input order, as it stands after
        the write.  Returning means the alerts are on disk.  A batch costs a few
        statements, whatever its size (rows are read and written in bulk).
        """
        now = _naive(utcnow())
        fps = [fingerprint_of(a) for a in alerts]
        c = alerts_table.c
        with self._write() as conn:
            if source_payload is not None:
                conn.execute(
                    deliveries_table.insert().values(
                        received_at=now,
                        source=alerts[0].source if alerts else "unknown",
                        alerts=len(alerts),
                        payload=json.dumps(source_payload, sort_keys=True, default=str),
                    )
                )
            head = conn.execute(sa.select(sa.func.max(c.seq))).scalar() or 0
            state: dict[str, dict[str, Any]] = {}
            unique = list(dict.fromkeys(fps))
            for i in range(0, len(unique), BULK_CHUNK):
                query = sa.select(alerts_table).where(c.fingerprint.in_(unique[i : i + BULK_CHUNK]))
                state.update({r.fingerprint: dict(r._mapping) for r in conn.execute(query)})
            existed = set(state)
            for fp, alert in zip(fps, alerts, strict=True):
                state[fp], head = _next_row(state.get(fp), fp, alert, now, head)
            inserts = [state[fp] for fp in unique if fp not in existed]
            updates = [{**state[fp], "b_fp": fp} for fp in unique if fp in existed]
            if inserts:
                conn.execute(alerts_table.insert(), inserts)
            if updates:
                columns = [col.name for col in alerts_table.columns if col.name != "fingerprint"]
                stmt = (
                    alerts_table.update()
                    .where(c.fingerprint == sa.bindparam("b_fp"))
                    .values({name: sa.bindparam(name) for name in columns})
                )
                conn.execute(stmt, [{k: u[k] for k in [*columns, "b_fp"]} for u in updates])
        return [self._entry(state[fp]) for fp in fps]

    # ------------------------------------------------------------------- reads

    @staticmethod
    def _entry(raw: Any) -> InboxEntry:
        row = raw if isinstance(raw, dict) else dict(raw._mapping)
        return InboxEntry(
            seq=row["seq"],
            fingerprint=row["fingerprint"],
            alert=Alert.model_validate_json(row["alert"]),
            status=row["status"],
            received_at=_aware(row["received_at"]),
            last_seen=_aware(row["last_seen"]),
            count=int(row["count"]),
            known=bool(row["known"]),
            resolved_at=_aware(row["resolved_at"]),
        )

    def since(self, seq: int, limit: int = DEFAULT_LIMIT, include_unknown: bool = False) -> list[InboxEntry]:
        """Entries whose change ``seq`` is greater than ``seq``, oldest change first."""
        limit = max(1, min(int(limit), MAX_LIMIT))
        query = sa.select(alerts_table).where(alerts_table.c.seq > seq)
        if not include_unknown:
            query = query.where(alerts_table.c.known.is_(True))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(alerts_table.c.seq).limit(limit)).all()
        return [self._entry(r) for r in rows]

    def latest_seq(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(alerts_table.c.seq))).scalar() or 0)

    def firing(self, target: str | None = None, include_unknown: bool = False) -> list[InboxEntry]:
        """Alerts firing now (optionally on one target), oldest change first."""
        query = sa.select(alerts_table).where(alerts_table.c.status == AlertStatus.FIRING.value)
        if target is not None:
            query = query.where(alerts_table.c.target == target)
        if not include_unknown:
            query = query.where(alerts_table.c.known.is_(True))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(alerts_table.c.seq)).all()
        return [self._entry(r) for r in rows]

    def get(self, fingerprint: str) -> InboxEntry | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(alerts_table).where(alerts_table.c.fingerprint == fingerprint)
            ).first()
        return None if row is None else self._entry(row)

    def all(self, include_unknown: bool = True) -> list[InboxEntry]:
        return self.since(0, limit=MAX_LIMIT, include_unknown=include_unknown)

    def stats(self) -> InboxStats:
        t = alerts_table.c
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.sum(sa.case((t.status == "firing", 1), else_=0)),
                    sa.func.sum(sa.case((t.status == "resolved", 1), else_=0)),
                    sa.func.sum(sa.case((t.known.is_(False), 1), else_=0)),
                    sa.func.max(t.seq),
                )
            ).one()
            deliveries = conn.execute(sa.select(sa.func.count()).select_from(deliveries_table)).scalar()
        return InboxStats(
            entries=int(row[0] or 0),
            firing=int(row[1] or 0),
            resolved=int(row[2] or 0),
            unknown=int(row[3] or 0),
            deliveries=int(deliveries or 0),
            latest_seq=int(row[4] or 0),
        )
