"""The whole chain on loopback with the real parts: a metrics endpoint this test controls (it
demands the read token, as the world does) -> Prometheus (generated config and rules) ->
Alertmanager (generated config) -> the receiver -> the inbox. The endpoint's shard goes down:
ShardDown reaches the inbox with the right labels; it comes back: the alert is resolved.
Then the same chain over the real world server: a shard_crash fault injected through its API
is a ShardDown for that shard in the inbox."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from aegis.alerts.inbox import InboxEntry
from aegis.config import AegisPaths
from tests.aegis.alerts.alerting_support import (
    alerting_binaries,
    running_alerting,
    start_receiver,
    stop_receiver,
)

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


@pytest.fixture
def binaries() -> tuple[str, str]:
    return alerting_binaries()


def test_a_shard_going_down_reaches_the_inbox_and_resolves(
    aegis_home: AegisPaths, tmp_path: Path, binaries: tuple[str, str]
) -> None:
    receiver = start_receiver(aegis_home)
    endpoint = MetricsEndpoint(receiver.token("read"))
    try:
        with running_alerting(aegis_home, endpoint.port, receiver, tmp_path) as alerting:
            prom = alerting.prometheus_url

            def targets_up() -> bool:
                res = httpx.get(f"{prom}/api/v1/query", params={"query": "up"}, timeout=5).json()["data"][
                    "result"
                ]
                return {r["metric"]["job"]: r["value"][1] for r in res} == {
                    "aegis-world": "1",
                    "aegis-alerts": "1",
                }

            # both scrapes authenticate with the read token from AEGIS_HOME/secrets
            alerting.wait("both targets scraped", targets_up, READY_S)
            assert endpoint.unauthorized == 0

            endpoint.up["eu-7"] = 0

            def shard_down() -> list[InboxEntry]:
                return [e for e in receiver.inbox.firing("eu-7") if e.alert.name == "ShardDown"]

            took = alerting.wait("ShardDown in the inbox", shard_down, ALERT_S)
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
            alerting.wait(
                "the resolved notification",
                lambda: (e := receiver.inbox.get(entry.fingerprint)) is not None and e.status == "resolved",
                ALERT_S,
            )
            assert shard_down() == [] and receiver.inbox.firing("eu-8") == []
    finally:
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
    try:
        with running_alerting(aegis_home, world.port, receiver, tmp_path) as alerting:
            alerting.wait(
                "the world's shards scraped", lambda: world_scraped(alerting.prometheus_url), READY_S
            )
            with GameBackendClient(
                world.url, token=world.token("read"), faults_token=world.token("faults")
            ) as client:
                shard = client.shards()[0].id
                client.inject_fault(Fault(kind=FaultKind.SHARD_CRASH, shard_id=shard, duration_minutes=120))

            def crashed() -> list[InboxEntry]:
                return [e for e in receiver.inbox.firing(shard) if e.alert.name == "ShardDown"]

            took = alerting.wait(f"ShardDown for {shard}", crashed, ALERT_S)
            (entry,) = crashed()
            assert entry.alert.labels["shard"] == shard and entry.alert.severity.value == "critical"
            assert all(
                e.alert.target == shard for e in receiver.inbox.firing() if e.alert.name == "ShardDown"
            )
            print(f"\nshard_crash injected -> ShardDown in the inbox: {took:.1f} s")
    finally:
        world.stop()
        stop_receiver(receiver)


def world_scraped(prometheus_url: str) -> bool:
    """Prometheus holds at least one up shard of the world (its scrape authenticated)."""
    q = {"query": 'count(aegis_world_shard_up{job="aegis-world"} == 1)'}
    res = httpx.get(f"{prometheus_url}/api/v1/query", params=q, timeout=5).json()["data"]["result"]
    return bool(res) and int(res[0]["value"][1]) > 0
