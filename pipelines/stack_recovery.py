"""Close the runs a stopped local stack left behind, before ``aegis up`` starts Dagster again.

Why: a run whose worker was killed (Ctrl-C that outlived the stop timeout, a
SIGKILL, a reboot) stays ``STARTED`` in the run storage for ever; the local run
launcher cannot tell that its worker is gone.  Both halves of the
self-materializing graph then wait on it: the landing sensor never ingests
while an ingest run is in flight, and the marts' automation condition never
builds while an input is in progress.  So at start-up, with no Dagster process
of this stack running yet, every in-flight run whose worker process is not
alive is closed, with a message saying why.  A run whose worker is alive
(``aegis materialize`` in another terminal runs in-process on the same
instance) is left alone.  ``QUEUED`` runs are left too: they never started, and
the restarted daemon launches them.

How a run is closed depends on how the stack stopped:

- **The operator stopped it** (Ctrl-C or SIGTERM to ``aegis up``): ``aegis up``
  wrote :data:`aegis.stack.STOP_MARKER` into ``DAGSTER_HOME`` with the stop's
  start and end times.  An orphaned run created before the stop ended is
  marked **canceled** ("the stack was stopped").  So is a run that Dagster
  itself recorded as failed *only because* the stop interrupted it: its
  ``RUN_FAILURE`` event names an interruption (``KeyboardInterrupt`` /
  ``DagsterExecutionInterruptedError``, reason ``UNEXPECTED_TERMINATION``, or a
  step failure with one of those errors) and falls inside the stop window.
  Reclassified through the public ``DagsterInstance.report_run_canceled``: the
  failure event stays in the run's log, followed by the cancellation and its
  reason, so nothing is hidden.  The marker is removed once it has been read.
- **Anything else** (a crash, a reboot, SIGKILL of ``aegis up``): no marker,
  so orphaned runs are marked **failed** (``CANCELING`` ones canceled), and
  failed runs stay failed.

Run as ``python -m pipelines.stack_recovery`` with ``DAGSTER_HOME`` set; it
imports Dagster only, not the code location.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType, JobFailureData, RunFailureReason, StepFailureData
from dagster._utils.error import SerializableErrorInfo

from aegis.stack import STOP_MARKER, STOP_TIMEOUT_S

IN_FLIGHT = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
REASON = "orphaned: the local stack stopped while this run was in flight and its worker is gone"
STOPPED_REASON = (
    "canceled: the operator stopped the local stack ({signal} at {at}) while this run was in flight"
)
INTERRUPTED_REASON = (
    "canceled: this run failed only because the operator stopped the local stack "
    "({signal} at {at}), which interrupted it"
)
# Exceptions Dagster records when a run or step is interrupted by a signal.
INTERRUPT_ERRORS = frozenset({"KeyboardInterrupt", "DagsterExecutionInterruptedError"})
# Clock slack around the stop window: the marker is written by another process, a poll later.
STOP_SLACK = timedelta(seconds=30)
# A stop whose end was never recorded (``aegis up`` itself was killed mid-stop) lasted at most this.
MAX_STOP = timedelta(seconds=STOP_TIMEOUT_S + 10)


@dataclass(frozen=True)
class Closed:
    run_id: str
    job_name: str
    was: str
    now: str


@dataclass(frozen=True)
class StackStop:
    """What ``aegis up`` recorded when the operator stopped it (see :func:`aegis.stack.write_stop_marker`)."""

    signal: str
    stopping_at: datetime
    stopped_at: datetime | None

    @property
    def window(self) -> tuple[datetime, datetime]:
        """From the stop's start to its end (or its longest possible end), with clock slack."""
        end = self.stopped_at or (self.stopping_at + MAX_STOP)
        return self.stopping_at - STOP_SLACK, end + STOP_SLACK

    def covers(self, at: datetime) -> bool:
        lo, hi = self.window
        return lo <= at <= hi

    def describe(self, template: str) -> str:
        return template.format(signal=self.signal, at=self.stopping_at.isoformat(timespec="seconds"))


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def marker_path(dagster_home: Path) -> Path:
    return dagster_home / STOP_MARKER


