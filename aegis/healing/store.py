"""The incident store (``AEGIS_HOME/healing.db``): incidents, their timelines, and the
sensor's memory (inbox cursor, launches for the rate limit, breakers).

SQLAlchemy Core; SQLite in WAL mode with ``synchronous=FULL`` locally, so an
incident opened before a crash is still there after it, and the platform's
PostgreSQL in prod (schema ``aegis_healing``, :mod:`aegis.db`). Every
transaction of :meth:`IncidentStore.tx` holds the store's write lock
(``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL): the sensor's
read-decide-write never interleaves with another's, and a timeline update never
loses another's action. Incidents are stored as
one JSON document each plus the columns the sensor filters on; the timeline is
part of the document (an incident has a handful of actions, never thousands).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from aegis import db
from aegis.config import paths
from aegis.domain import utcnow
from aegis.healing.models import TERMINAL, ActionOutcome, Incident, IncidentAction, IncidentStatus

STORE = "healing"
SQLITE_BUSY_TIMEOUT_S = db.SQLITE_BUSY_TIMEOUT_S
WRITE_LOCK = db.store_schema(STORE)
LINK_CHUNK = 500
CURSOR_KEY = "inbox_cursor"
SECURITY_CURSOR_KEY = "refusal_cursor"

metadata = sa.MetaData()

incidents_t = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(300), nullable=False, index=True),
    sa.Column("target", sa.String(200), nullable=False, index=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("opened_at", sa.DateTime, nullable=False, index=True),
    sa.Column("launched_at", sa.DateTime),
    sa.Column("doc", sa.Text, nullable=False),
)

alert_links_t = sa.Table(
    "alert_links",
    metadata,
    sa.Column("fingerprint", sa.String(128), primary_key=True),
    sa.Column("incident_id", sa.String(64), nullable=False, index=True),
)

state_t = sa.Table(
    "sensor_state",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def _create_tables(conn: sa.Connection) -> None:
    metadata.create_all(conn)  # only what is missing: adopts a store made before migrations


MIGRATIONS = [db.Migration(1, "incidents, alert links, sensor state", _create_tables)]


def default_url() -> str:
    """The store's URL: ``$AEGIS_HEALING_URL``, the platform database in prod, else ``AEGIS_HOME/healing.db``."""
    return db.store_url(STORE, sqlite_path=paths().healing_db)


