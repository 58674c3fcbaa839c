"""Helpers for the alerting tests: a real receiver (uvicorn on loopback) over a real inbox and token store,
and Alertmanager webhook bodies as Alertmanager 0.25 sends them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

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