def read_stop_marker(dagster_home: Path) -> StackStop | None:
    """The stop ``aegis up`` recorded, or None (no marker: the stack did not stop cleanly).

    An unreadable marker is reported and treated as absent: runs then stay
    failed, the conservative reading.
    """
    path = marker_path(dagster_home)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        return StackStop(
            signal=str(doc.get("signal") or "signal"),
            stopping_at=_aware(doc["stopping_at"]),
            stopped_at=_aware(doc["stopped_at"]) if doc.get("stopped_at") else None,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"ignoring unreadable stop marker {path}: {exc}", file=sys.stderr)
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid that started executing the run (its ``RUN_START`` event), if it got that far."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_START).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.pid is not None:
            return int(event.pid)
    return None


def _interrupt(error: SerializableErrorInfo | None) -> bool:
    """Whether an error (or its cause / context chain) is a signal's interruption."""
    seen = 0
    while error is not None and seen < 10:
        if error.cls_name in INTERRUPT_ERRORS:
            return True
        error = error.cause or error.context
        seen += 1
    return False


def interrupted_at(instance: dg.DagsterInstance, run_id: str) -> datetime | None:
    """When the run failed, if its failure was an interruption and nothing else; else None."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE).records
    if not records:
        return None
    entry = records[-1].event_log_entry
    event = entry.dagster_event
    data = event.event_specific_data if event is not None else None
    if not isinstance(data, JobFailureData):
        return None
    interrupted = data.failure_reason == RunFailureReason.UNEXPECTED_TERMINATION and _interrupt(data.error)
    if not interrupted and data.failure_reason == RunFailureReason.STEP_FAILURE:
        step = data.first_step_failure_event
        step_data = step.event_specific_data if step is not None else None
        interrupted = isinstance(step_data, StepFailureData) and _interrupt(step_data.error)
    if not interrupted:
        return None
    return datetime.fromtimestamp(entry.timestamp, tz=UTC)


def close_orphaned_runs(instance: dg.DagsterInstance, stop: StackStop | None = None) -> list[Closed]:
    """Close every in-flight run without a live worker; with ``stop``, as canceled (see the module doc).

    With ``stop`` also reclassify the runs that failed only because that stop
    interrupted them.  Idempotent: a closed run is no longer in flight or failed.
    """
    closed: list[Closed] = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT)):
        run = record.dagster_run
        pid = worker_pid(instance, run.run_id)
        if pid is not None and _alive(pid):
            continue
        created = record.create_timestamp
        created = created if created.tzinfo else created.replace(tzinfo=UTC)
        if run.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message=REASON)
            now = dg.DagsterRunStatus.CANCELED
        elif stop is not None and created <= stop.window[1]:
            instance.report_run_canceled(run, message=stop.describe(STOPPED_REASON))
            now = dg.DagsterRunStatus.CANCELED
        else:
            instance.report_run_failed(run, message=REASON)
            now = dg.DagsterRunStatus.FAILURE
        closed.append(Closed(run.run_id, run.job_name, run.status.value, now.value))
    if stop is not None:
        closed += cancel_interrupted_runs(instance, stop)
    return closed


def cancel_interrupted_runs(instance: dg.DagsterInstance, stop: StackStop) -> list[Closed]:
    """Mark canceled the failed runs whose failure was the stop's interruption, inside its window."""
    closed: list[Closed] = []
    lo, _ = stop.window
    failed = dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], updated_after=lo)
    for record in instance.get_run_records(failed):
        run = record.dagster_run
        at = interrupted_at(instance, run.run_id)
        if at is None or not stop.covers(at):
            continue
        instance.report_run_canceled(run, message=stop.describe(INTERRUPTED_REASON))
        closed.append(Closed(run.run_id, run.job_name, run.status.value, dg.DagsterRunStatus.CANCELED.value))
    return closed


def recover(instance: dg.DagsterInstance, dagster_home: Path) -> tuple[StackStop | None, list[Closed]]:
    """Read (and consume) the stop marker, then close the runs; the marker goes only once that succeeded."""
    stop = read_stop_marker(dagster_home)
    closed = close_orphaned_runs(instance, stop)
    marker_path(dagster_home).unlink(missing_ok=True)
    return stop, closed


def main() -> int:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        print("DAGSTER_HOME is not set: nothing to recover", file=sys.stderr)
        return 2
    with dg.DagsterInstance.get() as instance:
        stop, closed = recover(instance, Path(home))
    if stop is not None and closed:
        print(f"the stack was stopped ({stop.signal} at {stop.stopping_at.isoformat(timespec='seconds')}):")
    for c in closed:
        what = "interrupted" if c.was == dg.DagsterRunStatus.FAILURE.value else "orphaned"
        print(f"closed {what} run {c.run_id[:8]} ({c.job_name}): {c.was} -> {c.now}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
