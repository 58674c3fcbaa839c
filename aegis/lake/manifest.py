"""The manifest of processed batches: where every landed row went.

One row per batch id: rows in, rows to bronze, rows quarantined, duplicates
dropped.  ``rows_in = bronze_rows + quarantined_rows + duplicate_rows`` is
asserted when a batch is recorded and re-checked by the asset check over the
whole manifest.  SQLite (WAL) in a local lake, because the sensor and the UI read it while an
ingest run writes it; PostgreSQL (schema ``aegis_lake`` of the platform
database, :func:`aegis.db.store_url`) in prod, where runs are pods.  A Parquet copy is exported into the lake
(``ingest/manifest.parquet``) for DuckDB/dbt readers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from aegis import db
from aegis.db import Migration
from aegis.lake.store import MANIFEST_DB, Lake, as_lake

MANIFEST_PARQUET = "manifest.parquet"
# Where the manifest's Parquet copy lives, relative to the lake root.
MANIFEST_PARQUET_REL = f"ingest/{MANIFEST_PARQUET}"
# ok: every row reached bronze; partial: some rows were quarantined or duplicates;
# rejected: the file was quarantined whole; empty: a valid file with no rows;
# processing: started and not finished (a crash): the next run redoes it.
STATUSES = ("processing", "ok", "partial", "rejected", "empty")
DONE_STATUSES = ("ok", "partial", "rejected", "empty")

_metadata = sa.MetaData()
batches_t = sa.Table(
    "batches",
    _metadata,
    sa.Column("batch_no", sa.Integer, sa.Identity(), primary_key=True, autoincrement=True),
    sa.Column("batch_id", sa.Text, nullable=False, unique=True),
    sa.Column("source_path", sa.Text, nullable=False),
    sa.Column("source_size", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("rows_in", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("bronze_rows", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("quarantined_rows", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("duplicate_rows", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("reason", sa.Text),
    sa.Column("notes", sa.Text),
    sa.Column("bronze_path", sa.Text),
    sa.Column("quarantine_path", sa.Text),
    sa.Column("run_id", sa.Text),
    sa.Column("processed_at", sa.Text),
    sa.CheckConstraint(
        "status IN ('processing', 'ok', 'partial', 'rejected', 'empty')", name="batches_status_known"
    ),
    sa.CheckConstraint(
        "status = 'processing' OR rows_in = bronze_rows + quarantined_rows + duplicate_rows",
        name="batches_conserved",
    ),
    sa.Index("batches_status", "status"),
)

# SQLite as the code before the SQLAlchemy port created it (AUTOINCREMENT): kept so an
# existing AEGIS_HOME and a new one have the same table.
_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    batch_no INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL UNIQUE,
    source_path TEXT NOT NULL,
    source_size INTEGER NOT NULL,
    status TEXT NOT NULL,
    rows_in INTEGER NOT NULL DEFAULT 0,
    bronze_rows INTEGER NOT NULL DEFAULT 0,
    quarantined_rows INTEGER NOT NULL DEFAULT 0,
    duplicate_rows INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    notes TEXT,
    bronze_path TEXT,
    quarantine_path TEXT,
    run_id TEXT,
    processed_at TEXT,
    CHECK (status IN ('processing', 'ok', 'partial', 'rejected', 'empty')),
    CHECK (status = 'processing' OR rows_in = bronze_rows + quarantined_rows + duplicate_rows)
);
CREATE INDEX IF NOT EXISTS batches_status ON batches(status);
"""

ARROW_SCHEMA = pa.schema(
    [
        ("batch_no", pa.int64()),
        ("batch_id", pa.string()),
        ("source_path", pa.string()),
        ("source_size", pa.int64()),
        ("status", pa.string()),
        ("rows_in", pa.int64()),
        ("bronze_rows", pa.int64()),
        ("quarantined_rows", pa.int64()),
        ("duplicate_rows", pa.int64()),
        ("reason", pa.string()),
        ("notes", pa.string()),
        ("bronze_path", pa.string()),
        ("quarantine_path", pa.string()),
        ("run_id", pa.string()),
        ("processed_at", pa.string()),
    ]
)


class ConservationError(AssertionError):
    """Counts of a batch do not add up: rows were lost or invented."""


@dataclass(frozen=True)
class ManifestEntry:
    batch_no: int
    batch_id: str
    source_path: str
    source_size: int
    status: str
    rows_in: int
    bronze_rows: int
    quarantined_rows: int
    duplicate_rows: int
    reason: str | None
    notes: str | None
    bronze_path: str | None
    quarantine_path: str | None
    run_id: str | None
    processed_at: str | None

    @property
    def conserved(self) -> bool:
        return self.rows_in == self.bronze_rows + self.quarantined_rows + self.duplicate_rows


