"""Close the runs a stopped local stack left in flight, before ``aegis up`` starts Dagster again.

Why: a run whose worker was killed (Ctrl-C that outlived the stop timeout, a
SIGKILL, a reboot) stays ``STARTED`` in the run storage for ever; the local run
launcher cannot tell that its worker is gone.  Both halves of the
self-materializing graph then wait on it: the landing sensor never ingests
while an ingest run is in flight, and the marts' automation condition never
builds while an input is in progress.  So at start-up, with no Dagster process
of this stack running yet, every in-flight run whose worker process is not
alive is marked failed (``CANCELING`` ones canceled), with a message saying
why.  A run whose worker is alive (``aegis materialize`` in another terminal
runs in-process on the same instance) is left alone.  ``QUEUED`` runs are left
too: they never started, and the restarted daemon launches them.

Run as ``python -m pipelines.stack_recovery`` with ``DAGSTER_HOME`` set; it
imports Dagster only, not the code location.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import dagster as dg
from dagster._core.events import DagsterEventType

IN_FLIGHT = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
REASON = "orphaned: the local stack stopped while this run was in flight and its worker is gone"


@dataclass(frozen=True)
class Closed:
    run_id: str
    job_name: str
    was: str
    now: str


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


def close_orphaned_runs(instance: dg.DagsterInstance) -> list[Closed]:
    """Mark every in-flight run without a live worker as failed (canceled if it was canceling)."""
    closed: list[Closed] = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT)):
        run = record.dagster_run
        pid = worker_pid(instance, run.run_id)
        if pid is not None and _alive(pid):
            continue
        if run.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message=REASON)
            now = dg.DagsterRunStatus.CANCELED
        else:
            instance.report_run_failed(run, message=REASON)
            now = dg.DagsterRunStatus.FAILURE
        closed.append(Closed(run.run_id, run.job_name, run.status.value, now.value))
    return closed


def main() -> int:
    if not os.environ.get("DAGSTER_HOME"):
        print("DAGSTER_HOME is not set: nothing to recover", file=sys.stderr)
        return 2
    with dg.DagsterInstance.get() as instance:
        closed = close_orphaned_runs(instance)
    for c in closed:
        print(f"closed orphaned run {c.run_id[:8]} ({c.job_name}): {c.was} -> {c.now}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
