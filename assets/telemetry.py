"""The telemetry stage: landed batches -> ``bronze_events`` (+ quarantine), and its checks.

``bronze_events`` is one unpartitioned asset whose every materialization ingests
a set of batches: the ones a sensor run lists in its config, or every pending
one.  Not a dynamic partition per batch: many thousands of batches would mean
thousands of partitions and runs in the UI, while one run per sensor tick keeps
the graph readable and still isolates batches (each batch stands alone inside
the run, a bad one is quarantined and the rest go on).  The asset is a thin
wrapper: :mod:`aegis.lake` does the work; this module reports what a person
wants to see in the UI (counts, quarantine by reason) and checks conservation.
"""

from typing import Any

import dagster as dg
import pyarrow.parquet as pq
from pydantic import Field

from aegis.lake.bronze import IngestReport, ingest_batches
from aegis.lake.landing import resolve
from aegis.lake.manifest import Manifest
from aegis.lake.report import lake_report
from aegis.stack import INGEST_TAG  # the run-queue tags are named once, where dagster.yaml is written
from pipelines.resources.lake import LakeResource

GROUP = "telemetry"
BRONZE_KEY = dg.AssetKey("bronze_events")
REPORT_KEY = dg.AssetKey("telemetry_quality_report")
MAX_REASON_CHARS = 160  # example reasons in the UI table are cut here


class IngestConfig(dg.Config):
    """Which batches this run ingests."""

    batches: list[str] = Field(
        default_factory=list,
        description="Landed batch paths relative to landing/telemetry; empty = every pending batch",
    )
    reprocess: bool = Field(
        default=False, description="Redo batches already processed (replaces their files)"
    )


def _md_escape(text: str) -> str:
    text = text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"
    return text.replace("|", "\\|").replace("\n", " ")


def reasons_table(by_rule: list[tuple[str, int, str]]) -> str:
    """Quarantine counts by rule as a markdown table (the UI renders it)."""
    if not by_rule:
        return "No rows quarantined."
    lines = ["| rule | rows | example reason |", "|---|---:|---|"]
    lines += [f"| {rule} | {n:,} | {_md_escape(example)} |" for rule, n, example in by_rule]
    return "\n".join(lines)


def ingest_metadata(report: IngestReport, vanished: list[str], lake: str) -> dict[str, Any]:
    statuses = report.statuses
    rate = report.rows_in / report.seconds if report.seconds > 0 else 0.0
    return {
        "rows_in": dg.MetadataValue.int(report.rows_in),
        "bronze_rows": dg.MetadataValue.int(report.bronze_rows),
        "quarantined_rows": dg.MetadataValue.int(report.quarantined_rows),
        "duplicate_rows": dg.MetadataValue.int(report.duplicate_rows),
        "batches_processed": dg.MetadataValue.int(len(report.results)),
        "batches_rejected_whole": dg.MetadataValue.int(statuses.get("rejected", 0)),
        "batches_partial": dg.MetadataValue.int(statuses.get("partial", 0)),
        "batches_skipped_already_done": dg.MetadataValue.int(len(report.skipped)),
        "batches_vanished_before_ingest": dg.MetadataValue.int(len(vanished)),
        "quarantine_by_reason": dg.MetadataValue.md(reasons_table(report.by_rule())),
        "events_per_second": dg.MetadataValue.float(round(rate, 1)),
        "seconds": dg.MetadataValue.float(round(report.seconds, 3)),
        "lake": dg.MetadataValue.path(lake),
    }


@dg.asset(
    key=BRONZE_KEY,
    group_name=GROUP,
    kinds={"parquet", "pyarrow"},
    description="Validated telemetry events (schema v1), unique by event_id; bad rows quarantined with reasons.",
    tags={"aegis/stage": "ingest"},
)
def bronze_events(
    context: dg.AssetExecutionContext, config: IngestConfig, lake: LakeResource
) -> dg.MaterializeResult:
    paths = lake.paths()
    vanished: list[str] = []
    batches = None
    if config.batches:
        batches, vanished = resolve(paths.landing_telemetry, config.batches)
        for rel in vanished:
            context.log.warning(
                f"batch {rel} was removed from landing (retention) before it could be ingested"
            )
    report = ingest_batches(
        paths,
        batches,
        reprocess=config.reprocess,
        future_skew=lake.future_skew,
        run_id=context.run_id,
        log=context.log.warning,
    )
    context.log.info(
        f"{len(report.results)} batch(es): {report.rows_in:,} rows in, {report.bronze_rows:,} to bronze, "
        f"{report.quarantined_rows:,} quarantined, {report.duplicate_rows:,} duplicates, {report.seconds:.2f} s"
    )
    return dg.MaterializeResult(metadata=ingest_metadata(report, vanished, lake.describe()))


