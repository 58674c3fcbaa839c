"""`aegis up`'s parts that need no running stack: children, MLflow command line, stopping a process
group, argument errors. The whole stack runs in tests/e2e/test_e2e_stack.py."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from aegis.config import AegisPaths
from aegis.stack import Child, build_children, mlflow_argv, stop_children, up


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
