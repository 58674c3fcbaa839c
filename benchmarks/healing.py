"""Healing benchmark: fault -> detection -> containment -> recovery, and the receiver's alerts/s.

On a local stack it starts itself (``aegis world serve`` and ``aegis alerts serve`` as
subprocesses on free loopback ports, a fresh AEGIS_HOME), then for each fault kind,
``--repeats`` times:

- inject the fault through ``POST /v1/faults`` (a game day long: it cannot expire);
- **detected**: the alert is acknowledged (2xx) by the receiver. Alertmanager is not
  required: :class:`aegis.healing.probe.Probe` watches the symptoms every ``--poll`` s
  and posts the Alertmanager v4 webhook, as Alertmanager would;
- the healing sensor logic runs on its own clock, every 5 s as the Dagster sensor
  (``--mode sensor``, the tick phase is random relative to the alert), or right after
  the alert (``--mode push``, what a push from the receiver would give); launched
  incidents are healed in this process;
- **contained**: the first remediation applied (the incident's ``contained_at``);
- **recovered**: the SLI back inside its objective, read by this script on
  ``GET /v1/shards/{id}/signals`` (status up, tick <= 500 ms, the fault gone).

A Dagster run adds its run worker's start (a fresh interpreter importing the code
location) before the healing starts; the script measures that too (``--dagster-start``
times ``import pipelines.definitions`` in fresh interpreters) so the Dagster figure is
the in-process one plus that.

Then the receiver's sustained throughput with durability on (SQLite WAL,
``synchronous=FULL``, every alert committed before the 2xx): ``--clients`` concurrent
HTTP clients posting Alertmanager webhooks of 1 and of 100 alerts for ``--seconds``.

    .venv/bin/python benchmarks/healing.py [--repeats 5] [--speed 60] [--mode sensor|push|both]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

AEGIS = str(Path(sys.executable).with_name("aegis"))
LONG_MIN = 24 * 60.0
SENSOR_INTERVAL_S = 5.0
TICK_OBJECTIVE_MS = 500.0
STARTUP_S = 60.0
CASE_TIMEOUT_S = 120.0
KINDS = {
    "shard_crash": 1.0,
    "latency_spike": 30.0,
    "duplication_exploit": 20.0,
    "corrupt_telemetry": 1.0,
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url} exited early:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {STARTUP_S} s")


@contextmanager
def stack(home: Path, speed: float, players: int) -> Iterator[dict[str, Any]]:
    env = {**os.environ, "AEGIS_HOME": str(home), "AEGIS_PROFILE": "local"}
    env = {k: v for k, v in env.items() if not k.startswith("AEGIS_TOKEN_")}
    os.environ["AEGIS_HOME"] = str(home)
    from aegis.config import AegisPaths
    from aegis.security.secrets import ensure_service_tokens

    ensure_service_tokens(AegisPaths(home))
    wport, aport = free_port(), free_port()
    procs = []
    try:
        wlog, alog = home / "world.log", home / "alerts.log"
        world = subprocess.Popen(
            [AEGIS, "world", "serve", "--port", str(wport), "--speed", str(speed),
             "--players-per-shard", str(players), "--log-level", "warning"],
            env=env, stdout=wlog.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        procs.append(world)
        alerts = subprocess.Popen(
            [AEGIS, "alerts", "serve", "--port", str(aport)],
            env=env, stdout=alog.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        procs.append(alerts)
        wurl, aurl = f"http://127.0.0.1:{wport}", f"http://127.0.0.1:{aport}"
        wait_http(f"{wurl}/v1/health", world, wlog)
        wait_http(f"{aurl}/v1/health", alerts, alog)
        tok = {
            s: (home / "secrets" / f"{s}.token").read_text().strip()
            for s in ("control", "read", "faults", "alerts")
        }
        os.environ["AEGIS_TOKEN_CONTROL"] = tok["control"]
        yield {"world": wurl, "receiver": aurl, "tokens": tok, "home": AegisPaths(home)}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


class SensorLoop:
    """The sensor's decisions on a clock (every ``interval`` s, or on demand), healing in this process."""

    def __init__(self, world_url: str, interval: float | None) -> None:
        from aegis.healing.backend import RemediationBackend
        from aegis.healing.engine import Healer
        from aegis.healing.playbooks import load_playbooks
        from aegis.healing.store import IncidentStore

        self.store = IncidentStore()
        self.book = load_playbooks()
        self.backend = RemediationBackend(world_url)
        self.healer = Healer(self.backend, store=self.store, book=self.book)
        self.interval = interval
        self.stop = threading.Event()
        self.kick = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from aegis.healing.runner import decide

        if self.interval:
            self.stop.wait(random.uniform(0, self.interval))  # a sensor's phase is arbitrary
        while not self.stop.is_set():
            _, launch = decide(self.store, self.book)
            for inc in launch:
                self.healer.heal(inc.id)
            if self.interval:
                self.stop.wait(self.interval)
            else:
                self.kick.wait(0.2)
                self.kick.clear()

    def close(self) -> None:
        self.stop.set()
        self.kick.set()
        self.thread.join(timeout=120)
        self.backend.close()


