"""The manifest of processed batches: where every landed row went.

One row per batch id: rows in, rows to bronze, rows quarantined, duplicates
dropped.  ``rows_in = bronze_rows + quarantined_rows + duplicate_rows`` is
asserted when a batch is recorded and re-checked by the asset check over the
whole manifest.  SQLite (WAL) because the sensor and the UI read it while an
ingest run writes it; a Parquet copy is exported for DuckDB/dbt readers.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from aegis.config import AegisPaths
from aegis.telemetry import write_atomic

MANIFEST_DB = "manifest.db"
MANIFEST_PARQUET = "manifest.parquet"
# ok: every row reached bronze; partial: some rows were quarantined or duplicates;
# rejected: the file was quarantined whole; empty: a valid file with no rows;
# processing: started and not finished (a crash): the next run redoes it.
STATUSES = ("processing", "ok", "partial", "rejected", "empty")
DONE_STATUSES = ("ok", "partial", "rejected", "empty")

_SCHEMA = """
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


def manifest_dir(paths: AegisPaths) -> Path:
    return paths.lake / "ingest"


class Manifest:
    """The processed-batches table; cheap to open, safe to read while another process writes."""

    def __init__(self, paths: AegisPaths) -> None:
        self.dir = manifest_dir(paths)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.dir / MANIFEST_DB
        self._held: sqlite3.Connection | None = None
        with self._connect() as con:
            con.executescript(_SCHEMA)

    def _open(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.row_factory = sqlite3.Row
        return con

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self._held is not None:
            yield self._held
            return
        with closing(self._open()) as con:
            yield con

    @contextmanager
    def session(self) -> Iterator[Manifest]:
        """Keep one connection open for many calls (an ingest run); readers still see every commit."""
        self._held = self._open()
        try:
            yield self
        finally:
            self._held.close()
            self._held = None

    def register(
        self, batch_id: str, source_path: str, source_size: int, run_id: str | None
    ) -> tuple[int, str | None]:
        """Mark a batch as being processed; return its stable number and the source it was first seen at.

        A batch id seen before keeps its number (the event index and bronze file
        are keyed by it), so re-processing replaces rather than adds.
        """
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            row = con.execute(
                "SELECT batch_no, source_path FROM batches WHERE batch_id = ?", (batch_id,)
            ).fetchone()
            if row is None:
                cur = con.execute(
                    "INSERT INTO batches(batch_id, source_path, source_size, status, run_id) "
                    "VALUES (?, ?, ?, 'processing', ?)",
                    (batch_id, source_path, source_size, run_id),
                )
                con.execute("COMMIT")
                return int(cur.lastrowid or 0), None
            if row["source_path"] == source_path:
                con.execute(
                    "UPDATE batches SET status='processing', source_size=?, run_id=? WHERE batch_no=?",
                    (source_size, run_id, row["batch_no"]),
                )
            con.execute("COMMIT")
            return int(row["batch_no"]), str(row["source_path"])

    def record(self, entry: ManifestEntry) -> None:
        """Store a finished batch; refuses counts that do not add up."""
        if entry.status not in DONE_STATUSES:
            raise ValueError(f"status {entry.status!r} is not a finished status ({', '.join(DONE_STATUSES)})")
        if not entry.conserved:
            raise ConservationError(
                f"batch {entry.batch_id}: rows_in {entry.rows_in} != bronze {entry.bronze_rows} + "
                f"quarantined {entry.quarantined_rows} + duplicates {entry.duplicate_rows}"
            )
        data = asdict(entry)
        cols = [c for c in data if c != "batch_no"]
        with self._connect() as con:
            con.execute(
                f"UPDATE batches SET {', '.join(f'{c}=?' for c in cols)} WHERE batch_no=?",
                [data[c] for c in cols] + [entry.batch_no],
            )

    def entries(self, batch_ids: Iterable[str] | None = None) -> list[ManifestEntry]:
        with self._connect() as con:
            if batch_ids is None:
                rows = con.execute("SELECT * FROM batches ORDER BY batch_no").fetchall()
            else:
                ids = list(batch_ids)
                rows = []
                for i in range(0, len(ids), 500):
                    chunk = ids[i : i + 500]
                    rows += con.execute(
                        f"SELECT * FROM batches WHERE batch_id IN ({','.join('?' * len(chunk))}) ORDER BY batch_no",
                        chunk,
                    ).fetchall()
        return [ManifestEntry(**dict(r)) for r in rows]

    def bronze_paths(self, batch_nos: Iterable[int]) -> dict[int, str]:
        nos = list(batch_nos)
        out: dict[int, str] = {}
        with self._connect() as con:
            for i in range(0, len(nos), 500):
                chunk = nos[i : i + 500]
                for r in con.execute(
                    f"SELECT batch_no, bronze_path FROM batches WHERE batch_no IN ({','.join('?' * len(chunk))})",
                    chunk,
                ):
                    if r["bronze_path"]:
                        out[int(r["batch_no"])] = str(r["bronze_path"])
        return out

    def done_sources(self) -> set[str]:
        """Source paths (relative to landing) of batches finished, whatever their outcome."""
        with self._connect() as con:
            rows = con.execute(
                f"SELECT source_path FROM batches WHERE status IN ({','.join('?' * len(DONE_STATUSES))})",
                DONE_STATUSES,
            ).fetchall()
        return {r[0] for r in rows}

    def totals(self) -> dict[str, int]:
        with self._connect() as con:
            row = con.execute(
                "SELECT count(*) AS batches, coalesce(sum(rows_in),0) AS rows_in, "
                "coalesce(sum(bronze_rows),0) AS bronze_rows, coalesce(sum(quarantined_rows),0) AS quarantined_rows, "
                "coalesce(sum(duplicate_rows),0) AS duplicate_rows, "
                "coalesce(sum(status='rejected'),0) AS rejected_files, coalesce(sum(status='processing'),0) AS unfinished "
                "FROM batches"
            ).fetchone()
        return {k: int(row[k]) for k in row.keys()}  # noqa: SIM118 - sqlite3.Row

    def to_arrow(self) -> pa.Table:
        entries = self.entries()
        return pa.Table.from_pylist([asdict(e) for e in entries], schema=ARROW_SCHEMA)

    def export(self) -> Path:
        """Write ``manifest.parquet`` beside the database for DuckDB/dbt readers."""
        return write_atomic(self.to_arrow(), self.dir / MANIFEST_PARQUET)


# How long a pending_keeper trusts the finished set it read (a retention pass asks per file).
KEEPER_REFRESH_S = 2.0


def pending_keeper(paths: AegisPaths, refresh_s: float = KEEPER_REFRESH_S) -> Callable[[Path], bool]:
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
