"""Helpers for the alerting tests: a real receiver (uvicorn on loopback) over a real inbox and token store,
and Alertmanager webhook bodies as Alertmanager 0.25 sends them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from aegis.alerts.inbox import AlertInbox
from aegis.alerts.receiver import create_app
from aegis.alerts.sns import SnsVerifier
from aegis.config import AegisPaths
from aegis.security.secrets import ensure_service_tokens
from aegis.security.tokens import TokenStore
from tests.support import free_port

STARTUP_S = 20.0


@dataclass
class Receiver:
    url: str
    inbox: AlertInbox
    store: TokenStore
    home: AegisPaths
    server: uvicorn.Server
    thread: threading.Thread

    def token(self, scope: str) -> str:
        return (self.home.secrets / f"{scope}.token").read_text().strip()

    def post(self, path: str, body: object, token: str | None, **headers: str) -> httpx.Response:
        hdrs = dict(headers)
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        return httpx.post(self.url + path, json=body, headers=hdrs, timeout=10.0)


def start_receiver(
    home: AegisPaths, verifier: SnsVerifier | None = None, sns_skip_verify: bool = False
) -> Receiver:
    ensure_service_tokens(home)
    inbox = AlertInbox(f"sqlite:///{home.alerts_db}")
    store = TokenStore(aegis_paths=home)
    app = create_app(inbox, store, verifier=verifier, sns_skip_verify=sns_skip_verify, aegis_paths=home)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_S
    while not server.started:
        assert time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.02)
    return Receiver(f"http://127.0.0.1:{port}", inbox, store, home, server, thread)


def stop_receiver(r: Receiver) -> None:
    r.server.should_exit = True
    r.thread.join(timeout=10)
    r.inbox.close()
    r.store.close()


def am_payload(*alerts: dict[str, object], status: str = "firing") -> dict[str, object]:
    """An Alertmanager v4 webhook body as Alertmanager 0.25 sends it."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="ShardDown"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "aegis",
        "groupLabels": {"alertname": "ShardDown"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts),
    }


def am_alert(
    name: str = "ShardDown",
    shard: str = "eu-1",
    fingerprint: str = "f00d",
    status: str = "firing",
    **labels: str,
) -> dict[str, object]:
    return {
        "status": status,
        "labels": {"alertname": name, "shard": shard, "severity": "critical", **labels},
        "annotations": {"summary": f"shard {shard} is down", "value": "0", "threshold": "1"},
        "startsAt": "2026-12-06T00:00:00.000Z",
        "endsAt": "2026-12-06T00:05:00.000Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": fingerprint,
    }


def sqlite_rows(db: Path, table: str) -> int:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return int(con.execute(f"select count(*) from {table}").fetchone()[0])
    finally:
        con.close()


def alerting_binaries() -> tuple[str, str]:
    """Prometheus and Alertmanager, or skip (fail under CI, which installs them)."""
    import os

    import pytest

    from aegis.alerts.config import alertmanager_binary, prometheus_binary

    prom, am = prometheus_binary(), alertmanager_binary()
    if not (prom and am):
        msg = "apt-get install prometheus prometheus-alertmanager (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return prom, am


@dataclass
class Alerting:
    """Real Prometheus + Alertmanager on loopback, on the generated configuration."""

    prometheus_url: str
    procs: list[Any]
    logs: list[Path]

    def wait(self, what: str, check: Callable[[], object], timeout_s: float) -> float:
        """Poll ``check`` until truthy; fail with both logs' tails if a binary exits or time runs out."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            for p, log in zip(self.procs, self.logs, strict=True):
                assert p.poll() is None, f"{p.args[0]} exited:\n{log.read_text()[-3000:]}"
            try:
                if check():
                    return time.monotonic() - t0
            except (httpx.HTTPError, ValueError, KeyError):  # not up yet: no answer, or not the JSON yet
                pass
            time.sleep(0.25)
        tails = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in self.logs)
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tails}")


@contextmanager
def running_alerting(
    home: AegisPaths, world_port: int, receiver: Receiver, workdir: Path
) -> Iterator[Alerting]:
    """Write the generated configs for these ports, start both binaries, stop them after."""
    import subprocess

    from aegis.alerts.config import (
        ALERTMANAGER_DATA,
        PROMETHEUS_DATA,
        AlertingPorts,
        alertmanager_argv,
        prometheus_argv,
        write_configs,
    )

    prom_bin, am_bin = alerting_binaries()
    ports = AlertingPorts(
        world=world_port,
        receiver=int(receiver.url.rsplit(":", 1)[1]),
        prometheus=free_port(),
        alertmanager=free_port(),
    )
    files = write_configs(home, ports)
    logs = [workdir / "prometheus.log", workdir / "alertmanager.log"]
    argvs = [
        prometheus_argv(prom_bin, files, workdir / PROMETHEUS_DATA, ports),
        alertmanager_argv(am_bin, files, workdir / ALERTMANAGER_DATA, ports),
    ]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for argv, log in zip(argvs, logs, strict=True):
            with log.open("wb") as out:
                procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))
        yield Alerting(f"http://127.0.0.1:{ports.prometheus}", procs, logs)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