def recovered(signals: dict[str, Any], kind: str) -> bool:
    if kind in signals["active_faults"]:
        return False
    if kind == "shard_crash":
        return bool(signals["status"] == "up")
    if kind == "latency_spike":
        return bool(signals["status"] == "up" and signals["tick_ms_last"] <= TICK_OBJECTIVE_MS)
    return True


def one_case(env: dict[str, Any], kind: str, mode: str, shard: str) -> dict[str, float | str]:
    from aegis.healing.models import TERMINAL
    from aegis.healing.probe import Probe

    tok = env["tokens"]
    probe = Probe(
        env["world"], env["receiver"], tok["alerts"], tok["read"], [shard],
        lake=env["home"] if kind == "corrupt_telemetry" else None,
    )  # fmt: skip
    probe.poll()
    hdr = {"Authorization": f"Bearer {tok['read']}"}
    loop = SensorLoop(env["world"], SENSOR_INTERVAL_S if mode == "sensor" else None)
    try:
        before = {i.id for i in loop.store.incidents()}
        t0 = time.time()
        r = httpx.post(
            f"{env['world']}/v1/faults",
            json={"kind": kind, "shard_id": shard, "duration_minutes": LONG_MIN, "magnitude": KINDS[kind]},
            headers={"Authorization": f"Bearer {tok['faults']}"},
            timeout=10,
        )
        r.raise_for_status()
        detected = None
        deadline = time.monotonic() + CASE_TIMEOUT_S
        while detected is None:
            if time.monotonic() > deadline:
                return {"kind": kind, "error": "not detected"}
            if probe.poll():
                detected = time.time()
                loop.kick.set()
            else:
                time.sleep(0.25)
        inc = None
        recovered_at = None
        while time.monotonic() < deadline:
            new = [i for i in loop.store.incidents() if i.id not in before]
            inc = new[0] if new else None
            if inc is not None and inc.contained_at is not None and recovered_at is None:
                sig = httpx.get(f"{env['world']}/v1/shards/{shard}/signals", headers=hdr, timeout=10).json()
                if recovered(sig, kind):
                    recovered_at = time.time()
            if inc is not None and inc.status in TERMINAL and recovered_at is not None:
                break
            time.sleep(0.1)
        if inc is None or inc.contained_at is None:
            return {"kind": kind, "error": f"not contained ({inc.status.value if inc else 'no incident'})"}
        return {
            "kind": kind,
            "shard": shard,
            "status": inc.status.value,
            "detect_s": detected - t0,
            "contain_s": inc.contained_at.timestamp() - t0,
            "alert_to_contain_s": inc.contained_at.timestamp() - detected,
            "recover_s": (recovered_at - t0) if recovered_at else float("nan"),
            "actions": ",".join(a.name for a in inc.actions if a.outcome.value == "applied"),
        }
    finally:
        loop.close()
        probe.close()
        # Cases run back to back: keep the launches under the sensor's rate limit
        # (max_launches_per_minute) so no case waits for another's slot, and let the shard settle.
        time.sleep(max(2.0, 60.0 / loop.book.limits.max_launches_per_minute))


