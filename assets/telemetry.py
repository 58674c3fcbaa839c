"""The telemetry stage: landed batches -> ``bronze_events`` (+ quarantine), and its checks.

``bronze_events`` is one unpartitioned asset whose every materialization ingests
a set of batches: the ones a sensor run lists in its config, or every pending
one.  Not a dynamic partition per batch: many thousands of batches would mean
thousands of partitions and runs in the UI, while one run per sensor tick keeps
the graph readable and still isolates batches (each batch stands alone inside
the run, a bad one is quarantined and the rest go on).  The asset is a thin
wrapper: :mod:`aegis.lake` does the work; this module reports what a person
wants to see in the UI (counts, quarantine by reason) and checks conservation.

The area's sensor and schedule live here too: ``landing_sensor`` requests an
ingest run for newly landed batches, ``telemetry_daily_quality_report``
refreshes the quality report every morning.

The landing sensor's cursor is a watermark over file modification times plus the
paths seen within ``LAG_NS`` of it.  Files land by rename, so a file's mtime is
when its writer finished, which can precede the rename by a moment: a file
renamed just after a tick may carry an mtime older than the watermark.  Looking
back ``LAG_NS`` and remembering what was already requested there catches it
without ever requesting a batch twice; the manifest then filters batches
already processed (a reset cursor costs one scan, not a re-ingest).

Pacing, learnt by running ``aegis up`` on a 2-core machine: the sensor requests
at most one ingest run at a time (the oldest ``max_batches_per_run`` batches; a
backlog is taken over the next ticks, the watermark held at the newest batch
requested).  A queue of ingest runs keeps ``bronze_events`` "in progress" for
minutes, and the marts' automation condition rightly waits while an input is in
progress, so queued ingests starved the marts.  After an ingest run ends, the
sensor also leaves ``WAREHOUSE_WINDOW_S`` of quiet (two automation ticks) so the
automation sensor sees bronze settled and can request the warehouse build.

Nothing is lost when an ingest run itself fails (a crash, not a quarantined
row): its batches are already behind the cursor, so before taking new ones the
sensor re-requests the failed run's batches that the manifest does not hold, up
to ``MAX_INGEST_ATTEMPTS`` attempts.  Past that they stay in landing, listed as
pending by ``aegis materialize telemetry`` (which ingests every pending batch).
"""

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import Field

from aegis.lake.bronze import IngestReport, ingest_batches
from aegis.lake.landing import LandedBatch, list_landed_in, resolve_in
from aegis.lake.manifest import Manifest
from aegis.lake.report import lake_report
from aegis.stack import INGEST_TAG  # the run-queue tags are named once, where dagster.yaml is written
from assets.automation import AUTOMATION_INTERVAL_S
from assets.resources.lake import LakeResource

GROUP = "telemetry"
BRONZE_KEY = dg.AssetKey("bronze_events")
REPORT_KEY = dg.AssetKey("telemetry_quality_report")
MAX_REASON_CHARS = 160  # example reasons in the UI table are cut here
DAILY_REPORT_CRON = "0 6 * * *"
SENSOR_INTERVAL_S = 15
LAG_NS = 60 * 1_000_000_000
WAREHOUSE_WINDOW_S = 2 * AUTOMATION_INTERVAL_S
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
FINISHED_STATUSES = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
MAX_INGEST_ATTEMPTS = 3
ATTEMPT_TAG = "aegis/attempt"


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
    where = lake.lake()
    vanished: list[str] = []
    batches = None
    if config.batches:
        batches, vanished = resolve_in(where, config.batches)
        for rel in vanished:
            context.log.warning(
                f"batch {rel} was removed from landing (retention) before it could be ingested"
            )
    report = ingest_batches(
        where,
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
    where = lake.lake()
    manifest = Manifest(where)
    entries = manifest.entries()
    unbalanced = [e.batch_id for e in entries if e.status != "processing" and not e.conserved]
    unfinished = [e.batch_id for e in entries if e.status == "processing"]
    # The batches of this run are re-counted from their files (cheap: Parquet footers only).
    mine = [e for e in entries if e.run_id == context.run.run_id]
    miscounted = []
    for e in mine:
        on_disk = where.store.parquet_rows(e.bronze_path) if e.bronze_path else 0
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
    report = lake_report(lake.lake())
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


# ------------------------------------------------------------------ schedule

telemetry_daily_report = dg.ScheduleDefinition(
    name="telemetry_daily_quality_report",
    job=quality_report_job,
    cron_schedule=DAILY_REPORT_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Quarantine by rule, rejected files and ingest backlog, every morning.",
)


# ------------------------------------------------------------------ landing sensor


@dataclass
class LandingCursor:
    watermark_ns: int = 0
    recent: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: str | None) -> "LandingCursor":
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(int(data.get("w", 0)), tuple(data.get("recent", ())))

    def dump(self) -> str:
        return json.dumps({"w": self.watermark_ns, "recent": list(self.recent)})


