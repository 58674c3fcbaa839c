"""`aegis up`'s parts that need no running stack: children, MLflow command line, stopping a process
group, argument errors; and what a stop by the operator leaves for the next start (the stop marker,
runs it interrupted marked canceled), with real Dagster runs. The whole stack runs in
tests/e2e/test_e2e_stack.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from aegis.config import AegisPaths
from aegis.stack import (
    STOP_MARKER,
    Child,
    build_children,
    mlflow_argv,
    stop_children,
    up,
    write_dagster_yaml,
    write_stop_marker,
)
from pipelines.stack_recovery import (
    MAX_STOP,
    REASON,
    STOP_SLACK,
    interrupted_at,
    read_stop_marker,
    recover,
)
from tests.support import AEGIS, free_port


def test_mlflow_serves_aegis_home_on_loopback(tmp_path) -> None:
    p = AegisPaths(tmp_path / "home")
    argv = mlflow_argv(p, 5055)

    def opt(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert argv[1] == "server"
    assert opt("--backend-store-uri") == p.mlflow_tracking_uri
    assert opt("--default-artifact-root") == p.mlflow_artifacts.as_uri()
    assert opt("--artifacts-destination") == p.mlflow_artifacts.as_uri()
    assert (opt("--host"), opt("--port"), opt("--workers")) == ("127.0.0.1", "5055", "1")
    assert "--serve-artifacts" in argv and "--disable-security-middleware" not in argv


def test_children_follow_the_flags(tmp_path) -> None:
    p = AegisPaths(tmp_path)
    common = dict(world_port=1, dagster_port=2, mlflow_port=3, speed=60.0, players_per_shard=10)
    assert [c.name for c in build_children(p, **common)] == ["world", "dagster", "mlflow"]
    only_world = build_children(p, **common, with_dagster=False, with_mlflow=False)
    assert [c.name for c in only_world] == ["world"]
    (mlflow,) = [c for c in build_children(p, **common) if c.name == "mlflow"]
    assert mlflow.url == "http://127.0.0.1:3" and mlflow.ready_path == "/health"


def test_ports_must_differ_and_nothing_starts(tmp_path, monkeypatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("AEGIS_HOME", str(home))
    result = CliRunner().invoke(up, ["--world-port", "7001", "--dagster-port", "7001"])
    assert result.exit_code == 2 and "each service needs its own port" in result.output
    assert not home.exists()
    # the MLflow flags are part of the command's help
    ok = CliRunner().invoke(up, ["--help"])
    assert ok.exit_code == 0 and "--no-mlflow" in ok.output and "--mlflow-port" in ok.output


def test_stop_children_ends_the_whole_group(tmp_path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    # The child starts a grandchild that ignores SIGTERM, as a run worker busy in C code might.
    script = f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; exec sleep 120' & wait"
    child = Child("group", ["sh", "-c", script], "http://127.0.0.1:9", "/")
    child.start(dict(os.environ))
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "grandchild did not start"
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    started = time.monotonic()
    stop_children([child], timeout_s=2.0)
    assert time.monotonic() - started < 10
    assert not child.alive()
    time.sleep(0.2)
    try:
        os.kill(grandchild, 0)
        alive = Path(f"/proc/{grandchild}/stat").read_text().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        alive = False
    assert not alive, "the SIGTERM-ignoring grandchild survived"


def test_stop_children_leaves_a_clean_exit_alone() -> None:
    proc_child = Child(
        "quick", [sys.executable, "-c", "import time; time.sleep(30)"], "http://127.0.0.1:9", "/"
    )
    proc_child.start(dict(os.environ))
    stop_children([proc_child], timeout_s=10.0)
    assert proc_child.proc is not None and proc_child.proc.returncode == -signal.SIGTERM


# ------------------------------------------------------------ a stop by the operator -> canceled runs

# A real Dagster run in its own process: the asset says it started, then works until interrupted.
RUN_SCRIPT = """
import sys, time
from pathlib import Path
import dagster as dg

started = Path(sys.argv[1])

@dg.asset
def long_step() -> int:
    started.write_text("running")
    time.sleep(300)
    return 1

with dg.DagsterInstance.get() as instance:
    dg.materialize([long_step], instance=instance, raise_on_error=False)