def manifest_dir(where: Any) -> Path:
    """The ingest's local state directory (the manifest database of a local lake lives there)."""
    return as_lake(where).state_dir


def _create(con: Connection) -> None:
    """Migration 1: the ``batches`` table (an existing local manifest is adopted as it is)."""
    if con.dialect.name == "sqlite":
        for statement in filter(str.strip, _SQLITE_SCHEMA.split(";")):
            con.exec_driver_sql(statement)
    else:
        _metadata.create_all(con)


MIGRATIONS = [Migration(1, "batches", _create)]
STORE = "lake"
_ENGINES: dict[str, Engine] = {}


def _engine(url: str) -> Engine:
    """The manifest's engine (:func:`aegis.db.open_store`: WAL SQLite or PostgreSQL, migrated),
    one per URL and process; a local manifest deleted under a running process is re-created."""
    engine = _ENGINES.get(url)
    file = db.sqlite_file(url)
    if engine is None or (file is not None and not file.exists()):
        engine = _ENGINES[url] = db.open_store(url, STORE, MIGRATIONS)
    return engine


def _register_one(
    con: Connection, batch_id: str, source_path: str, source_size: int, run_id: str | None
) -> tuple[int, str | None]:
    row = con.execute(
        sa.select(batches_t.c.batch_no, batches_t.c.source_path)
        .where(batches_t.c.batch_id == batch_id)
        .with_for_update()
    ).first()
    if row is None:
        batch_no: int = con.execute(
            batches_t.insert()
            .values(
                batch_id=batch_id,
                source_path=source_path,
                source_size=source_size,
                status="processing",
                run_id=run_id,
            )
            .returning(batches_t.c.batch_no)
        ).scalar_one()
        return int(batch_no), None
    if row.source_path == source_path:
        con.execute(
            batches_t.update()
            .where(batches_t.c.batch_no == row.batch_no)
            .values(status="processing", source_size=source_size, run_id=run_id)
        )
    return int(row.batch_no), str(row.source_path)


def _entry(row: Any) -> ManifestEntry:
    return ManifestEntry(**{c: row._mapping[c] for c in ARROW_SCHEMA.names})


