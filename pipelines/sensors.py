"""Sensors: new landed batches -> ingest runs; declarative automation on by default.

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

import dagster as dg

from aegis.lake.landing import LandedBatch, list_landed
from aegis.lake.manifest import Manifest

# Every automation run carries this tag; dagster.yaml (aegis.stack) runs one at a time, since
# the warehouse builds in them write one DuckDB file, which takes a single writer.
from aegis.stack import AUTOMATION_TAG
from assets.telemetry import INGEST_TAG, ingest_job
from pipelines.resources.lake import LakeResource

SENSOR_INTERVAL_S = 15
LAG_NS = 60 * 1_000_000_000
AUTOMATION_INTERVAL_S = 15
WAREHOUSE_WINDOW_S = 2 * AUTOMATION_INTERVAL_S
AUTOMATION_SENSOR_NAME = "default_automation_condition_sensor"
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
    requested = run.run_config.get("ops", {}).get("bronze_events", {}).get("config", {}).get("batches", [])
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
    paths = lake.paths()
    done = Manifest(paths).done_sources()  # read once per tick: the retry and the new batches both need it
    retry = retry_of_failed_ingest(context.instance, done)
    if retry is not None:
        context.log.warning(
            f"ingest run {retry.tags['aegis/retry-of'][:8]} failed; retrying its "
            f"{retry.tags['aegis/batches']} unprocessed batch(es), attempt {retry.tags[ATTEMPT_TAG]}"
        )
        return dg.SensorResult(run_requests=[retry], cursor=context.cursor)
    cursor = LandingCursor.parse(context.cursor)
    since = cursor.watermark_ns - LAG_NS if cursor.watermark_ns else None
    landed = list_landed(paths.landing_telemetry, newer_than_ns=since)
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


automation_sensor = dg.AutomationConditionSensorDefinition(
    AUTOMATION_SENSOR_NAME,
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_INTERVAL_S,
    run_tags={AUTOMATION_TAG: "declarative"},
    description="Evaluates every asset's automation condition (marts follow bronze); on by default.",
)

SENSORS = [landing_sensor, automation_sensor]
