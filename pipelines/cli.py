"""``aegis materialize GROUP``: materialize an asset group and everything it needs, in-process.

Headless runs for people and CI: the same definitions and resources as the
code location (current profile), the same instance as ``aegis up`` (runs show
in the UI), and a non-zero exit when anything failed.

The terminal gets a concise progress display (each asset as it materializes,
failed checks at once, a running count of checks) and a summary; Dagster's
DEBUG event stream and dbt's console output go to a log file under
``AEGIS_HOME/logs/`` whose path is printed first and last, so a failure is one
``less`` away without flooding the screen.
"""

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click

SUMMARY_KEYS = (
    "rows_in",
    "bronze_rows",
    "quarantined_rows",
    "duplicate_rows",
    "batches_processed",
    "row_count",
    "rows",
    "dagster/row_count",
)
RUN_TAG = "aegis/materialize"
POLL_S = 0.5


def _instance() -> Any:
    from dagster import DagsterInstance

    from aegis.config import paths
    from aegis.stack import write_dagster_yaml

    if os.environ.get("DAGSTER_HOME"):
        return DagsterInstance.get()
    home = paths().ensure().dagster_home
    write_dagster_yaml(home)
    return DagsterInstance.from_config(str(home))


def groups_of(defs: Any) -> dict[str, list[str]]:
    """Group name -> materializable asset keys (as user strings)."""
    out: dict[str, list[str]] = {}
    graph = defs.resolve_asset_graph()
    for key in sorted(graph.materializable_asset_keys):
        group = graph.get(key).group_name or "default"
        out.setdefault(group, []).append(key.to_user_string())
    return out


def plan_selection(defs: Any, instance: Any, group: str, rebuild_upstream: bool) -> tuple[Any, list[str]]:
    """The group, plus its upstream assets: all of them, or only those never materialized.

    Returns the selection and the upstream assets it leaves as they are.
    """
    import dagster as dg

    in_group = dg.AssetSelection.groups(group)
    upstream_sel = in_group.upstream().materializable()
    if rebuild_upstream:
        return upstream_sel, []
    graph = defs.resolve_asset_graph()
    upstream = upstream_sel.resolve(graph) - in_group.resolve(graph)
    missing = [k for k in upstream if instance.get_latest_materialization_event(k) is None]
    reused = sorted(k.to_user_string() for k in upstream if k not in missing)
    return in_group | dg.AssetSelection.assets(*missing), reused


def log_path_for(group: str) -> Path:
    from aegis.config import paths

    logs = paths().home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"materialize-{group}-{datetime.now(UTC):%Y%m%dT%H%M%S}.log"


def _terminal() -> IO[str]:
    """Where progress goes: the real terminal even while fd 1 points at the log file."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # click's CliRunner, a captured stream
        return sys.stdout
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")


@contextlib.contextmanager
def _output_to(log: IO[str]) -> Iterator[None]:
    """Send this process's stdout/stderr (Python objects and fds 1 and 2, so subprocesses too) to ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved: list[tuple[int, int]] = []
    for fd in (1, 2):
        try:
            saved.append((fd, os.dup(fd)))
            os.dup2(log.fileno(), fd)
        except OSError:  # no such fd (daemonized): the Python-level redirect still applies
            continue
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        log.flush()
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