class Manifest:
    """The processed-batches table; cheap to open, safe to read while another process writes.

    ``Manifest(paths)`` opens a local lake's SQLite manifest; ``Manifest(lake)`` the
    manifest a :class:`~aegis.lake.store.Lake` names (PostgreSQL in prod).
    """

    def __init__(self, where: Any) -> None:
        self.lake: Lake = as_lake(where)
        self.dir = self.lake.state_dir
        self.url = self.lake.manifest_url
        self.db_path = self.dir / MANIFEST_DB  # the local database (sqlite URL) or unused
        self.engine = _engine(self.url)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction holding the manifest's write lock (SQLite: BEGIN IMMEDIATE)."""
        with db.write_transaction(self.engine, STORE) as con:
            yield con

    def register(
        self, batch_id: str, source_path: str, source_size: int, run_id: str | None
    ) -> tuple[int, str | None]:
        """Mark a batch as being processed; return its stable number and the source it was first seen at.

        A batch id seen before keeps its number (the event index and bronze file
        are keyed by it), so re-processing replaces rather than adds.
        """
        return self.register_many([(batch_id, source_path, source_size, run_id)])[0]

    def register_many(self, batches: list[tuple[str, str, int, str | None]]) -> list[tuple[int, str | None]]:
        """:meth:`register` for ``(batch_id, source_path, source_size, run_id)`` rows, in one transaction."""
        out: list[tuple[int, str | None]] = []
        with self._write() as con:
            for batch_id, source_path, source_size, run_id in batches:
                out.append(_register_one(con, batch_id, source_path, source_size, run_id))
        return out

    def record(self, entry: ManifestEntry) -> None:
        """Store a finished batch; refuses counts that do not add up."""
        self.record_many([entry])

    def record_many(self, entries: list[ManifestEntry]) -> None:
        """:meth:`record` for several batches, in one transaction (all or none); each is checked first."""
        for entry in entries:
            if entry.status not in DONE_STATUSES:
                raise ValueError(
                    f"status {entry.status!r} is not a finished status ({', '.join(DONE_STATUSES)})"
                )
            if not entry.conserved:
                raise ConservationError(
                    f"batch {entry.batch_id}: rows_in {entry.rows_in} != bronze {entry.bronze_rows} + "
                    f"quarantined {entry.quarantined_rows} + duplicates {entry.duplicate_rows}"
                )
        with self._write() as con:
            for entry in entries:
                data = asdict(entry)
                batch_no = data.pop("batch_no")
                con.execute(batches_t.update().where(batches_t.c.batch_no == batch_no).values(**data))

    def forget_unfinished(self, batch_no: int) -> None:
        """Drop a batch registered but never finished (its file vanished before it was read)."""
        with self._write() as con:
            con.execute(
                batches_t.delete().where(batches_t.c.batch_no == batch_no, batches_t.c.status == "processing")
            )

    def _rows(self, query: sa.Select[Any]) -> list[Any]:
        with self.engine.connect() as con:
            return list(con.execute(query))

    def entries(self, batch_ids: Iterable[str] | None = None) -> list[ManifestEntry]:
        base = sa.select(batches_t).order_by(batches_t.c.batch_no)
        if batch_ids is None:
            return [_entry(r) for r in self._rows(base)]
        ids = list(batch_ids)
        rows = []
        for i in range(0, len(ids), 500):
            rows += self._rows(base.where(batches_t.c.batch_id.in_(ids[i : i + 500])))
        return sorted((_entry(r) for r in rows), key=lambda e: e.batch_no)

    def bronze_paths(self, batch_nos: Iterable[int]) -> dict[int, str]:
        nos = [int(n) for n in batch_nos]
        out: dict[int, str] = {}
        for i in range(0, len(nos), 500):
            query = sa.select(batches_t.c.batch_no, batches_t.c.bronze_path).where(
                batches_t.c.batch_no.in_(nos[i : i + 500])
            )
            for r in self._rows(query):
                if r.bronze_path:
                    out[int(r.batch_no)] = str(r.bronze_path)
        return out

    def bronze_versions(self) -> dict[int, tuple[str, str | None]]:
        """Every finished batch with bronze rows: batch number -> (bronze path, processed at)."""
        query = sa.select(batches_t.c.batch_no, batches_t.c.bronze_path, batches_t.c.processed_at).where(
            batches_t.c.bronze_path.is_not(None), batches_t.c.status.in_(DONE_STATUSES)
        )
        return {int(r.batch_no): (str(r.bronze_path), r.processed_at) for r in self._rows(query)}

    def done_sources(self) -> set[str]:
        """Source paths (relative to landing) of batches finished, whatever their outcome."""
        query = sa.select(batches_t.c.source_path).where(batches_t.c.status.in_(DONE_STATUSES))
        return {r[0] for r in self._rows(query)}

    def totals(self) -> dict[str, int]:
        c = batches_t.c

        def flagged(status: str) -> Any:
            return sa.func.coalesce(sa.func.sum(sa.case((c.status == status, 1), else_=0)), 0)

        query = sa.select(
            sa.func.count().label("batches"),
            sa.func.coalesce(sa.func.sum(c.rows_in), 0).label("rows_in"),
            sa.func.coalesce(sa.func.sum(c.bronze_rows), 0).label("bronze_rows"),
            sa.func.coalesce(sa.func.sum(c.quarantined_rows), 0).label("quarantined_rows"),
            sa.func.coalesce(sa.func.sum(c.duplicate_rows), 0).label("duplicate_rows"),
            flagged("rejected").label("rejected_files"),
            flagged("processing").label("unfinished"),
        )
        row = self._rows(query)[0]
        return {k: int(v) for k, v in row._mapping.items()}

    def to_arrow(self) -> pa.Table:
        entries = self.entries()
        return pa.Table.from_pylist([asdict(e) for e in entries], schema=ARROW_SCHEMA)

    def export(self) -> str:
        """Write ``ingest/manifest.parquet`` into the lake for DuckDB/dbt readers; return its URI."""
        self.lake.store.write_parquet(MANIFEST_PARQUET_REL, self.to_arrow())
        return self.lake.store.uri_of(MANIFEST_PARQUET_REL)


# How long a pending_keeper trusts the finished set it read (a retention pass asks per file).
KEEPER_REFRESH_S = 2.0


def pending_keeper(paths: Any, refresh_s: float = KEEPER_REFRESH_S) -> Callable[[Path], bool]:
    """A landing retention ``keep`` predicate: true for a landed batch the ingest has not finished.

    Built on :meth:`Manifest.done_sources`, re-read at most every ``refresh_s``
    seconds: a stale set only lacks batches finished since, which are then kept
    one pass longer, never deleted early. A path outside the landing area is
    kept (retention must not delete what it cannot account for).
    """
    landing = paths.landing_telemetry
    manifest = Manifest(paths)
    cache: dict[str, Any] = {"at": -math.inf, "done": frozenset()}

    def keep(path: Path) -> bool:
        try:
            rel = Path(path).relative_to(landing).as_posix()
        except ValueError:
            return True
        now = time.monotonic()
        if now - cache["at"] > refresh_s:
            cache["done"] = frozenset(manifest.done_sources())
            cache["at"] = now
        return rel not in cache["done"]

    return keep
