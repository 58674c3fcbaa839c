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


@dataclass
class LakeReport:
    totals: dict[str, int]
    by_rule: list[tuple[str, int, str]]  # rule, rows, an example reason
    rejected_files: list[dict[str, str]]  # the newest first
    pending_batches: int
    last_processed_at: str | None
    generated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


def lake_report(paths: AegisPaths, max_files: int = 20) -> LakeReport:
    manifest = Manifest(paths)
    totals = manifest.totals()
    by_rule: list[tuple[str, int, str]] = []
    files = list(paths.quarantine.glob("date=*/*.parquet"))
    if files:
        con = duckdb.connect()
        try:
            rows = con.execute(
                "SELECT rule, count(*) AS n, min(reason) AS example FROM read_parquet(?, union_by_name=true) "
                "GROUP BY rule ORDER BY n DESC",
                [[str(f) for f in files]],
            ).fetchall()
        finally:
            con.close()
        by_rule = [(str(r), int(n), str(e)) for r, n, e in rows]
    rejected: list[dict[str, str]] = []
    listing = paths.quarantine_files / QUARANTINE_FILES_MANIFEST
    if listing.exists():
        lines = listing.read_text().splitlines()
        for line in reversed(lines[-max_files:]):
            try:
                rejected.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line after a crash: skip it, never fail the report
                continue
    last = max((e.processed_at for e in manifest.entries() if e.processed_at), default=None)
    return LakeReport(
        totals=totals,
        by_rule=by_rule,
        rejected_files=rejected,
        pending_batches=len(pending_batches(paths, manifest)),
        last_processed_at=last,
    )
