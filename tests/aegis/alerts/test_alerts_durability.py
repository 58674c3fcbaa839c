"""kill -9 the receiver (`aegis alerts serve`, a real subprocess) in the middle of a burst: every
alert it acknowledged with a 2xx is in the inbox after a restart, and the restarted receiver
takes the rest. Also prints the sustained alerts/s with durability on (fsync per delivery)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx

from aegis.alerts.inbox import AlertInbox
from aegis.config import AegisPaths
from aegis.security.secrets import ensure_service_tokens
from tests.aegis.alerts.alerting_support import am_alert, am_payload
from tests.support import AEGIS, REPO, free_port

SENDERS = 4
BURST_S = 2.0
STARTUP_S = 60.0


def _serve(home: AegisPaths, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_TOKEN_")}
    env.update({"AEGIS_HOME": str(home.home), "AEGIS_PROFILE": "local"})
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [AEGIS, "alerts", "serve", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"receiver did not start:\n{log.read_text()[-3000:]}")


def test_kill_9_mid_burst_loses_no_acknowledged_alert(aegis_home: AegisPaths, tmp_path: Path) -> None:
    ensure_service_tokens(aegis_home)
    token = (aegis_home.secrets / "alerts.token").read_text().strip()
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/alerts/alertmanager"
    proc = _serve(aegis_home, port, tmp_path / "serve.log")
    acked: list[str] = []
    refused: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(i: int) -> None:
        n = 0
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=5) as client:
            while not stop.is_set():
                fp = f"burst-{i}-{n}"
                n += 1
                try:
                    resp = client.post(url, json=am_payload(am_alert(shard=f"s{i}", fingerprint=fp)))
                except httpx.HTTPError:
                    continue  # the receiver is gone: not acknowledged, the sender would retry
                with lock:
                    if 200 <= resp.status_code < 300:
                        acked.append(fp)
                    else:
                        refused.append(resp.status_code)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(BURST_S)
    with lock:
        before_kill = len(acked)
        elapsed = time.monotonic() - t0
    os.killpg(proc.pid, signal.SIGKILL)  # mid-burst: requests are in flight
    proc.wait(timeout=10)
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    print(
        f"\nreceiver sustained {before_kill / elapsed:.0f} alerts/s ({SENDERS} senders, fsync per delivery)"
    )
    assert refused == [] and len(acked) > 20, (len(acked), refused[:5])

    proc = _serve(aegis_home, port, tmp_path / "serve.log")  # restart on the same inbox
    try:
        inbox = AlertInbox(f"sqlite:///{aegis_home.alerts_db}")
        stored = {e.fingerprint for e in inbox.all()}
        missing = set(acked) - stored
        assert not missing, f"{len(missing)} acknowledged alert(s) lost, e.g. {sorted(missing)[:5]}"
        # the restarted receiver takes new alerts on the same inbox
        resp = httpx.post(
            url,
            json=am_payload(am_alert(fingerprint="after-restart")),
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert resp.status_code == 200 and inbox.get("after-restart") is not None
        inbox.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
