"""A stand-in for Prometheus + Alertmanager where Alertmanager is not installed.

It watches the symptoms the direct alert rules watch (``aegis.alerts.rules``:
shard down, tick latency above its objective, gold created per player far above
its band, quarantined telemetry) on the world's signals and the lake's ingest,
and delivers each new symptom to the alert receiver exactly as Alertmanager
would: an Alertmanager v4 webhook, authenticated with the ``alerts`` token. Used
by the end-to-end healing tests and the healing benchmark; the real chain
(Prometheus rules -> Alertmanager -> receiver) replaces it wherever Alertmanager
runs. Detection thresholds come from ``policies/data.json`` (the same numbers
the generated rules use).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from aegis.domain import utcnow

DEFAULT_TICK_MS = 500.0
# Net gold per active player per game minute above which the economy probe fires (the rules
# watch gold created per online player; the bound is the same number, a stricter test here).
DEFAULT_GOLD_RATE_ALERT = 10.0
WEBHOOK_PATH = "/v1/alerts/alertmanager"
# Consecutive polls a symptom must hold before it is reported: one slow tick is noise, two in a
# row is the shard (the generated rule waits tick_latency_for on a p99 instead).
CONFIRM = {"TickLatencyHigh": 2}


def _direct_thresholds() -> dict[str, Any]:
    try:
        from aegis.policy.engine import default_policies_dir

        data = json.loads((default_policies_dir() / "data.json").read_text())
        cfg = data["aegis"]["config"]
        return dict(cfg.get("slos", {}).get("direct", {}))
    except (OSError, KeyError, ValueError):
        return {}


@dataclass
class Probe:
    """Polls one world and posts Alertmanager webhooks for new symptoms to one receiver."""

    world_url: str
    receiver_url: str
    alerts_token: str | None
    read_token: str | None
    shards: list[str]
    tick_ms: float = DEFAULT_TICK_MS
    gold_rate_alert: float = DEFAULT_GOLD_RATE_ALERT
    lake: Any | None = None  # an AegisPaths: ingest pending batches and watch the quarantine
    _gold: dict[str, tuple[datetime, float]] = field(default_factory=dict)
    _fired: dict[str, tuple[str, str]] = field(default_factory=dict)  # fingerprint -> (alertname, shard)
    sent: list[tuple[str, str, datetime]] = field(default_factory=list)
    _streak: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        d = _direct_thresholds()
        self.tick_ms = float(d.get("tick_latency_ms", self.tick_ms))
        self.gold_rate_alert = float(d.get("gold_per_player_minute_alert", self.gold_rate_alert))
        headers = {"Authorization": f"Bearer {self.read_token}"} if self.read_token else {}
        self._world = httpx.Client(base_url=self.world_url, headers=headers, timeout=10.0)

    def close(self) -> None:
        self._world.close()

    def symptoms(self) -> list[tuple[str, str]]:
        """(alertname, shard) for every symptom present now."""
        out: list[tuple[str, str]] = []
        for sid in self.shards:
            s = self._world.get(f"/v1/shards/{sid}/signals").json()
            if s["status"] == "down":
                out.append(("ShardDown", sid))
            elif s["tick_ms_last"] > self.tick_ms:
                out.append(("TickLatencyHigh", sid))
            now = datetime.fromisoformat(s["game_time"])
            prev = self._gold.get(sid)
            self._gold[sid] = (now, float(s["gold_per_player"]))
            if prev is not None and now > prev[0]:
                minutes = (now - prev[0]).total_seconds() / 60.0
                rate = (float(s["gold_per_player"]) - prev[1]) / minutes
                if rate > self.gold_rate_alert:
                    out.append(("EconomyInflation", sid))
        if self.lake is not None:
            out.extend(("TelemetryQuarantineSpike", sid) for sid in self._quarantined())
        return out

    def _quarantined(self) -> set[str]:
        from aegis.lake.bronze import ingest_batches

        assert self.lake is not None
        report = ingest_batches(self.lake)
        hit: set[str] = set()
        for r in report.results:
            if r.status == "rejected" or r.quarantined_rows:
                hit.update(sid for sid in self.shards if f"shard={sid}/" in r.source_path.replace("\\", "/"))
        return hit

    def poll(self) -> list[tuple[str, str]]:
        """One evaluation: post newly firing symptoms, resolve the ones gone; returns those posted."""
        now = utcnow()
        seen = set(self.symptoms())
        # A symptom counts once it held on CONFIRM[name] consecutive polls (the rules' ``for:``).
        self._streak = {ns: self._streak.get(ns, 0) + 1 for ns in seen}
        present = {ns for ns in seen if self._streak[ns] >= CONFIRM.get(ns[0], 1)}
        new = {f"{n}|{s}|{now.timestamp()}": (n, s) for n, s in present if (n, s) not in self._fired.values()}
        gone = {fp: ns for fp, ns in self._fired.items() if ns not in present}
        new = {hashlib.sha256(k.encode()).hexdigest()[:16]: ns for k, ns in new.items()}
        alerts = [self._am(n, s, fp, "firing", now) for fp, (n, s) in new.items()]
        alerts += [self._am(n, s, fp, "resolved", now) for fp, (n, s) in gone.items()]
        if alerts:
            body: dict[str, Any] = {
                "version": "4",
                "status": "firing" if new else "resolved",
                "receiver": "aegis",
                "groupKey": "{}:{probe}",
                "truncatedAlerts": 0,
                "groupLabels": {},
                "commonLabels": {},
                "commonAnnotations": {},
                "externalURL": "http://127.0.0.1/probe",
                "alerts": alerts,
            }
            headers = {"Authorization": f"Bearer {self.alerts_token}"} if self.alerts_token else {}
            r = httpx.post(self.receiver_url + WEBHOOK_PATH, json=body, headers=headers, timeout=10.0)
            r.raise_for_status()
        for fp, ns in new.items():
            self._fired[fp] = ns
            self.sent.append((ns[0], ns[1], now))
        for fp in gone:
            self._fired.pop(fp, None)
        return list(new.values())

    def _am(self, name: str, shard: str, fp: str, status: str, now: datetime) -> dict[str, Any]:
        return {
            "status": status,
            "labels": {"alertname": name, "shard": shard, "severity": "critical"},
            "annotations": {"summary": f"{name} on {shard} (probe)"},
            "startsAt": now.isoformat().replace("+00:00", "Z"),
            "endsAt": now.isoformat().replace("+00:00", "Z")
            if status == "resolved"
            else "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1/probe",
            "fingerprint": fp,
        }
