"""Which event ids are already in bronze, without reading bronze.

Bronze holds every event id at most once.  Checking a new batch against all of
bronze by re-reading it would cost O(bronze) per batch; instead a DuckDB table
keeps a 64-bit hash of every bronze event id and the number of the batch that
holds it.  A hash hit is only a candidate: the ingest confirms it exactly
against the named batch's bronze file (so a hash collision can never drop a
real event), which is cheap because hits are rare and point at one file.

The index is a cache derived from bronze + the manifest: it records the DuckDB
version whose ``hash()`` filled it, and is rebuilt from bronze when that changes.
Only the ingest opens it, under the ingest lock.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

INDEX_FILE = "event_index.duckdb"


class EventIndex:
    """Hashes of the event ids in bronze, keyed by batch number."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(str(path))
        self.con.execute(f"SET threads = {int(threads)}")
        self.con.execute("CREATE TABLE IF NOT EXISTS events (h UBIGINT NOT NULL, batch_no INTEGER NOT NULL)")
        self.con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        # which version (processed_at) of each batch the index holds, where it is a cache (S3 lakes)
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS synced (batch_no INTEGER PRIMARY KEY, processed_at VARCHAR)"
        )
        rows = self.con.execute("SELECT value FROM meta WHERE key = 'duckdb_version'").fetchall()
        row = rows[0] if rows else None
        self.stale = row is not None and row[0] != duckdb.__version__
        if row is None:
            self.con.execute("INSERT INTO meta VALUES ('duckdb_version', ?)", [duckdb.__version__])

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> EventIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def hashes(self, event_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """DuckDB's 64-bit hash of each id (vectorized, multi-threaded, order kept)."""
        ids = pa.table({"event_id": event_ids})  # noqa: F841 - read by DuckDB's replacement scan
        out = self.con.sql("SELECT hash(event_id) AS h FROM ids").to_arrow_table()
        return out.column("h").to_numpy()

    def count(self) -> int:
        return int(self.con.execute("SELECT count(*) FROM events").fetchall()[0][0])

    def forget(self, batch_nos: list[int]) -> None:
        """Drop the entries of batches about to be re-processed."""
        if batch_nos:
            self.con.execute(
                "DELETE FROM events WHERE batch_no IN (SELECT unnest(?::INTEGER[]))", [batch_nos]
            )

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions in ``hashes`` that the index holds, and the batch number holding each."""
        if len(hashes) == 0 or self.count() == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        probe = pa.table({"h": pa.array(hashes, pa.uint64()), "pos": pa.array(np.arange(len(hashes)))})  # noqa: F841
        res = self.con.sql(
            "SELECT p.pos, e.batch_no FROM probe p JOIN events e USING (h) ORDER BY p.pos"
        ).to_arrow_table()
        return res.column("pos").to_numpy(), res.column("batch_no").to_numpy()

    def add(self, hashes: np.ndarray, batch_nos: np.ndarray) -> None:
        if len(hashes) == 0:
            return
        new = pa.table({"h": pa.array(hashes, pa.uint64()), "batch_no": pa.array(batch_nos, pa.int32())})  # noqa: F841
        self.con.execute("INSERT INTO events SELECT h, batch_no FROM new")

    def sync(self, versions: dict[int, tuple[str, str | None]], read_ids: Callable[[str], pa.Table]) -> int:
        """Bring a cached index up to date with the manifest; return how many batches changed.

        ``versions``: batch number -> (bronze key, processed at) of every finished batch
        with bronze rows (:meth:`aegis.lake.manifest.Manifest.bronze_versions`).  The index
        remembers which version of each batch it holds; a batch another host re-processed,
        added or dropped since is re-read (only its ``event_id`` column) or forgotten.  Used
        where the index lives on a run's scratch disk and the manifest is shared (S3 lakes).
        """
        if self.stale:
            self.con.execute("DELETE FROM events")
            self.con.execute("DELETE FROM synced")
        held = dict(self.con.execute("SELECT batch_no, processed_at FROM synced").fetchall())
        gone = [b for b in held if b not in versions or versions[b][1] != held[b]]
        fresh = [b for b, (_, at) in versions.items() if held.get(b, "\0") != at or b in gone]
        self.forget(gone)
        if gone:
            self.con.execute("DELETE FROM synced WHERE batch_no IN (SELECT unnest(?::INTEGER[]))", [gone])
        for batch_no in fresh:
            ids = read_ids(versions[batch_no][0]).column("event_id")
            self.add(self.hashes(ids), np.full(len(ids), batch_no, dtype=np.int32))
            self.con.execute("INSERT OR REPLACE INTO synced VALUES (?, ?)", [batch_no, versions[batch_no][1]])
        self.con.execute("INSERT OR REPLACE INTO meta VALUES ('duckdb_version', ?)", [duckdb.__version__])
        self.stale = False
        return len(fresh) + len([b for b in gone if b not in versions])

    def mark_synced(self, batch_no: int, processed_at: str | None) -> None:
        """Record that the index holds this version of a batch (see :meth:`sync`)."""
        self.con.execute("INSERT OR REPLACE INTO synced VALUES (?, ?)", [batch_no, processed_at])

    def rebuild(self, bronze_files: dict[int, str]) -> int:
        """Refill the index from bronze files (batch number -> path); returns the entries written."""
        self.con.execute("DELETE FROM events")
        for batch_no, path in bronze_files.items():
            if Path(path).exists():
                self.con.execute(
                    "INSERT INTO events SELECT hash(event_id), ? FROM read_parquet(?)", [batch_no, str(path)]
                )
        self.con.execute("INSERT OR REPLACE INTO meta VALUES ('duckdb_version', ?)", [duckdb.__version__])
        self.stale = False
        return self.count()
