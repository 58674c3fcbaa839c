"""``aegis up`` (= ``make up``): the local stack in one command.

Starts, as child processes, the world server (``aegis world serve``) and
``dagster dev`` (web server + daemon) with ``DAGSTER_HOME = AEGIS_HOME/dagster``
and a ``dagster.yaml`` written here for a small machine: SQLite storage, a run
queue of two, one ingest at a time, sensors and declarative automation on,
telemetry off.  With no clicks, the world lands batches, the landing sensor
ingests them and automation builds the marts.  Ctrl-C / SIGTERM stop both
children (each in its own process group, so nothing is left behind); if either
child dies, the other is stopped and ``aegis up`` exits non-zero.

No Dagster import here (``aegis/`` stays free of it): Dagster runs as a child.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import click
import httpx

from aegis.config import DAGSTER_PORT, WORLD_PORT, paths

REPO_ROOT = Path(__file__).resolve().parent.parent
CODE_LOCATION_MODULE = "pipelines.definitions"
MAX_CONCURRENT_RUNS = 2  # 2 cores: a third run would only slow the other two
INGEST_TAG = "aegis/ingest"  # the ingest job's runs: one at a time (they serialize on a lock anyway)
SENSOR_WORKERS = 2
STOP_TIMEOUT_S = 20.0
POLL_S = 0.5
READY_TIMEOUT_S = 300.0
DEFAULT_SPEED = 60.0
DEFAULT_PLAYERS_PER_SHARD = 2000


def dagster_yaml(home: Path) -> str:
    """The local instance configuration (YAML text; JSON-compatible quoting of paths)."""
    storage = home / "storage"
    return f"""# Written by `aegis up`; regenerated on every start. Tuned for a 2-core machine.
storage:
  sqlite:
    base_dir: "{storage}"
local_artifact_storage:
  module: dagster.core.storage.root
  class: LocalArtifactStorage
  config:
    base_dir: "{home}"
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: {MAX_CONCURRENT_RUNS}
    tag_concurrency_limits:
      - key: "{INGEST_TAG}"
        limit: 1
sensors:
  use_threads: true
  num_workers: {SENSOR_WORKERS}
schedules:
  use_threads: true
  num_workers: 1
auto_materialize:
  enabled: true
  use_sensors: true
telemetry:
  enabled: false
"""


def write_dagster_yaml(home: Path) -> Path:
    """Write ``dagster.yaml`` into ``home`` (atomically) and return its path."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    tmp = home / ".dagster.yaml.tmp"
    tmp.write_text(dagster_yaml(home))
    os.replace(tmp, target)
    return target


@dataclass
class Child:
    name: str
    argv: list[str]
    url: str
    ready_path: str
    proc: subprocess.Popen[bytes] | None = None
    ready: bool = False

    def start(self, env: dict[str, str]) -> None:
        # A new session: the terminal's Ctrl-C reaches us only, and we stop the whole group.
        self.proc = subprocess.Popen(self.argv, cwd=REPO_ROOT, env=env, start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def check_ready(self) -> bool:
        if not self.ready and self.alive():
            try:
                self.ready = httpx.get(self.url + self.ready_path, timeout=2.0).status_code < 500
            except httpx.HTTPError:
                self.ready = False
        return self.ready


def stop_children(children: list[Child], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM every child's group, wait, then SIGKILL what is left."""
    for child in children:
        if child.alive():
            child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for child in children:
        if child.proc is None:
            continue
        try:
            child.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.signal_group(signal.SIGKILL)
            child.proc.wait(timeout=5)
        # The group may hold grandchildren (dagster's webserver, daemon, code server).
        child.signal_group(signal.SIGKILL)


def build_children(
    world_port: int, dagster_port: int, speed: float, players_per_shard: int, with_dagster: bool
) -> list[Child]:
    bin_dir = Path(sys.executable).parent
    children = [
        Child(
            "world",
            [
                sys.executable,
                "-m",
                "aegis.cli",
                "world",
                "serve",
                "--port",
                str(world_port),
                "--speed",
                str(speed),
                "--players-per-shard",
                str(players_per_shard),
            ],
            f"http://127.0.0.1:{world_port}",
            "/v1/health",
        )
    ]
    if with_dagster:
        dagster = bin_dir / "dagster"
        children.append(
            Child(
                "dagster",
                [
                    str(dagster) if dagster.exists() else "dagster",
                    "dev",
                    "-m",
                    CODE_LOCATION_MODULE,
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(dagster_port),
                ],
                f"http://127.0.0.1:{dagster_port}",
                "/server_info",
            )
        )
    return children


@click.command()
@click.option("--no-dagster", is_flag=True, help="Start the world server only.")
@click.option("--world-port", type=click.IntRange(1, 65535), default=WORLD_PORT, show_default=True)
@click.option("--dagster-port", type=click.IntRange(1, 65535), default=DAGSTER_PORT, show_default=True)
@click.option(
    "--speed",
    type=click.FloatRange(min=0.0),
    default=DEFAULT_SPEED,
    show_default=True,
    help="Game seconds per wall-clock second.",
)
@click.option(
    "--players-per-shard",
    type=click.IntRange(min=1),
    default=DEFAULT_PLAYERS_PER_SHARD,
    show_default=True,
    help="New worlds only.",
)
def up(no_dagster: bool, world_port: int, dagster_port: int, speed: float, players_per_shard: int) -> None:
    """Run the local stack (world server + Dagster) until Ctrl-C."""
    p = paths().ensure()
    env = dict(os.environ)
    env["AEGIS_HOME"] = str(p.home)
    env["DAGSTER_HOME"] = str(p.dagster_home)
    env["AEGIS_WORLD_PORT"] = str(world_port)
    env["AEGIS_DAGSTER_PORT"] = str(dagster_port)
    env.setdefault("AEGIS_PROFILE", "local")
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if x)
    if not no_dagster:
        write_dagster_yaml(p.dagster_home)
    children = build_children(world_port, dagster_port, speed, players_per_shard, not no_dagster)

    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    exit_code = 0
    try:
        for child in children:
            child.start(env)
            click.echo(f"started {child.name} (pid {child.proc.pid if child.proc else '?'})")
        click.echo(f"AEGIS_HOME   {p.home}")
        click.echo(f"world API    http://127.0.0.1:{world_port}/v1/health")
        if not no_dagster:
            click.echo(f"Dagster UI   http://127.0.0.1:{dagster_port}  (DAGSTER_HOME {p.dagster_home})")
        click.echo(f"lake         {p.lake}   warehouse {p.warehouse}")
        click.echo("Ctrl-C stops everything.")
        started = time.monotonic()
        while not stopping:
            dead = [c for c in children if not c.alive()]
            if dead:
                for c in dead:
                    code = c.proc.returncode if c.proc else "?"
                    click.echo(f"{c.name} exited (code {code}); stopping the stack", err=True)
                exit_code = 1
                break
            for c in children:
                if not c.ready and c.check_ready():
                    click.echo(f"{c.name} ready at {c.url}")
            if time.monotonic() - started > READY_TIMEOUT_S and not all(c.ready for c in children):
                slow = [c.name for c in children if not c.ready]
                click.echo(f"still waiting for {', '.join(slow)} after {READY_TIMEOUT_S:.0f} s", err=True)
                started = time.monotonic()
            time.sleep(POLL_S)
    finally:
        click.echo("stopping ...")
        stop_children(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("stopped")
    if exit_code:
        sys.exit(exit_code)