class Progress:
    """Polls the run's events and prints what a person wants to see while it runs."""

    def __init__(self, instance: Any, nonce: str, out: IO[str]) -> None:
        self.instance, self.nonce, self.out = instance, nonce, out
        self.run_id: str | None = None
        self.seen = 0
        self.materialized: list[str] = []
        self.checks_passed = 0
        self.checks_failed: list[str] = []
        self.steps_failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="materialize-progress", daemon=True)

    def __enter__(self) -> "Progress":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.poll()  # whatever landed after the last tick

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            with contextlib.suppress(Exception):  # a busy SQLite file: the next tick reads it
                self.poll()

    def _find_run(self) -> str | None:
        from dagster import RunsFilter

        runs = self.instance.get_runs(filters=RunsFilter(tags={RUN_TAG: self.nonce}), limit=1)
        return runs[0].run_id if runs else None

    def poll(self) -> None:
        if self.run_id is None:
            self.run_id = self._find_run()
            if self.run_id is None:
                return
        events = self.instance.all_logs(self.run_id)
        for record in events[self.seen :]:
            self._show(record)
        self.seen = len(events)

    def _show(self, record: Any) -> None:
        event = record.dagster_event
        if event is None:
            return
        kind = event.event_type_value
        if kind == "ASSET_MATERIALIZATION":
            mat = event.event_specific_data.materialization
            name = mat.asset_key.to_user_string()
            self.materialized.append(name)
            shown = {k: v.value for k, v in mat.metadata.items() if k in SUMMARY_KEYS}
            extra = ", ".join(
                f"{k.split('/')[-1]} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in shown.items()
            )
            self._line(f"  ✓ {name}" + (f"  ({extra})" if extra else ""))
            if "summary" in mat.metadata:  # an asset's own one-line account (model quality, verdicts)
                self._line(f"      {mat.metadata['summary'].value}")
        elif kind == "ASSET_CHECK_EVALUATION":
            ev = event.event_specific_data
            name = f"{ev.asset_key.to_user_string()}:{ev.check_name}"
            if ev.passed:
                self.checks_passed += 1
            else:
                self.checks_failed.append(name)
                severity = getattr(getattr(ev, "severity", None), "value", "ERROR")
                self._line(f"  ✗ check {name} failed ({severity.lower()})")
        elif kind == "STEP_FAILURE":
            step = event.step_key or "?"
            self.steps_failed.append(step)
            error = getattr(event.event_specific_data, "error", None)
            message = error.message.strip().splitlines()[0] if error is not None and error.message else ""
            self._line(f"  ✗ step {step} failed: {message}")

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


@click.command()
@click.argument("group", required=False)
@click.option("--list", "list_groups", is_flag=True, help="List the asset groups and their assets.")
@click.option(
    "--upstream",
    "rebuild_upstream",
    is_flag=True,
    help="Also rebuild upstream assets that already exist (default: only those never materialized).",
)
def materialize(group: str | None, list_groups: bool, rebuild_upstream: bool) -> None:
    """Materialize asset group GROUP, and the upstream assets it needs that were never materialized.

    Each step does its work once: after `aegis materialize training`, `aegis materialize
    evaluation` judges that model rather than training another (pass --upstream for that).
    """
    import dagster as dg

    from pipelines.definitions import defs

    groups = groups_of(defs)
    if list_groups:
        for name, keys in groups.items():
            click.echo(f"{name} ({len(keys)} assets)")
            for key in keys:
                click.echo(f"  {key}")
        return
    if not group:
        raise click.UsageError("name a GROUP (see --list)")
    if group not in groups:
        raise click.UsageError(f"unknown group {group!r}; known: {', '.join(groups)}")
    assets: list[Any] = [*(defs.assets or []), *(defs.asset_checks or [])]
    instance = _instance()
    selection, reused = plan_selection(defs, instance, group, rebuild_upstream)
    log_path = log_path_for(group)
    term = _terminal()
    if reused:
        term.write(
            f"reusing {len(reused)} upstream asset(s) already materialized (--upstream rebuilds them)\n"
        )
    term.write(f"materializing group {group!r} (full log: {log_path})\n")
    term.flush()
    nonce = f"{group}-{os.getpid()}-{time.time_ns()}"
    started = time.monotonic()
    with (
        open(log_path, "a", encoding="utf-8") as log,
        Progress(instance, nonce, term) as progress,
        _output_to(log),
    ):
        result = dg.materialize(
            assets,
            selection=selection,
            resources=defs.resources,
            instance=instance,
            raise_on_error=False,
            tags={RUN_TAG: nonce},
        )
    elapsed = time.monotonic() - started
    failed_checks = len(progress.checks_failed)
    term.write(
        f"{len(progress.materialized)} asset(s) materialized, checks: {progress.checks_passed} passed, "
        f"{failed_checks} failed, in {elapsed:.1f} s\n"
    )
    if not result.success:
        term.write(f"run {result.run_id} FAILED; the full log is {log_path}\n")
        term.flush()
        click.echo(f"run {result.run_id} failed (steps: {', '.join(progress.steps_failed) or '?'})", err=True)
        sys.exit(1)
    term.write(f"run {result.run_id} succeeded; full log: {log_path}\n")
    term.flush()