"""


def _dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster"
    write_dagster_yaml(home)
    return home


def _start_run(home: Path, tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    script = tmp_path / "run_long_step.py"
    script.write_text(RUN_SCRIPT)
    started = tmp_path / f"{name}.started"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(started)], env={**os.environ, "DAGSTER_HOME": str(home)}
    )
    return proc, started


def _wait_started(proc: subprocess.Popen[bytes], started: Path, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not started.exists():
        assert proc.poll() is None, f"the run's process exited early ({proc.returncode})"
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.2)


def _only_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    (run,) = instance.get_runs()
    return run


def _messages(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(e.message or "" for e in instance.all_logs(run_id))


def test_a_run_the_operator_interrupted_ends_canceled(tmp_path) -> None:
    """SIGINT reaches a real run mid-step (as stopping the stack does): Dagster records it failed;
    with the stop marker, recovery reports it canceled, says why, and consumes the marker."""
    home = _dagster_home(tmp_path)
    proc, started = _start_run(home, tmp_path, "interrupted")
    try:
        _wait_started(proc, started)
        began = datetime.now(UTC)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        write_stop_marker(home, signal.SIGINT, began, datetime.now(UTC))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = _only_run(instance)
        assert run.status == dg.DagsterRunStatus.FAILURE  # what Dagster itself recorded
        assert interrupted_at(instance, run.run_id) is not None
        stop, closed = recover(instance, home)
        assert stop is not None and stop.signal == "SIGINT"
        assert [(c.run_id, c.was, c.now) for c in closed] == [(run.run_id, "FAILURE", "CANCELED")]
        assert _only_run(instance).status == dg.DagsterRunStatus.CANCELED
        assert "the operator stopped the local stack (SIGINT" in _messages(instance, run.run_id)
        assert not (home / STOP_MARKER).exists()
        assert recover(instance, home) == (None, [])  # idempotent, and the marker is gone


def test_orphans_of_a_stop_are_canceled_of_a_crash_failed(tmp_path) -> None:
    """A run whose worker was killed outright stays STARTED: after a clean stop (marker) it is
    canceled; after a crash (no marker) it is failed, and an interrupted failure stays failed."""
    outcomes = {}
    for case in ("stopped", "crashed"):
        home = _dagster_home(tmp_path / case)
        proc, started = _start_run(home, tmp_path / case, case)
        try:
            _wait_started(proc, started)
            began = datetime.now(UTC)
            proc.kill()  # SIGKILL: the worker records nothing
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if case == "stopped":
            write_stop_marker(home, signal.SIGTERM, began, datetime.now(UTC))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert _only_run(instance).status == dg.DagsterRunStatus.STARTED
            _, closed = recover(instance, home)
            run = _only_run(instance)
            outcomes[case] = (closed[0].now, run.status, _messages(instance, run.run_id))
    assert outcomes["stopped"][:2] == ("CANCELED", dg.DagsterRunStatus.CANCELED)
    assert "the operator stopped the local stack (SIGTERM" in outcomes["stopped"][2]
    assert outcomes["crashed"][:2] == ("FAILURE", dg.DagsterRunStatus.FAILURE)
    assert REASON in outcomes["crashed"][2]


def test_only_failures_inside_the_stop_window_are_reclassified(tmp_path) -> None:
    home = _dagster_home(tmp_path)
    proc, started = _start_run(home, tmp_path, "early")
    try:
        _wait_started(proc, started)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The stack was stopped well after this run was interrupted (e.g. a Ctrl-C of `aegis
    # materialize` an hour before): that failure is not the stop's doing.
    later = datetime.now(UTC) + timedelta(hours=1)
    write_stop_marker(home, signal.SIGINT, later, later + timedelta(seconds=5))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert recover(instance, home)[1] == []
        assert _only_run(instance).status == dg.DagsterRunStatus.FAILURE


def test_unreadable_marker_is_ignored(tmp_path, capsys) -> None:
    home = _dagster_home(tmp_path)
    (home / STOP_MARKER).write_text("{not json")
    assert read_stop_marker(home) is None
    assert "ignoring unreadable stop marker" in capsys.readouterr().err
    assert read_stop_marker(tmp_path / "absent") is None
    marker = write_stop_marker(home, signal.SIGTERM, datetime(2026, 1, 1, tzinfo=UTC), None)
    stop = read_stop_marker(home)
    assert marker == home / STOP_MARKER and stop is not None and stop.stopped_at is None
    lo, hi = stop.window  # a stop whose end was never written lasts at most the stop timeout
    assert hi - lo == STOP_SLACK * 2 + MAX_STOP


@pytest.mark.slow
def test_aegis_up_records_a_stop_by_sigint(tmp_path) -> None:
    """`aegis up` stopped by SIGINT (Ctrl-C) leaves the stop marker in DAGSTER_HOME; the next
    start's recovery consumes it."""
    home = tmp_path / "home"
    ports = {
        k: str(free_port()) for k in ("AEGIS_ALERTS_PORT", "AEGIS_PROMETHEUS_PORT", "AEGIS_ALERTMANAGER_PORT")
    }
    env = {**os.environ, **ports, "AEGIS_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    argv = [AEGIS, "up", "--no-mlflow", "--world-port", str(free_port()), "--dagster-port", str(free_port())]
    out = tmp_path / "up.log"
    with out.open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            while "started dagster" not in out.read_text():
                assert proc.poll() is None, out.read_text()
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=120) == 0, out.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    dagster_home = home / "dagster"
    stop = read_stop_marker(dagster_home)
    assert stop is not None and stop.signal == "SIGINT" and stop.stopped_at is not None
    assert stop.stopping_at <= stop.stopped_at
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.stack_recovery"],
        env={**env, "DAGSTER_HOME": str(dagster_home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert not (dagster_home / STOP_MARKER).exists()