@dg.asset_check(
    asset=BRONZE_KEY,
    name="rows_conserved",
    blocking=True,
    description="rows in = bronze + quarantined + duplicates, per batch and overall; bronze files hold what the "
    "manifest says; no batch left half-done.",
)
def rows_conserved(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    paths = lake.paths()
    manifest = Manifest(paths)
    entries = manifest.entries()
    unbalanced = [e.batch_id for e in entries if e.status != "processing" and not e.conserved]
    unfinished = [e.batch_id for e in entries if e.status == "processing"]
    # The batches of this run are re-counted from their files (cheap: Parquet footers only).
    mine = [e for e in entries if e.run_id == context.run.run_id]
    miscounted = []
    for e in mine:
        on_disk = pq.ParquetFile(paths.lake / e.bronze_path).metadata.num_rows if e.bronze_path else 0
        if on_disk != e.bronze_rows:
            miscounted.append(f"{e.batch_id} (manifest {e.bronze_rows}, file {on_disk})")
    totals = manifest.totals()
    overall = (
        totals["rows_in"] == totals["bronze_rows"] + totals["quarantined_rows"] + totals["duplicate_rows"]
    )
    passed = overall and not unbalanced and not unfinished and not miscounted
    problems = []
    if unbalanced:
        problems.append(f"batches whose counts do not add up: {', '.join(unbalanced[:10])}")
    if unfinished:
        problems.append(f"batches left half-done (the next ingest redoes them): {', '.join(unfinished[:10])}")
    if miscounted:
        problems.append(f"bronze files that disagree with the manifest: {', '.join(miscounted[:10])}")
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) or "every row is accounted for",
        metadata={
            "batches": dg.MetadataValue.int(totals["batches"]),
            "rows_in": dg.MetadataValue.int(totals["rows_in"]),
            "bronze_rows": dg.MetadataValue.int(totals["bronze_rows"]),
            "quarantined_rows": dg.MetadataValue.int(totals["quarantined_rows"]),
            "duplicate_rows": dg.MetadataValue.int(totals["duplicate_rows"]),
            "batches_checked_against_files": dg.MetadataValue.int(len(mine)),
        },
    )


@dg.asset(
    key=REPORT_KEY,
    group_name=GROUP,
    deps=[BRONZE_KEY],
    kinds={"duckdb"},
    description="Daily view of the lake's health: quarantine by rule, rejected files, ingest backlog.",
)
def telemetry_quality_report(lake: LakeResource) -> dg.MaterializeResult:
    report = lake_report(lake.paths())
    files_md = "No file was rejected whole."
    if report.rejected_files:
        files_md = "\n".join(
            ["| batch | reason |", "|---|---|"]
            + [
                f"| {f.get('batch_id', '?')} | {_md_escape(str(f.get('reason', '')))} |"
                for f in report.rejected_files
            ]
        )
    t = report.totals
    return dg.MaterializeResult(
        metadata={
            "batches": dg.MetadataValue.int(t["batches"]),
            "rows_in": dg.MetadataValue.int(t["rows_in"]),
            "bronze_rows": dg.MetadataValue.int(t["bronze_rows"]),
            "quarantined_rows": dg.MetadataValue.int(t["quarantined_rows"]),
            "duplicate_rows": dg.MetadataValue.int(t["duplicate_rows"]),
            "quarantine_rate": dg.MetadataValue.float(
                round(t["quarantined_rows"] / t["rows_in"], 6) if t["rows_in"] else 0.0
            ),
            "pending_batches": dg.MetadataValue.int(report.pending_batches),
            "last_processed_at": dg.MetadataValue.text(report.last_processed_at or "never"),
            "quarantine_by_reason": dg.MetadataValue.md(reasons_table(report.by_rule)),
            "rejected_files": dg.MetadataValue.md(files_md),
        }
    )


ingest_job = dg.define_asset_job(
    "ingest_telemetry",
    selection=dg.AssetSelection.assets(BRONZE_KEY),
    description="Ingest landed batches into bronze (the landing sensor requests it with the batches it saw).",
    tags={INGEST_TAG: "landing"},
)

quality_report_job = dg.define_asset_job(
    "telemetry_quality_report_job",
    selection=dg.AssetSelection.assets(REPORT_KEY),
    description="Refresh the daily telemetry quality report.",
)

defs = dg.Definitions(
    assets=[bronze_events, telemetry_quality_report],
    asset_checks=[rows_conserved],
    jobs=[ingest_job, quality_report_job],
)

__all__ = [
    "BRONZE_KEY",
    "GROUP",
    "INGEST_TAG",
    "IngestConfig",
    "bronze_events",
    "defs",
    "ingest_job",
    "quality_report_job",
    "rows_conserved",
    "telemetry_quality_report",
]
