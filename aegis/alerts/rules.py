"""Prometheus alert rules, generated from the SLOs declared once in ``policies/data.json``.

``aegis.config.slos`` declares the objectives (availability and latency of the
server tick, the same SLIs as the dbt mart ``fct_slo_burn``), the burn-rate
alert windows, and the thresholds of the direct rules.  From it this module
writes one Prometheus rule file:

* **SLI recording rules** (as Sloth does): ``aegis:slo_sli_error:ratio_rate<w>``
  per shard, SLI and window, so each alert compares two cheap series.
  Availability: the share of the window the shard was down,
  ``1 - avg_over_time(aegis_world_shard_up[w])`` (a down shard ticks none).
  Latency: the share of ticks slower than ``threshold_ms``, from the world's
  tick histogram (``threshold_ms`` must be one of its bucket bounds).
* **Multiwindow, multi-burn-rate alerts** (Google SRE workbook, "Alerting on
  SLOs"): ``SLOBurnRateFast`` when both the 1h and the 5m error ratio exceed
  14.4x the budget, ``SLOBurnRateSlow`` for 6h and 30m above 6x, and the
  ``SLOBudgetTicket`` (3d/6h above 1x; not a page, Alertmanager does not send it
  to Aegis: the dbt mart's ``ticket`` column gives no alert either).
* **Direct rules** for symptoms a burn rate sees too late: ``ShardDown``,
  ``TickLatencyHigh``, ``EconomyInflation`` (gold created per online player
  per game minute far above its healthy band), ``TelemetryQuarantineSpike``
  (from the receiver's lake metrics) and ``SecurityRefusals``.

Every alert carries ``severity`` and, when it is about one shard, ``shard`` (the
target the healing playbooks act on).  Prometheus windows are wall-clock time;
the economy rule divides by the world's speed to speak in game minutes.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aegis.world.metrics import TICK_MS_BUCKETS

ENV_POLICIES = "AEGIS_POLICIES"
DATA_FILE = "data.json"
RULES_FILE = "aegis-rules.yml"
SLO_RECORD = "aegis:slo_sli_error:ratio_rate{window}"
OBJECTIVE_RECORD = "aegis:slo_objective:ratio"
GOLD_RECORD = "aegis:economy_gold_per_player_minute"
WORLD_JOB = "aegis-world"
RECEIVER_JOB = "aegis-alerts"
DURATION_RE = re.compile(r"^([0-9]+)(ms|s|m|h|d|w|y)$")
# Windows longer than this are recorded less often: a 3d average over 2 s samples is
# costly, and a 6h or 3d ratio barely moves in 30 s (Sloth evaluates them slowly too).
LONG_WINDOW_S = 3600
LONG_WINDOW_INTERVAL = "30s"
DURATION_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}

# The world's metrics these rules read (aegis/world/metrics.py), and the ones other parts export.
SHARD_UP = "aegis_world_shard_up"
TICK_HISTOGRAM = "aegis_world_shard_tick_ms"
PLAYERS_ONLINE = "aegis_world_players_online"
WORLD_SPEED = "aegis_world_speed"
CURRENCY_CREATED = "aegis_world_currency_created_total"  # amount created, by shard and currency
QUARANTINED_BATCHES = "aegis_lake_quarantined_batches_total"  # exported by the alert receiver
REFUSED_REQUESTS = "aegis_refused_requests_total"  # exported by the world server (auth)


class RulesError(ValueError):
    """The SLO declaration cannot be turned into rules; the message says what to fix."""


def duration_seconds(text: str) -> float:
    m = DURATION_RE.match(text)
    if not m:
        raise RulesError(f"{text!r} is not a Prometheus duration (e.g. 5m, 1h, 3d)")
    return int(m.group(1)) * DURATION_S[m.group(2)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Objective(_Spec):
    sli: Literal["availability", "latency"]
    target: float = Field(gt=0.0, lt=1.0)
    threshold_ms: float | None = None
    description: str = ""

    @model_validator(mode="after")
    def _threshold(self) -> Objective:
        if self.sli == "latency":
            if self.threshold_ms is None:
                raise ValueError("the latency objective needs threshold_ms")
            if self.threshold_ms not in TICK_MS_BUCKETS:
                raise ValueError(
                    f"threshold_ms {self.threshold_ms} is not a bucket bound of {TICK_HISTOGRAM} "
                    f"{TICK_MS_BUCKETS}: the ratio of good ticks cannot be read from the histogram"
                )
        return self

    @property
    def budget(self) -> float:
        return 1.0 - self.target


class BurnAlert(_Spec):
    alert: str = Field(min_length=1)
    long: str
    short: str
    burn_rate: float = Field(gt=0)
    severity: Literal["critical", "warning", "info"]
    page: bool

    @field_validator("long", "short")
    @classmethod
    def _duration(cls, v: str) -> str:
        duration_seconds(v)
        return v

    @model_validator(mode="after")
    def _order(self) -> BurnAlert:
        if duration_seconds(self.short) >= duration_seconds(self.long):
            raise ValueError(f"{self.alert}: short window {self.short} must be shorter than {self.long}")
        return self


class DirectRules(_Spec):
    shard_down_for: str
    tick_latency_quantile: float = Field(gt=0, lt=1)
    tick_latency_ms: float = Field(gt=0)
    tick_latency_window: str
    tick_latency_for: str
    gold_per_player_minute_healthy: tuple[float, float]
    gold_per_player_minute_alert: float = Field(gt=0)
    economy_window: str
    economy_for: str
    quarantined_batches: int = Field(ge=1)
    quarantine_window: str
    security_refusals: int = Field(ge=1)
    security_window: str

    @model_validator(mode="after")
    def _check(self) -> DirectRules:
        for name in ("shard_down_for", "tick_latency_window", "tick_latency_for", "economy_window"):
            duration_seconds(getattr(self, name))
        for name in ("economy_for", "quarantine_window", "security_window"):
            duration_seconds(getattr(self, name))
        lo, hi = self.gold_per_player_minute_healthy
        if not 0 <= lo <= hi < self.gold_per_player_minute_alert:
            raise ValueError(
                "gold_per_player_minute_alert must sit above the healthy band "
                f"{self.gold_per_player_minute_healthy}"
            )
        return self


class SloSpec(_Spec):
    """``aegis.config.slos`` of ``policies/data.json``."""

    objectives: list[Objective] = Field(min_length=1)
    burn_alerts: list[BurnAlert] = Field(min_length=1)
    direct: DirectRules
    evaluation_interval: str = "2s"
    scrape_interval: str = "2s"

    @model_validator(mode="after")
    def _unique(self) -> SloSpec:
        slis = [o.sli for o in self.objectives]
        if len(set(slis)) != len(slis):
            raise ValueError(f"each SLI is declared once; got {slis}")
        duration_seconds(self.evaluation_interval)
        duration_seconds(self.scrape_interval)
        return self

    def objective(self, sli: str) -> Objective:
        for o in self.objectives:
            if o.sli == sli:
                return o
        raise KeyError(sli)

    @property
    def windows(self) -> list[str]:
        """Every window an alert reads, shortest first."""
        ws = {w for a in self.burn_alerts for w in (a.long, a.short)}
        return sorted(ws, key=duration_seconds)


def policies_data_path() -> Path:
    from policies import POLICY_DIR

    root = os.environ.get(ENV_POLICIES)
    return (Path(root) if root else POLICY_DIR) / DATA_FILE


def load_slo_spec(path: Path | None = None) -> SloSpec:
    """Read and validate ``aegis.config.slos``; a clear :class:`RulesError` when it is wrong."""
    path = path or policies_data_path()
    try:
        doc = json.loads(path.read_text())
        raw = doc["aegis"]["config"]["slos"]
    except FileNotFoundError as exc:
        raise RulesError(f"{path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise RulesError(f"{path} is not valid JSON: {exc}") from exc
    except (KeyError, TypeError) as exc:
        raise RulesError(f"{path} has no aegis.config.slos: the SLOs are declared there") from exc
    try:
        return SloSpec.model_validate(raw)
    except ValueError as exc:
        raise RulesError(f"aegis.config.slos in {path} is invalid: {exc}") from exc


def _num(x: float) -> str:
    """A float as PromQL reads it, without binary noise (0.0144, not 0.014400000000000001)."""
    return repr(round(x, 12))


def _le(ms: float) -> str:
    # prometheus_client renders bucket bounds as floats: 500 -> "500.0"
    return repr(float(ms))


def sli_error_expr(objective: Objective, window: str) -> str:
    """PromQL for the error ratio of one SLI over one window, per shard."""
    if objective.sli == "availability":
        return f"1 - max by (shard) (avg_over_time({SHARD_UP}[{window}]))"
    assert objective.threshold_ms is not None
    total = f"sum by (shard) (rate({TICK_HISTOGRAM}_count[{window}]))"
    good = f'sum by (shard) (rate({TICK_HISTOGRAM}_bucket{{le="{_le(objective.threshold_ms)}"}}[{window}]))'
    return f"1 - ({good} / {total})"


def recording_rules(spec: SloSpec, long_windows: bool) -> list[dict[str, Any]]:
    """SLI error ratios per window: the short windows, or (``long_windows``) those over an hour."""
    rules: list[dict[str, Any]] = []
    for o in spec.objectives:
        if not long_windows:
            rules.append(
                {"record": OBJECTIVE_RECORD, "expr": f"vector({_num(o.target)})", "labels": {"sli": o.sli}}
            )
        for w in spec.windows:
            if (duration_seconds(w) > LONG_WINDOW_S) != long_windows:
                continue
            rules.append(
                {
                    "record": SLO_RECORD.format(window=w),
                    "expr": sli_error_expr(o, w),
                    "labels": {"sli": o.sli},
                }
            )
    return rules


def burn_alert_rules(spec: SloSpec) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for a in spec.burn_alerts:
        for o in spec.objectives:
            limit = _num(a.burn_rate * o.budget)
            long_ = f'{SLO_RECORD.format(window=a.long)}{{sli="{o.sli}"}}'
            short = f'{SLO_RECORD.format(window=a.short)}{{sli="{o.sli}"}}'
            rules.append(
                {
                    "alert": a.alert,
                    "expr": f"({long_} > {limit}) and ({short} > {limit})",
                    "labels": {
                        "severity": a.severity,
                        "sli": o.sli,
                        "windows": f"{a.long}/{a.short}",
                        "page": "true" if a.page else "false",
                    },
                    "annotations": {
                        "summary": (
                            f"{o.sli} error budget of shard {{{{ $labels.shard }}}} burning above "
                            f"{a.burn_rate:g}x over {a.long} and {a.short}"
                        ),
                        "description": (
                            f"{a.long} error ratio {{{{ $value | humanizePercentage }}}} (and {a.short} above "
                            f"{a.burn_rate:g}x too); the SLO allows "
                            f"{o.budget:.4%} ({o.target:.3%} {o.description})."
                        ),
                        "threshold": str(round(a.burn_rate, 6)),
                    },
                }
            )
    return rules


def _gold_record(d: DirectRules) -> dict[str, Any]:
    """Gold created per online player per game minute, per shard (wall-clock rate x world speed)."""
    gold_expr = (
        f'sum by (shard) (rate({CURRENCY_CREATED}{{currency="gold"}}[{d.economy_window}]))'
        f" / on (shard) (max by (shard) ({PLAYERS_ONLINE}) > 0)"
        f" * 60 / on () group_left () max({WORLD_SPEED} > 0)"
    )
    return {"record": GOLD_RECORD, "expr": gold_expr}


def _shard_down(d: DirectRules) -> dict[str, Any]:
    return {
        "alert": "ShardDown",
        "expr": f"max by (shard) ({SHARD_UP}) == 0",
        "for": d.shard_down_for,
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": "shard {{ $labels.shard }} is down",
            "description": f"{SHARD_UP} has been 0 for {d.shard_down_for}: no ticks, players disconnected.",
        },
    }


def _tick_latency_high(d: DirectRules) -> dict[str, Any]:
    return {
        "alert": "TickLatencyHigh",
        "expr": (
            f"histogram_quantile({_num(d.tick_latency_quantile)}, sum by (shard, le) "
            f"(rate({TICK_HISTOGRAM}_bucket[{d.tick_latency_window}]))) > {_num(d.tick_latency_ms)}"
        ),
        "for": d.tick_latency_for,
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": "server tick latency of shard {{ $labels.shard }} is high",
            "description": (
                f'p{d.tick_latency_quantile * 100:g} tick {{{{ $value | printf "%.0f" }}}} ms '
                f"over {d.tick_latency_window} (above {d.tick_latency_ms:g} ms players get dropped)."
            ),
            "threshold": _num(d.tick_latency_ms),
        },
    }


def _economy_inflation(d: DirectRules) -> dict[str, Any]:
    lo, hi = d.gold_per_player_minute_healthy
    return {
        "alert": "EconomyInflation",
        "expr": f"{GOLD_RECORD} > {_num(d.gold_per_player_minute_alert)}",
        "for": d.economy_for,
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": "gold created per player on shard {{ $labels.shard }} far above its band",
            "description": (
                '{{ $value | printf "%.1f" }} gold per online player per game minute; healthy '
                f"{lo:g}-{hi:g}, alert above {d.gold_per_player_minute_alert:g} (a duplication exploit?)."
            ),
            "threshold": _num(d.gold_per_player_minute_alert),
        },
    }


def _quarantine_spike(d: DirectRules) -> dict[str, Any]:
    return {
        "alert": "TelemetryQuarantineSpike",
        "expr": (
            f"sum by (shard) (increase({QUARANTINED_BATCHES}[{d.quarantine_window}])) "
            f">= {d.quarantined_batches}"
        ),
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "telemetry batches of shard {{ $labels.shard }} quarantined",
            "description": (
                f'{{{{ $value | printf "%.0f" }}}} batch(es) quarantined in {d.quarantine_window} '
                "(corrupt or invalid telemetry reaching the lake)."
            ),
            "threshold": str(d.quarantined_batches),
        },
    }


def _security_refusals(d: DirectRules) -> dict[str, Any]:
    return {
        "alert": "SecurityRefusals",
        "expr": (
            f"sum by (reason) (increase({REFUSED_REQUESTS}[{d.security_window}])) >= {d.security_refusals}"
        ),
        "labels": {"severity": "critical", "target": "world"},
        "annotations": {
            "summary": "requests refused by the world API ({{ $labels.reason }})",
            "description": (
                f'{{{{ $value | printf "%.0f" }}}} refused in {d.security_window}: '
                "a caller without valid credentials keeps trying."
            ),
            "threshold": str(d.security_refusals),
        },
    }


# The direct rules in file order: the gold recording first, then one alert per symptom.
DIRECT_RULES = (
    _gold_record,
    _shard_down,
    _tick_latency_high,
    _economy_inflation,
    _quarantine_spike,
    _security_refusals,
)


def direct_rules(spec: SloSpec) -> list[dict[str, Any]]:
    """Rules for symptoms a burn rate sees too late, from the thresholds in ``spec.direct``."""
    return [rule(spec.direct) for rule in DIRECT_RULES]


def rule_groups(spec: SloSpec | None = None) -> dict[str, Any]:
    """The rule file's document: SLI recordings, burn-rate alerts, direct rules."""
    spec = spec or load_slo_spec()
    interval = spec.evaluation_interval
    doc: dict[str, Any] = {
        "groups": [
            {"name": "aegis-slo-sli", "interval": interval, "rules": recording_rules(spec, False)},
            {
                "name": "aegis-slo-sli-long",
                "interval": LONG_WINDOW_INTERVAL,
                "rules": recording_rules(spec, True),
            },
            {"name": "aegis-slo-burn", "interval": interval, "rules": burn_alert_rules(spec)},
            {"name": "aegis-direct", "interval": interval, "rules": direct_rules(spec)},
        ]
    }
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                # the receiver reads it into Alert.value (Alertmanager carries no sample value)
                rule.setdefault("annotations", {})["value"] = "{{ $value }}"
    return doc


def render_rules(spec: SloSpec | None = None) -> str:
    header = "# Generated by `aegis alerts rules` from policies/data.json aegis.config.slos. Do not edit.\n"
    return header + yaml.safe_dump(rule_groups(spec), sort_keys=False, width=200)


def alert_names(spec: SloSpec | None = None) -> set[str]:
    """Every alert name the generated rules can raise."""
    return {r["alert"] for g in rule_groups(spec)["groups"] for r in g["rules"] if "alert" in r}


def write_rules(out_dir: Path, spec: SloSpec | None = None) -> Path:
    """Write the rule file into ``out_dir`` (atomically) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / RULES_FILE
    tmp = out_dir / f".{RULES_FILE}.tmp"
    tmp.write_text(render_rules(spec))
    os.replace(tmp, target)
    return target
