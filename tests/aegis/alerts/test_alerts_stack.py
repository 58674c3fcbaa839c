"""The whole chain on loopback with the real parts: a metrics endpoint this test controls (it
demands the read token, as the world does) -> Prometheus (generated config and rules) ->
Alertmanager (generated config) -> the receiver -> the inbox. The endpoint's shard goes down:
ShardDown reaches the inbox with the right labels; it comes back: the alert is resolved.
Then the same chain over the real world server: a shard_crash fault injected through its API
is a ShardDown for that shard in the inbox."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from aegis.alerts.config import (
    ALERTMANAGER_DATA,
    PROMETHEUS_DATA,
    AlertingPorts,
    alertmanager_argv,
    alertmanager_binary,
    prometheus_argv,
    prometheus_binary,
    write_configs,
)
from aegis.alerts.inbox import InboxEntry
from aegis.config import AegisPaths
from tests.aegis.alerts.alerting_support import start_receiver, stop_receiver
from tests.support import free_port

pytestmark = pytest.mark.slow

READY_S = 60.0
ALERT_S = 45.0


class MetricsEndpoint:
    """A /metrics this test controls; refuses a scrape without the right bearer token."""

    def __init__(self, token: str) -> None:
        self.up = {"eu-7": 1, "eu-8": 1}
        self.unauthorized = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {token}":
                    endpoint.unauthorized += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                lines = ["# TYPE aegis_world_shard_up gauge"]
                lines += [f'aegis_world_shard_up{{shard="{s}"}} {v}' for s, v in endpoint.up.items()]
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wait(
    what: str,
    check: Callable[[], object],
    timeout_s: float,
    procs: list[subprocess.Popen[bytes]],
    logs: list[Path],
) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        for p, log in zip(procs, logs, strict=True):
            assert p.poll() is None, f"{p.args[0]} exited:\n{log.read_text()[-3000:]}"
        try:
            if check():
                return time.monotonic() - t0
        except (httpx.HTTPError, ValueError, KeyError):  # not up yet: no answer, or not the JSON yet
            pass
        time.sleep(0.25)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tails}")


@pytest.fixture
def binaries() -> tuple[str, str]:
    prom, am = prometheus_binary(), alertmanager_binary()
    if not (prom and am):
        msg = "apt-get install prometheus prometheus-alertmanager (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return prom, am


def test_a_shard_going_down_reaches_the_inbox_and_resolves(
    aegis_home: AegisPaths, tmp_path: Path, binaries: tuple[str, str]
) -> None:
    receiver = start_receiver(aegis_home)
    endpoint = MetricsEndpoint(receiver.token("read"))
    ports = AlertingPorts(
        world=endpoint.port,
        receiver=int(receiver.url.rsplit(":", 1)[1]),
        prometheus=free_port(),
        alertmanager=free_port(),
    )
    files = write_configs(aegis_home, ports)
    prom_bin, am_bin = binaries
    logs = [tmp_path / "prometheus.log", tmp_path / "alertmanager.log"]
    argvs = [
        prometheus_argv(prom_bin, files, tmp_path / PROMETHEUS_DATA, ports),
        alertmanager_argv(am_bin, files, tmp_path / ALERTMANAGER_DATA, ports),
    ]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for argv, log in zip(argvs, logs, strict=True):
            with log.open("wb") as out:
                procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))
        prom = f"http://127.0.0.1:{ports.prometheus}"
        am = f"http://127.0.0.1:{ports.alertmanager}"
        for base in (prom, am):
            _wait(f"{base}/-/ready", lambda b=base: httpx.get(f"{b}/-/ready", timeout=2).status_code == 200,
                  READY_S, procs, logs)  # fmt: skip

        def targets_up() -> bool:
            res = httpx.get(f"{prom}/api/v1/query", params={"query": "up"}, timeout=5).json()["data"][
                "result"
            ]
            return {r["metric"]["job"]: r["value"][1] for r in res} == {
                "aegis-world": "1",
                "aegis-alerts": "1",
            }

        # both scrapes authenticate with the read token from AEGIS_HOME/secrets
        _wait("both targets scraped", targets_up, READY_S, procs, logs)
        assert endpoint.unauthorized == 0

        endpoint.up["eu-7"] = 0

        def shard_down() -> list[InboxEntry]:
            return [e for e in receiver.inbox.firing("eu-7") if e.alert.name == "ShardDown"]

        took = _wait("ShardDown in the inbox", shard_down, ALERT_S, procs, logs)
        (entry,) = shard_down()
        a = entry.alert
        assert (a.name, a.source, a.target, a.severity.value) == (
            "ShardDown",
            "alertmanager",
            "eu-7",
            "critical",
        )
        assert a.labels["shard"] == "eu-7" and a.summary == "shard eu-7 is down" and a.value == 0.0
        assert entry.fingerprint and entry.known
        # with seconds of history every window is mostly "down": the burn-rate pages may join in
        assert {e.alert.name for e in receiver.inbox.firing("eu-7")} <= {
            "ShardDown",
            "SLOBurnRateFast",
            "SLOBurnRateSlow",
        }
        assert receiver.inbox.firing("eu-8") == []
        print(f"\nshard down -> alert in the inbox: {took:.1f} s")

        endpoint.up["eu-7"] = 1
        _wait(
            "the resolved notification",
            lambda: (e := receiver.inbox.get(entry.fingerprint)) is not None and e.status == "resolved",
            ALERT_S,
            procs,
            logs,
        )
        assert shard_down() == [] and receiver.inbox.firing("eu-8") == []
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        endpoint.close()
        stop_receiver(receiver)


def test_a_crash_injected_into_the_real_world_reaches_the_inbox(
    aegis_home: AegisPaths, tmp_path: Path, binaries: tuple[str, str]
) -> None:
    from aegis.domain import Fault, FaultKind
    from aegis.world.client import GameBackendClient
    from tests.support import WorldServer

    receiver = start_receiver(aegis_home)
    world = WorldServer(aegis_home.home, speed="60").start()
    ports = AlertingPorts(
        world=world.port,
        receiver=int(receiver.url.rsplit(":", 1)[1]),
        prometheus=free_port(),
        alertmanager=free_port(),
    )
    files = write_configs(aegis_home, ports)
    logs = [tmp_path / "prometheus.log", tmp_path / "alertmanager.log"]
    argvs = [
        prometheus_argv(binaries[0], files, tmp_path / PROMETHEUS_DATA, ports),
        alertmanager_argv(binaries[1], files, tmp_path / ALERTMANAGER_DATA, ports),
    ]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for argv, log in zip(argvs, logs, strict=True):
            with log.open("wb") as out:
                procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))
        prom = f"http://127.0.0.1:{ports.prometheus}"

        def world_scraped() -> bool:
            q = {"query": 'count(aegis_world_shard_up{job="aegis-world"} == 1)'}
            res = httpx.get(f"{prom}/api/v1/query", params=q, timeout=5).json()["data"]["result"]
            return bool(res) and int(res[0]["value"][1]) > 0

        _wait("the world's shards scraped", world_scraped, READY_S, procs, logs)
        with GameBackendClient(
            world.url, token=world.token("read"), faults_token=world.token("faults")
        ) as client:
            shard = client.shards()[0].id
            client.inject_fault(Fault(kind=FaultKind.SHARD_CRASH, shard_id=shard, duration_minutes=120))

        def crashed() -> list[InboxEntry]:
            return [e for e in receiver.inbox.firing(shard) if e.alert.name == "ShardDown"]

        took = _wait(f"ShardDown for {shard}", crashed, ALERT_S, procs, logs)
        (entry,) = crashed()
        assert entry.alert.labels["shard"] == shard and entry.alert.severity.value == "critical"
        assert all(e.alert.target == shard for e in receiver.inbox.firing() if e.alert.name == "ShardDown")
        print(f"\nshard_crash injected -> ShardDown in the inbox: {took:.1f} s")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        world.stop()
        stop_receiver(receiver)