def pct(values: list[float], q: float) -> float:
    vals = sorted(v for v in values if v == v)
    if not vals:
        return float("nan")
    k = (len(vals) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def receiver_throughput(env: dict[str, Any], seconds: float, clients: int, batch: int) -> dict[str, float]:
    url = env["receiver"] + "/v1/alerts/alertmanager"
    headers = {"Authorization": f"Bearer {env['tokens']['alerts']}"}
    done = [0] * clients
    errors = [0] * clients
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        with httpx.Client(headers=headers, timeout=30) as c:
            n = 0
            while time.monotonic() < stop:
                alerts = [
                    {
                        "status": "firing",
                        "labels": {"alertname": "TickLatencyHigh", "shard": f"bench-{i}", "n": f"{n}-{j}"},
                        "annotations": {},
                        "startsAt": "2026-12-06T00:00:00Z",
                        "endsAt": "0001-01-01T00:00:00Z",
                        "fingerprint": f"b{batch}-{i}-{n}-{j}",
                    }
                    for j in range(batch)
                ]
                body = {"version": "4", "status": "firing", "alerts": alerts}
                r = c.post(url, json=body)
                if r.status_code < 300:
                    done[i] += batch
                else:
                    errors[i] += 1
                n += 1

    t = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - t
    return {
        "batch": batch,
        "clients": clients,
        "alerts": sum(done),
        "errors": sum(errors),
        "alerts_per_s": sum(done) / elapsed,
    }


def dagster_start(n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import pipelines.definitions"], cwd=REPO, check=True, capture_output=True
        )
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--speed", type=float, default=60.0)
    ap.add_argument("--players", type=int, default=1000)
    ap.add_argument("--mode", choices=("sensor", "push", "both"), default="both")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--seconds", type=float, default=10.0, help="receiver throughput duration per batch size")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument(
        "--dagster-start", type=int, default=3, help="fresh-interpreter imports to time (0: skip)"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    modes = ("sensor", "push") if args.mode == "both" else (args.mode,)
    out: dict[str, Any] = {
        "speed": args.speed,
        "players_per_shard": args.players,
        "load_before": os.getloadavg()[0],
        "cores": os.cpu_count(),
        "cases": [],
    }
    with (
        tempfile.TemporaryDirectory(prefix="aegis-bench-healing-") as tmp,
        stack(Path(tmp), args.speed, args.players) as env,
    ):
        hdr = {"Authorization": f"Bearer {env['tokens']['read']}"}
        shards = [s["id"] for s in httpx.get(f"{env['world']}/v1/shards", headers=hdr, timeout=10).json()]
        n = 0
        for mode in modes:
            for kind in args.kinds.split(","):
                for _ in range(args.repeats):
                    # A new shard each time: the same problem on one shard 3 times in 30 minutes
                    # trips the circuit breaker (by design), which would escalate the 4th run.
                    shard = shards[n % len(shards)]
                    n += 1
                    row = {"mode": mode, **one_case(env, kind, mode, shard)}
                    out["cases"].append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
        out["receiver"] = [receiver_throughput(env, args.seconds, args.clients, b) for b in (1, 100)]
    if args.dagster_start:
        out["dagster_run_start_s"] = dagster_start(args.dagster_start)
    summary = []
    for mode in modes:
        for kind in args.kinds.split(","):
            rows = [r for r in out["cases"] if r["mode"] == mode and r["kind"] == kind and "error" not in r]
            fails = sum(1 for r in out["cases"] if r["mode"] == mode and r["kind"] == kind and "error" in r)
            s = {"mode": mode, "kind": kind, "n": len(rows), "failed": fails}
            for key in ("detect_s", "contain_s", "alert_to_contain_s", "recover_s"):
                vals = [float(r[key]) for r in rows]
                s[key] = (round(pct(vals, 0.5), 2), round(pct(vals, 0.95), 2))
            summary.append(s)
    out["summary"] = summary
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(
        f"speed {args.speed}, {args.players} players/shard, {args.repeats} repeats, load {out['load_before']:.1f} "
        f"on {out['cores']} cores; p50 / p95 seconds"
    )
    print(
        f"{'mode':<7} {'fault':<20} {'n':>2} {'detect':>13} {'contain':>13} {'alert->contain':>15} {'recover':>13}"
    )
    for s in summary:

        def f(k: str, s: dict[str, Any] = s) -> str:
            return f"{s[k][0]:.1f} / {s[k][1]:.1f}"

        print(
            f"{s['mode']:<7} {s['kind']:<20} {s['n']:>2} {f('detect_s'):>13} {f('contain_s'):>13} "
            f"{f('alert_to_contain_s'):>15} {f('recover_s'):>13}"
        )
    for r in out["receiver"]:
        print(
            f"receiver: {r['clients']} clients x {r['batch']} alert(s)/request: {r['alerts_per_s']:.0f} alerts/s ({r['errors']} errors)"
        )
    if "dagster_run_start_s" in out:
        print(
            f"Dagster run worker start (import pipelines.definitions, median): {out['dagster_run_start_s']:.2f} s"
        )


if __name__ == "__main__":
    main()