def plan_run(
    landed: list[LandedBatch], cursor: LandingCursor, done: set[str], max_per_run: int
) -> tuple[list[LandedBatch], int, LandingCursor]:
    """The next run's batches (oldest first, at most ``max_per_run``), how many wait, and the next cursor.

    With a backlog the watermark stops at the newest batch taken: everything left
    is at least as new, so the next tick lists it again and takes the next slice.
    """
    if max_per_run < 1:
        raise ValueError(f"max_per_run must be >= 1, got {max_per_run}")
    seen = set(cursor.recent)
    new = sorted(b for b in landed if b.rel not in seen and b.rel not in done)
    take, rest = new[:max_per_run], new[max_per_run:]
    if rest:
        watermark = max(cursor.watermark_ns, take[-1].mtime_ns)
    else:
        watermark = max([cursor.watermark_ns, *(b.mtime_ns for b in landed)])
    recent = tuple(
        sorted(
            {*cursor.recent, *(b.rel for b in take)}
            & {b.rel for b in landed if b.mtime_ns > watermark - LAG_NS}
        )
    )
    return take, len(rest), LandingCursor(watermark, recent)


def run_key(batches: list[LandedBatch]) -> str:
    digest = hashlib.sha1("\n".join(b.rel for b in batches).encode()).hexdigest()[:16]
    return f"ingest-{digest}"


def retry_of_failed_ingest(instance: dg.DagsterInstance, done: set[str]) -> dg.RunRequest | None:
    """A run request for the last ingest run's batches when that run failed and left some unprocessed."""
    last = instance.get_run_records(
        dg.RunsFilter(job_name=ingest_job.name, statuses=FINISHED_STATUSES), limit=1
    )
    if not last or last[0].dagster_run.status == dg.DagsterRunStatus.SUCCESS:
        return None
    run = last[0].dagster_run
    attempt = int(run.tags.get(ATTEMPT_TAG, "1"))
    if attempt >= MAX_INGEST_ATTEMPTS:
        return None
    run_config: dict[str, Any] = dict(run.run_config or {})
    requested = run_config.get("ops", {}).get("bronze_events", {}).get("config", {}).get("batches", [])
    left = [rel for rel in requested if rel not in done]
    if not left:
        return None
    return dg.RunRequest(
        run_key=f"{run.tags.get('dagster/run_key', run.run_id)}-attempt-{attempt + 1}",
        run_config=dg.RunConfig(ops={"bronze_events": {"config": {"batches": left}}}),
        tags={
            INGEST_TAG: "retry",
            ATTEMPT_TAG: str(attempt + 1),
            "aegis/retry-of": run.run_id,
            "aegis/batches": str(len(left)),
        },
    )


def ingest_wait_reason(instance: dg.DagsterInstance, now: float) -> str | None:
    """Why the sensor must not request an ingest now (``None``: it may)."""
    active = instance.get_run_records(
        dg.RunsFilter(job_name=ingest_job.name, statuses=ACTIVE_STATUSES), limit=1
    )
    if active:
        return f"ingest run {active[0].dagster_run.run_id[:8]} is still {active[0].dagster_run.status.value.lower()}"
    last = instance.get_run_records(
        dg.RunsFilter(job_name=ingest_job.name, statuses=FINISHED_STATUSES), limit=1
    )
    if last and last[0].end_time is not None and now - last[0].end_time < WAREHOUSE_WINDOW_S:
        return (
            f"last ingest ended {now - last[0].end_time:.0f} s ago; leaving the warehouse "
            f"{WAREHOUSE_WINDOW_S} s to pick it up"
        )
    return None


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests an ingest run for batches newly landed under landing/telemetry (one run at a time).",
)
def landing_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    wait = ingest_wait_reason(context.instance, time.time())
    if wait is not None:
        return dg.SensorResult(skip_reason=wait, cursor=context.cursor)
    where = lake.lake()
    done = Manifest(where).done_sources()  # read once per tick: the retry and the new batches both need it
    retry = retry_of_failed_ingest(context.instance, done)
    if retry is not None:
        context.log.warning(
            f"ingest run {retry.tags['aegis/retry-of'][:8]} failed; retrying its "
            f"{retry.tags['aegis/batches']} unprocessed batch(es), attempt {retry.tags[ATTEMPT_TAG]}"
        )
        return dg.SensorResult(run_requests=[retry], cursor=context.cursor)
    cursor = LandingCursor.parse(context.cursor)
    since = cursor.watermark_ns - LAG_NS if cursor.watermark_ns else None
    landed = list_landed_in(where, newer_than_ns=since)
    batches, waiting, nxt = plan_run(landed, cursor, done, lake.max_batches_per_run)
    if not batches:
        return dg.SensorResult(skip_reason="no new batches landed", cursor=nxt.dump())
    if waiting:
        context.log.info(f"{waiting} more landed batch(es) wait for the next run")
    request = dg.RunRequest(
        run_key=run_key(batches),
        run_config=dg.RunConfig(ops={"bronze_events": {"config": {"batches": [b.rel for b in batches]}}}),
        tags={
            INGEST_TAG: "landing",
            ATTEMPT_TAG: "1",
            "aegis/batches": str(len(batches)),
            "aegis/backlog": str(waiting),
        },
    )
    return dg.SensorResult(run_requests=[request], cursor=nxt.dump())


defs = dg.Definitions(
    assets=[bronze_events, telemetry_quality_report],
    asset_checks=[rows_conserved],
    jobs=[ingest_job, quality_report_job],
    schedules=[telemetry_daily_report],
    sensors=[landing_sensor],
)

__all__ = [
    "BRONZE_KEY",
    "GROUP",
    "INGEST_TAG",
    "IngestConfig",
    "LandingCursor",
    "bronze_events",
    "defs",
    "ingest_job",
    "ingest_wait_reason",
    "landing_sensor",
    "plan_run",
    "quality_report_job",
    "rows_conserved",
    "telemetry_daily_report",
    "telemetry_quality_report",
]
