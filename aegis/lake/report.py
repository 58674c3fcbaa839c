"""What the lake looks like now: quarantine by rule, rejected files, backlog, freshness.

Read-only; the daily quality report asset and ``aegis materialize`` summaries
call it.  DuckDB scans the quarantine files (they are small: rejected rows only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

from aegis.config import AegisPaths
from aegis.lake.bronze import QUARANTINE_FILES_MANIFEST, pending_batches
from aegis.lake.manifest import Manifest
from aegis.lake.store import Lake, LocalLakeStore, as_lake, register_duckdb

REASON_SUFFIX = ".reason.json"  # an S3 lake's record of a file quarantined whole (aegis.lake.bronze)


@dataclass
class LakeReport:
    totals: dict[str, int]
    by_rule: list[tuple[str, int, str]]  # rule, rows, an example reason
    rejected_files: list[dict[str, str]]  # the newest first
    pending_batches: int
    last_processed_at: str | None
    generated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


def _rejected(lake: Lake, max_files: int) -> list[dict[str, str]]:
    """The newest files quarantined whole, with their reasons."""
    rejected: list[dict[str, str]] = []
    if isinstance(lake.store, LocalLakeStore):
        listing = lake.store.path("quarantine/files") / QUARANTINE_FILES_MANIFEST
        lines = listing.read_text().splitlines() if listing.exists() else []
    else:
        records = lake.store.list_files("quarantine/files", suffix=REASON_SUFFIX)[-max_files:]
        lines = [lake.store.read_bytes(r.rel).decode() for r in records]
    for line in reversed(lines[-max_files:]):
        try:
            rejected.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line after a crash: skip it, never fail the report
            continue
    return rejected


def lake_report(where: AegisPaths | Lake, max_files: int = 20) -> LakeReport:
    lake = as_lake(where)
    manifest = Manifest(lake)
    totals = manifest.totals()
    by_rule: list[tuple[str, int, str]] = []
    files = [f.rel for f in lake.store.list_files("quarantine") if f.rel.startswith("quarantine/date=")]
    if files:
        con = duckdb.connect()
        if lake.is_remote:
            register_duckdb(con, getattr(lake.store, "region", None))
        try:
            rows = con.execute(
                "SELECT rule, count(*) AS n, min(reason) AS example FROM read_parquet(?, union_by_name=true) "
                "GROUP BY rule ORDER BY n DESC",
                [[lake.store.uri_of(f) for f in files]],
            ).fetchall()
        finally:
            con.close()
        by_rule = [(str(r), int(n), str(e)) for r, n, e in rows]
    last = max((e.processed_at for e in manifest.entries() if e.processed_at), default=None)
    return LakeReport(
        totals=totals,
        by_rule=by_rule,
        rejected_files=_rejected(lake, max_files),
        pending_batches=len(pending_batches(lake, manifest)),
        last_processed_at=last,
    )
