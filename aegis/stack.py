"""``aegis up`` (= ``make up``): the local stack in one command.

Starts, as child processes, the world server (``aegis world serve``),
``dagster dev`` (web server + daemon) with ``DAGSTER_HOME = AEGIS_HOME/dagster``
and a ``dagster.yaml`` written here for a small machine, and the MLflow UI
(``mlflow server`` over ``AEGIS_HOME/mlflow``).  With no clicks, the world lands
batches, the landing sensor ingests them and automation builds the marts.

The instance is tuned for a 2-core machine: SQLite storage; a run queue of two;
one ingest run at a time; one automation run at a time (its warehouse builds
write one DuckDB file, which takes a single writer); sensors and declarative
automation on; run monitoring on, so a run stuck starting or canceling is
closed; telemetry off.  Before Dagster starts, runs a previous session left in
flight with no live worker are closed (``pipelines.stack_recovery``): otherwise
the sensors would wait on them for ever.

Ctrl-C / SIGTERM stop every child (each in its own process group, so nothing
is left behind); if one child dies, the others are stopped and ``aegis up``
exits non-zero. A stop by the operator is recorded (:data:`STOP_MARKER` in
DAGSTER_HOME), so the next start marks the runs it interrupted canceled, not failed.

No Dagster import here (``aegis/`` stays free of it): Dagster runs as a child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import click
import httpx

from aegis.config import DAGSTER_PORT, MLFLOW_PORT, WORLD_PORT, AegisPaths, paths

REPO_ROOT = Path(__file__).resolve().parent.parent
CODE_LOCATION_MODULE = "pipelines.definitions"
RECOVERY_MODULE = "pipelines.stack_recovery"
# 2 cores: runs mostly wait on I/O and the world, but each is a process importing the code
# location. Three slots, with at most one of each kind below, so a burst of healing runs never
# starves ingest and the warehouse (which the canary judge and healing verification read).
MAX_CONCURRENT_RUNS = 3
HEALING_TAG = "aegis/area"  # healing_job runs carry aegis/area=healing: one at a time
INGEST_TAG = "aegis/ingest"  # the ingest job's runs: one at a time (they serialize on a lock anyway)
AUTOMATION_TAG = "aegis/automation"  # automation runs (warehouse builds): one DuckDB writer at a time
# The run queue's per-tag limits, the same in every profile (the prod instance config and the
# Helm values use these too): one ingest, one warehouse build (one writer of the warehouse file
# and of its published copy), one healing run at a time.
RUN_TAG_LIMITS: list[dict[str, object]] = [
    {"key": INGEST_TAG, "limit": 1},
    {"key": AUTOMATION_TAG, "limit": 1},
    {"key": HEALING_TAG, "value": "healing", "limit": 1},
]
SENSOR_WORKERS = 2
RUN_START_TIMEOUT_S = 180  # a run still STARTING after this is failed by run monitoring
RUN_MONITOR_POLL_S = 30
RECOVERY_TIMEOUT_S = 120.0
MLFLOW_WORKERS = 1  # the UI for one person; mlflow's default of 4 workers is 4 interpreters
# MLflow 3's server also starts a Huey job runner (GenAI scorers, periodic tasks) with several
# consumer processes of its own; Aegis runs no MLflow jobs, so the UI goes without them.
MLFLOW_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
STOP_TIMEOUT_S = 30.0  # dagster dev needs a while to stop its web server, daemon and run workers
# In DAGSTER_HOME: the operator stopped the stack (Ctrl-C / SIGTERM); read by pipelines.stack_recovery.
STOP_MARKER = "aegis-stack-stopped.json"
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
      - key: "{AUTOMATION_TAG}"
        limit: 1
      - key: "{HEALING_TAG}"
        value: "healing"
        limit: 1
run_monitoring:
  enabled: true
  start_timeout_seconds: {RUN_START_TIMEOUT_S}
  poll_interval_seconds: {RUN_MONITOR_POLL_S}
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
# no "join the community" dialog over the asset graph of a local, offline stack
nux:
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
    # Settings this child runs with unless the user's environment sets them (tuning, not policy).
    defaults: dict[str, str] = field(default_factory=dict)

    def start(self, env: dict[str, str]) -> None:
        # A new session: the terminal's Ctrl-C reaches us only, and we stop the whole group.
        self.proc = subprocess.Popen(
            self.argv, cwd=REPO_ROOT, env={**self.defaults, **env}, start_new_session=True
        )

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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_children(children: list[Child], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM every child's process group, wait for the whole group, then SIGKILL what is left.

    The whole group, not only the child: ``dagster dev`` may exit before its
    run workers have recorded that they were interrupted, and killing them then
    leaves runs ``STARTED`` for ever.
    """
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
            pass
        while _group_alive(child.proc.pid) and time.monotonic() < deadline and child.proc.poll() is not None:
            time.sleep(POLL_S)
        child.signal_group(signal.SIGKILL)
        child.proc.wait(timeout=5)


