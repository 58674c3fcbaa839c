"""A real world server (subprocess, real HTTP) and lifecycles wired to it, for the changeset tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
AEGIS = str(Path(sys.executable).with_name("aegis"))
STARTUP_TIMEOUT_S = 90.0
SERVER_SPEED = "300"  # game seconds per wall second: 5 ticks a second


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class WorldServer:
    url: str
    home: Path
    proc: subprocess.Popen

    @property
    def world_db(self) -> Path:
        return self.home / "world" / "world.db"


def start_world(home: Path, port: int, log: Path) -> WorldServer:
    env = {**os.environ, "AEGIS_HOME": str(home), "AEGIS_PROFILE": "local"}
    cmd = [
        AEGIS,
        "world",
        "serve",
        "--port",
        str(port),
        "--speed",
        SERVER_SPEED,
        "--players-per-shard",
        "300",
        "--shards-per-region",
        "4",
        "--no-explore",
        "--log-level",
        "warning",
    ]
    fh = open(log, "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"world server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=1.0).status_code == 200:
                return WorldServer(url, home, proc)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_world(proc)
    raise RuntimeError(f"world server did not answer within {STARTUP_TIMEOUT_S}s: {log.read_text()[-2000:]}")


def stop_world(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorldServer]:
    root = tmp_path_factory.mktemp("world")
    server = start_world(root / "home", free_port(), root / "server.log")
    try:
        yield server
    finally:
        stop_world(server.proc)


@pytest.fixture(scope="session")
def policy_engine():
    from aegis.policy.engine import PolicyEngine

    return PolicyEngine()


@pytest.fixture
def make_lifecycle(world: WorldServer, aegis_home, policy_engine) -> Iterator[Callable[..., object]]:
    """Build a Lifecycle on the test's AEGIS_HOME (store, ledger, artifacts) against the module's server."""
    from aegis.changes.gate import HttpRunner
    from aegis.changes.lifecycle import Lifecycle, LifecycleConfig
    from aegis.changes.store import ChangeSetStore
    from aegis.ledger.ledger import Ledger
    from aegis.world.client import GameBackendClient

    made: list = []

    def make(backend=None, **config_kw):
        config = LifecycleConfig(simulation_hours=1.0, **config_kw)
        lc = Lifecycle(
            backend or GameBackendClient(world.url),
            store=ChangeSetStore(),
            policy=policy_engine,
            ledger=Ledger(),
            # the gate over real HTTP: POST /v1/shards/{id}/simulations on the server
            simulator=HttpRunner(world.url),
            config=config,
            aegis_paths=aegis_home,
        )
        made.append(lc)
        return lc

    yield make
    for lc in made:
        lc.store.close()
        lc.ledger.dispose()
        close = getattr(lc.backend, "close", None)
        if close:
            close()
