"""Sensors: new landed batches -> ingest runs; declarative automation on by default.

The landing sensor's cursor is a watermark over file modification times plus the
paths seen within ``LAG_NS`` of it.  Files land by rename, so a file's mtime is
when its writer finished, which can precede the rename by a moment: a file
renamed just after a tick may carry an mtime older than the watermark.  Looking
back ``LAG_NS`` and remembering what was already requested there catches it
without ever requesting a batch twice; the manifest then filters batches
already processed (a reset cursor costs one scan, not a re-ingest).
"""

import hashlib
import json
from dataclasses import dataclass

import dagster as dg

from aegis.lake.landing import LandedBatch, list_landed
from aegis.lake.manifest import Manifest
from assets.telemetry import INGEST_TAG, ingest_job
from pipelines.resources.lake import LakeResource

SENSOR_INTERVAL_S = 15
LAG_NS = 60 * 1_000_000_000
AUTOMATION_INTERVAL_S = 15
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


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


def plan_runs(
    landed: list[LandedBatch], cursor: LandingCursor, done: set[str], max_per_run: int
) -> tuple[list[list[LandedBatch]], LandingCursor]:
    """Batches to request, in runs of at most ``max_per_run``, and the next cursor."""
    seen = set(cursor.recent)
    new = [b for b in landed if b.rel not in seen and b.rel not in done]
    watermark = max([cursor.watermark_ns, *(b.mtime_ns for b in landed)])
    recent = tuple(
        sorted(
            {*(r for r in cursor.recent), *(b.rel for b in new)}
            & {b.rel for b in landed if b.mtime_ns > watermark - LAG_NS}
        )
    )
    runs = [new[i : i + max_per_run] for i in range(0, len(new), max_per_run)]
    return runs, LandingCursor(watermark, recent)


def run_key(batches: list[LandedBatch]) -> str:
    digest = hashlib.sha1("\n".join(b.rel for b in batches).encode()).hexdigest()[:16]
    return f"ingest-{digest}"


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests an ingest run for batches newly landed under landing/telemetry.",
)
def landing_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    # While an ingest run is queued or running, wait: the next run then takes every batch
    # landed meanwhile, instead of a queue of small runs starving the marts' runs.
    active = context.instance.get_run_records(
        dg.RunsFilter(job_name=ingest_job.name, statuses=ACTIVE_STATUSES), limit=1
    )
    if active:
        return dg.SensorResult(skip_reason="an ingest run is still queued or running", cursor=context.cursor)
    paths = lake.paths()
    cursor = LandingCursor.parse(context.cursor)
    since = cursor.watermark_ns - LAG_NS if cursor.watermark_ns else None
    landed = list_landed(paths.landing_telemetry, newer_than_ns=since)
    done = Manifest(paths).done_sources() if landed else set()
    runs, nxt = plan_runs(landed, cursor, done, lake.max_batches_per_run)
    requests = [
        dg.RunRequest(
            run_key=run_key(batch_list),
            run_config=dg.RunConfig(
                ops={"bronze_events": {"config": {"batches": [b.rel for b in batch_list]}}}
            ),
            tags={INGEST_TAG: "landing", "aegis/batches": str(len(batch_list))},
        )
        for batch_list in runs
    ]
    if not requests:
        return dg.SensorResult(skip_reason="no new batches landed", cursor=nxt.dump())
    return dg.SensorResult(run_requests=requests, cursor=nxt.dump())


automation_sensor = dg.AutomationConditionSensorDefinition(
    "default_automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_INTERVAL_S,
    description="Evaluates every asset's automation condition (marts follow bronze); on by default.",
)

SENSORS = [landing_sensor, automation_sensor]