def _bin(name: str) -> str:
    """A console script beside this interpreter (the venv), so nothing depends on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def world_child(port: int, speed: float, players_per_shard: int, host: str = "127.0.0.1") -> Child:
    argv = [sys.executable, "-m", "aegis.cli", "world", "serve", "--port", str(port), "--speed", str(speed)]
    argv += ["--players-per-shard", str(players_per_shard), "--host", host]
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}
    probe = wildcard.get(host) or (f"[{host}]" if ":" in host else host)
    return Child("world", argv, f"http://{probe}:{port}", "/v1/health")


def dagster_child(port: int) -> Child:
    argv = [_bin("dagster"), "dev", "-m", CODE_LOCATION_MODULE, "-h", "127.0.0.1", "-p", str(port)]
    return Child("dagster", argv, f"http://127.0.0.1:{port}", "/server_info")


def mlflow_argv(p: AegisPaths, port: int) -> list[str]:
    """``mlflow server`` over the tracking database and artifacts the world model logs to.

    New experiments store artifacts under ``AEGIS_HOME/mlflow/artifacts`` (as
    the world model's resource does), and proxied artifact uploads land there
    too. Loopback only; mlflow's own host and CORS checks keep their defaults
    (localhost), so the UI is not reachable through a rebinding DNS name.
    """
    artifacts = p.mlflow_artifacts.as_uri()
    return [
        _bin("mlflow"),
        "server",
        "--backend-store-uri",
        p.mlflow_tracking_uri,
        "--default-artifact-root",
        artifacts,
        "--serve-artifacts",
        "--artifacts-destination",
        artifacts,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(MLFLOW_WORKERS),
    ]


def mlflow_child(p: AegisPaths, port: int) -> Child:
    return Child("mlflow", mlflow_argv(p, port), f"http://127.0.0.1:{port}", "/health", defaults=MLFLOW_ENV)


def build_children(
    p: AegisPaths,
    *,
    world_port: int,
    dagster_port: int,
    mlflow_port: int,
    speed: float,
    players_per_shard: int,
    with_dagster: bool = True,
    with_mlflow: bool = True,
    world_host: str = "127.0.0.1",
) -> list[Child]:
    children = [world_child(world_port, speed, players_per_shard, world_host)]
    if with_dagster:
        children.append(dagster_child(dagster_port))
    if with_mlflow:
        children.append(mlflow_child(p, mlflow_port))
    return children


def write_stop_marker(home: Path, signum: int, began: datetime, ended: datetime | None) -> Path:
    """Record in ``home`` (DAGSTER_HOME) that the operator stopped the stack, and when.

    Why: the runs this stop interrupts end failed (or stay in flight); on the
    next start :mod:`pipelines.stack_recovery` reads this and marks them
    canceled, as the operator meant. A crash writes nothing, so its runs stay failed.
    """
    home.mkdir(parents=True, exist_ok=True)
    doc = {
        "signal": signal.Signals(signum).name,
        "stopping_at": began.isoformat(),
        "stopped_at": ended.isoformat() if ended else None,
        "pid": os.getpid(),
    }
    target = home / STOP_MARKER
    tmp = home / f".{STOP_MARKER}.tmp"
    tmp.write_text(json.dumps(doc) + "\n")
    os.replace(tmp, target)
    return target


def recover_runs(env: dict[str, str]) -> None:
    """Close runs a previous session left in flight (see ``pipelines.stack_recovery``).

    A failure here is reported, not fatal: the stack still starts, and the
    message says what to look at.
    """
    try:
        done = subprocess.run(
            [sys.executable, "-m", RECOVERY_MODULE],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=RECOVERY_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        click.echo(f"run recovery did not finish in {RECOVERY_TIMEOUT_S:.0f} s; continuing", err=True)
        return
    for line in done.stdout.splitlines():
        click.echo(line)
    if done.returncode != 0:
        click.echo(
            f"run recovery failed (exit {done.returncode}); continuing:\n{done.stderr[-2000:]}", err=True
        )


@click.command()
@click.option("--no-dagster", is_flag=True, help="Do not start Dagster.")
@click.option("--no-mlflow", is_flag=True, help="Do not start the MLflow UI.")
@click.option("--world-port", type=click.IntRange(1, 65535), default=WORLD_PORT, show_default=True)
@click.option(
    "--world-host",
    default="127.0.0.1",
    show_default=True,
    help="World server bind address (docs/security.md).",
)
@click.option("--dagster-port", type=click.IntRange(1, 65535), default=DAGSTER_PORT, show_default=True)
@click.option("--mlflow-port", type=click.IntRange(1, 65535), default=MLFLOW_PORT, show_default=True)
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
def up(
    no_dagster: bool,
    no_mlflow: bool,
    world_port: int,
    world_host: str,
    dagster_port: int,
    mlflow_port: int,
    speed: float,
    players_per_shard: int,
) -> None:
    """Run the local stack (world server, Dagster, MLflow UI) until Ctrl-C."""
    ports = [world_port] + ([] if no_dagster else [dagster_port]) + ([] if no_mlflow else [mlflow_port])
    if len(set(ports)) != len(ports):
        raise click.UsageError(f"each service needs its own port; got {ports}")
    p = paths().ensure()
    from aegis.security.secrets import ensure_service_tokens

    ensure_service_tokens()  # the platform's own tokens (AEGIS_HOME/secrets), before any child starts
    env = _child_env(p, world_port, dagster_port, mlflow_port)
    children = build_children(
        p,
        world_port=world_port,
        dagster_port=dagster_port,
        mlflow_port=mlflow_port,
        speed=speed,
        players_per_shard=players_per_shard,
        world_host=world_host,
        with_dagster=not no_dagster,
        with_mlflow=not no_mlflow,
    )
    from aegis.alerts.config import alerting_children

    children += alerting_children(p, world_port)  # receiver, Prometheus, Alertmanager (when installed)

    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    exit_code = 0
    try:
        if not no_dagster:
            write_dagster_yaml(p.dagster_home)
            recover_runs(env)
        _start_children(children, env, stopping)
        _print_addresses(
            p, world_port, None if no_dagster else dagster_port, None if no_mlflow else mlflow_port
        )
        exit_code = _supervise(children, stopping)
    finally:
        _stop_stack(p, children, stopping, with_dagster=not no_dagster)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("stopped")
    if exit_code:
        sys.exit(exit_code)


def _child_env(p: AegisPaths, world_port: int, dagster_port: int, mlflow_port: int) -> dict[str, str]:
    """The environment every child starts with: this one, plus where the home and the services are."""
    env = dict(os.environ)
    env["AEGIS_HOME"] = str(p.home)
    env["DAGSTER_HOME"] = str(p.dagster_home)
    env["AEGIS_WORLD_PORT"] = str(world_port)
    env["AEGIS_DAGSTER_PORT"] = str(dagster_port)
    env["AEGIS_MLFLOW_PORT"] = str(mlflow_port)
    env.setdefault("AEGIS_PROFILE", "local")
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if x)
    return env


def _start_children(children: list[Child], env: dict[str, str], stopping: list[int]) -> None:
    """Start the children in order; a stop signal meanwhile starts no more."""
    for child in children:
        if stopping:
            break
        child.start(env)
        click.echo(f"started {child.name} (pid {child.proc.pid if child.proc else '?'})")


def _print_addresses(
    p: AegisPaths, world_port: int, dagster_port: int | None, mlflow_port: int | None
) -> None:
    """Where the stack's services and data are (a port of None: that service is not started)."""
    click.echo(f"AEGIS_HOME   {p.home}")
    click.echo(f"world API    http://127.0.0.1:{world_port}/v1/health")
    if dagster_port is not None:
        click.echo(f"Dagster UI   http://127.0.0.1:{dagster_port}  (DAGSTER_HOME {p.dagster_home})")
    if mlflow_port is not None:
        click.echo(f"MLflow UI    http://127.0.0.1:{mlflow_port}  (tracking {p.mlflow_tracking_uri})")
    click.echo(f"lake         {p.lake}   warehouse {p.warehouse}")
    click.echo("Ctrl-C stops everything.")


def _supervise(children: list[Child], stopping: list[int]) -> int:
    """Watch the children until a stop signal (0) or one of them dies (1); report each as it turns ready."""
    started = time.monotonic()
    while not stopping:
        dead = [c for c in children if not c.alive()]
        if dead:
            for c in dead:
                code = c.proc.returncode if c.proc else "?"
                click.echo(f"{c.name} exited (code {code}); stopping the stack", err=True)
            return 1
        for c in children:
            if not c.ready and c.check_ready():
                click.echo(f"{c.name} ready at {c.url}")
        if time.monotonic() - started > READY_TIMEOUT_S and not all(c.ready for c in children):
            slow = [c.name for c in children if not c.ready]
            click.echo(f"still waiting for {', '.join(slow)} after {READY_TIMEOUT_S:.0f} s", err=True)
            started = time.monotonic()
        time.sleep(POLL_S)
    return 0


def _stop_stack(p: AegisPaths, children: list[Child], stopping: list[int], *, with_dagster: bool) -> None:
    """Stop every child; a stop by the operator is recorded around it (:data:`STOP_MARKER`)."""
    click.echo("stopping ...")
    stop_began = datetime.now(UTC)
    if stopping and with_dagster:  # before the stop too: a stop cut short still counts
        write_stop_marker(p.dagster_home, stopping[0], stop_began, None)
    stop_children(children)
    if stopping and with_dagster:
        write_stop_marker(p.dagster_home, stopping[0], stop_began, datetime.now(UTC))