def _naive(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


class IncidentNotFound(LookupError):
    pass


class IncidentStore:
    """Incidents and the healing sensor's state; safe across threads and processes."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = db.open_store(self.url, STORE, MIGRATIONS)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[sa.Connection]:
        """A write transaction: writers serialize up front, so no update is lost."""
        with db.write_transaction(self.engine, WRITE_LOCK) as conn:
            yield conn

    # ----------------------------------------------------------- incidents

    def _save(self, conn: sa.Connection, inc: Incident, launched_at: datetime | None = None) -> None:
        values: dict[str, Any] = {
            "key": inc.key,
            "target": inc.target,
            "kind": inc.kind,
            "status": inc.status.value,
            "opened_at": _naive(inc.opened_at),
            "doc": inc.model_dump_json(),
        }
        if launched_at is not None:
            values["launched_at"] = _naive(launched_at)
        updated = conn.execute(sa.update(incidents_t).where(incidents_t.c.id == inc.id).values(**values))
        if updated.rowcount == 0:
            conn.execute(sa.insert(incidents_t).values(id=inc.id, **values))

    def save(self, inc: Incident) -> Incident:
        with self.tx() as conn:
            self._save(conn, inc)
        return inc

    def get(self, incident_id: str) -> Incident:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(incidents_t.c.doc).where(incidents_t.c.id == incident_id)).first()
        if row is None:
            raise IncidentNotFound(f"no incident {incident_id!r}")
        return Incident.model_validate_json(row.doc)

    def incidents(
        self, status: set[IncidentStatus] | None = None, target: str | None = None
    ) -> list[Incident]:
        q = sa.select(incidents_t.c.doc).order_by(incidents_t.c.opened_at, incidents_t.c.id)
        if status:
            q = q.where(incidents_t.c.status.in_([s.value for s in status]))
        if target:
            q = q.where(incidents_t.c.target == target)
        with self.engine.connect() as conn:
            return [Incident.model_validate_json(r.doc) for r in conn.execute(q)]

    def open_for(self, conn: sa.Connection, key: str) -> Incident | None:
        row = conn.execute(
            sa.select(incidents_t.c.doc)
            .where(incidents_t.c.key == key)
            .where(incidents_t.c.status.notin_([s.value for s in TERMINAL]))
            .order_by(incidents_t.c.opened_at.desc())
        ).first()
        return None if row is None else Incident.model_validate_json(row.doc)

    def count_opened(self, conn: sa.Connection, key: str, since: datetime) -> int:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(incidents_t)
                .where(incidents_t.c.key == key)
                .where(incidents_t.c.opened_at >= _naive(since))
            ).scalar_one()
        )

    def link_alert(self, conn: sa.Connection, fingerprint: str, incident_id: str) -> bool:
        """Attach an alert to an incident once; False when it already belongs to one."""
        exists = conn.execute(
            sa.select(alert_links_t.c.incident_id).where(alert_links_t.c.fingerprint == fingerprint)
        ).first()
        if exists is not None:
            return False
        conn.execute(sa.insert(alert_links_t).values(fingerprint=fingerprint, incident_id=incident_id))
        return True

    def linked(self, conn: sa.Connection, fingerprints: set[str]) -> set[str]:
        """Which of ``fingerprints`` already belong to an incident (chunked IN queries)."""
        out: set[str] = set()
        fps = sorted(fingerprints)
        for i in range(0, len(fps), LINK_CHUNK):
            chunk = fps[i : i + LINK_CHUNK]
            rows = conn.execute(
                sa.select(alert_links_t.c.fingerprint).where(alert_links_t.c.fingerprint.in_(chunk))
            )
            out.update(r.fingerprint for r in rows)
        return out

    def add_links(self, conn: sa.Connection, links: list[dict[str, str]]) -> None:
        if links:
            conn.execute(sa.insert(alert_links_t), links)

    def mark_launched(self, conn: sa.Connection, inc: Incident, at: datetime) -> None:
        self._save(conn, inc, launched_at=at)

    def unlaunched(self, conn: sa.Connection) -> list[Incident]:
        rows = conn.execute(
            sa.select(incidents_t.c.doc)
            .where(incidents_t.c.launched_at.is_(None))
            .where(incidents_t.c.status == IncidentStatus.OPEN.value)
            .order_by(incidents_t.c.opened_at, incidents_t.c.id)
        )
        return [Incident.model_validate_json(r.doc) for r in rows]

    def active_on(self, conn: sa.Connection, target: str) -> int:
        """Launched incidents on ``target`` still running (not resolved, not escalated)."""
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(incidents_t)
                .where(incidents_t.c.target == target)
                .where(incidents_t.c.launched_at.is_not(None))
                .where(incidents_t.c.status.notin_([s.value for s in TERMINAL]))
            ).scalar_one()
        )

    def launches_since(self, conn: sa.Connection, since: datetime) -> int:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(incidents_t)
                .where(incidents_t.c.launched_at >= _naive(since))
            ).scalar_one()
        )

    def actions_since(self, target: str, since: datetime) -> int:
        """Remediations applied on ``target`` since ``since`` (the per-target action breaker)."""
        n = 0
        for inc in self.incidents(target=target):
            n += sum(
                1
                for a in inc.actions
                if a.operation
                and a.outcome in (ActionOutcome.APPLIED, ActionOutcome.VERIFIED, ActionOutcome.UNVERIFIED)
                and a.at >= since
            )
        return n

    # ----------------------------------------------------------- timeline

    def add_action(self, incident_id: str, action: IncidentAction) -> Incident:
        with self.tx() as conn:
            row = conn.execute(sa.select(incidents_t.c.doc).where(incidents_t.c.id == incident_id)).first()
            if row is None:
                raise IncidentNotFound(f"no incident {incident_id!r}")
            inc = Incident.model_validate_json(row.doc)
            inc.actions.append(action)
            self._save(conn, inc)
        return inc

    def update(self, incident_id: str, **fields: Any) -> Incident:
        with self.tx() as conn:
            row = conn.execute(sa.select(incidents_t.c.doc).where(incidents_t.c.id == incident_id)).first()
            if row is None:
                raise IncidentNotFound(f"no incident {incident_id!r}")
            inc = Incident.model_validate_json(row.doc)
            for k, v in fields.items():
                setattr(inc, k, v)
            self._save(conn, inc)
        return inc

    # ----------------------------------------------------------- sensor state

    def get_state(self, key: str, default: str | None = None) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(state_t.c.value).where(state_t.c.key == key)).first()
        return default if row is None else str(row.value)

    def set_state(self, conn: sa.Connection, key: str, value: str) -> None:
        updated = conn.execute(sa.update(state_t).where(state_t.c.key == key).values(value=value))
        if updated.rowcount == 0:
            conn.execute(sa.insert(state_t).values(key=key, value=value))

    def get_json(self, key: str) -> Any:
        raw = self.get_state(key)
        return None if raw is None else json.loads(raw)


def window_start(seconds: float, now: datetime | None = None) -> datetime:
    return (now or utcnow()) - timedelta(seconds=seconds)
