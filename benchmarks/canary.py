"""Canary judge benchmark: the sequential judge beside a Kayenta-style judge on the same scenarios.

    .venv/bin/python benchmarks/canary.py [--seed 23] [--data PATH] [--every-hours 2] [--json OUT]

Scenarios come from a real world run (exploration off; three shards get real
parameter changes after 60 game hours; :func:`aegis.canary.scenarios.world_kpis`),
by default a FRESH seed, not the test fixture's (seed 11) on which the margins
were chosen and the boundaries calibrated: the figures are out of sample. The
run is cached under benchmarks/out/. ``--data`` judges an existing parquet
instead (e.g. tests/data/kpis_world.parquet, in sample).

* A/A: every unchanged shard as a placebo canary at starts every
  ``--every-hours`` (placebo-in-space), controls by ``choose_controls``.
* harmful: an effect of each kind (deaths, abandons, completions, tick latency,
  reconnects, currency inflow, churn) at 1.5x, 2x and 3x its guardrail's margin,
  injected on placebo canaries from their start.
* tolerable: the same kinds at 0.5x the margin (inside it; a rollback is a cost).
* good: fewer deaths / fewer abandons / more completions (the target) by 2x and
  3x its margin, nothing harmed.
* good but breaks a guardrail: fewer abandons (target) with more deaths,
  currency inflow or latency at 2x the margin.
* real: the world run's three real parameter changes.

Per judge: false-rollback rate (A/A), harmful changes caught (rolled back),
harm promoted, good promoted, and the mean exposure (buckets, share of the
budget) used to decide. The Kayenta-style judge compares the canary's buckets
with the control shards' buckets over the same window with a Mann-Whitney U
test at 98% confidence at fixed hourly looks, fails a metric that differs in the
harmful direction by more than its margin, rolls back at the first failing look
and promotes at the budget; it runs twice, against the same controls as the
sequential judge and against only the controls of the canary's region (the
baseline Kayenta would deploy beside the canary).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aegis.canary.calibration import calibrate  # noqa: E402
from aegis.canary.judge import CanarySpec, JudgeSettings, choose_controls, judge  # noqa: E402
from aegis.canary.metrics import METRICS, ShardTable, _log, _ratio  # noqa: E402
from aegis.canary.scenarios import EFFECT_METRIC, Scenario, placebo_specs, world_kpis  # noqa: E402

OUT = REPO / "benchmarks" / "out"
PRE_HOURS = 60.0
POST_HOURS = 12.0
WARMUP_HOURS = 6.0  # the world's first hours (players logging in) are not history anyone would fit on
HISTORY_HOURS = 24.0
K_CONTROLS = 4
HARM_MULTIPLES = (1.5, 2.0, 3.0)
TOLERABLE_MULTIPLE = 0.5  # harm inside the margin: a rollback of these is a cost, not a catch
GOOD_MULTIPLES = (2.0, 3.0)
HARM_KINDS = ("deaths", "abandons", "completions", "latency", "reconnects", "inflow", "churn")
GOOD_KINDS = ("fewer_deaths", "fewer_abandons", "more_completions")
BREAKS = ("deaths", "inflow", "latency")
SPECS_PER_EFFECT = 8
JUDGES = ("sequential", "kayenta", "kayenta_region")
KAYENTA_CONFIDENCE = 0.98
KAYENTA_LOOK_BUCKETS = 12  # hourly
REAL_CHANGES: dict[str, dict[str, Any]] = {
    "eu-west-1": {"params": {"npc_aggression": 1.6}, "expect": "harmful", "targets": []},
    "us-east-2": {"params": {"quest_difficulty": [0.8] * 5}, "expect": "good", "targets": ["abandon_rate"]},
    "ap-southeast-3": {"params": {"source_multiplier": 1.6}, "expect": "harmful", "targets": []},
}


@dataclass
class Outcome:
    verdict: str
    buckets: int


def load(seed: int, data: Path | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    if data is not None:
        meta_path = data.with_suffix(".json")
        return pd.read_parquet(data), json.loads(meta_path.read_text())
    path = OUT / f"canary-world-seed{seed}.parquet"
    meta_path = path.with_suffix(".json")
    if not path.exists():
        print(
            f"running a world (seed {seed}, {PRE_HOURS + POST_HOURS:.0f} game hours) and materializing it ...",
            file=sys.stderr,
        )
        changes = {k: {"params": v["params"], "expect": v["expect"]} for k, v in REAL_CHANGES.items()}
        meta = world_kpis(seed, PRE_HOURS, POST_HOURS, changes, path)
        meta_path.write_text(json.dumps(meta, indent=2))
    return pd.read_parquet(path), json.loads(meta_path.read_text())


def abandons_factor(kpis: pd.DataFrame, spec: CanarySpec, harm: float) -> float:
    """Multiplier on abandons that moves the canary's abandon rate by ``harm`` (rate r: g = (1+h)(1-r)/(1-(1+h)r))."""
    rows = kpis[
        (kpis["shard_id"] == spec.canary)
        & (pd.to_datetime(kpis["bucket_start"], utc=True) < pd.Timestamp(spec.start))
    ]
    a = rows[["abandons_early", "abandons_mid", "abandons_late"]].sum().sum()
    r = a / (a + rows["quest_completions"].sum())
    target = 1.0 + harm
    return target * (1 - r) / (1 - target * r)


def column_size(kpis: pd.DataFrame, spec: CanarySpec, kind: str, metric_change: float) -> float:
    """The injected column size that changes the kind's metric by ``metric_change`` (relative, signed by the kind)."""
    if kind == "abandons":
        return abandons_factor(kpis, spec, metric_change) - 1.0
    if kind == "fewer_abandons":
        return 1.0 - abandons_factor(kpis, spec, -metric_change)
    return metric_change


def build(
    kpis: pd.DataFrame, meta: dict[str, Any], settings: JudgeSettings, every_hours: float
) -> list[Scenario]:
    """Every scenario of the benchmark (module docstring), in a fixed order with a fixed draw of canaries."""
    budget = settings.default_max_buckets
    changed = set(meta["changes"])
    unchanged = [s for s in sorted(set(kpis["shard_id"].astype(str))) if s not in changed]
    change = pd.Timestamp(meta["change_start"])
    specs = _placebo_specs(kpis, changed, unchanged, change, budget, every_hours)
    out = [Scenario(f"aa/{s.canary}@{s.start:%dT%H}", "aa", s, expect="not rolled back") for s in specs]
    rng = np.random.default_rng(0)

    def pick() -> list[CanarySpec]:
        chosen = rng.choice(len(specs), size=min(SPECS_PER_EFFECT, len(specs)), replace=False)
        return [specs[i] for i in chosen]

    # The draws happen in this order (harm, good, breaks): the scenarios depend on it.
    out += _harm_scenarios(kpis, settings, pick)
    out += _good_scenarios(kpis, settings, pick)
    out += _breaks_scenarios(kpis, settings, pick)
    out += _real_scenarios(kpis, unchanged, change, budget)
    return out


def _placebo_specs(
    kpis: pd.DataFrame,
    changed: set[str],
    unchanged: list[str],
    change: pd.Timestamp,
    budget: int,
    every_hours: float,
) -> list[CanarySpec]:
    """A/A canaries: every unchanged shard over the whole run, the changed ones before their change."""
    t0 = pd.to_datetime(kpis["bucket_start"], utc=True).min()
    first = t0 + timedelta(hours=WARMUP_HOURS + HISTORY_HOURS)
    end = pd.to_datetime(kpis["bucket_start"], utc=True).max() + timedelta(minutes=5)
    window = timedelta(minutes=5 * budget)
    every = timedelta(hours=every_hours)
    specs = list(placebo_specs(kpis, unchanged, first, end - window, every, budget, K_CONTROLS, changed))
    specs += list(
        placebo_specs(kpis, sorted(changed), first, change - window, every, budget, K_CONTROLS, changed)
    )
    return specs


def _harm_scenarios(
    kpis: pd.DataFrame, settings: JudgeSettings, pick: Callable[[], list[CanarySpec]]
) -> list[Scenario]:
    """Each harm kind at every multiple of its margin, then inside it (tolerable)."""
    out: list[Scenario] = []
    for kind in HARM_KINDS:
        margin = settings.kpis[EFFECT_METRIC[kind]].margin
        for mult in HARM_MULTIPLES:
            for s in pick():
                size = column_size(kpis, s, kind, mult * margin)
                out.append(
                    Scenario(
                        f"harm/{kind}x{mult}/{s.canary}",
                        "harmful",
                        s,
                        {kind: size},
                        expect=f"{EFFECT_METRIC[kind]} {mult}x margin",
                    )
                )
        for s in pick():
            size = column_size(kpis, s, kind, TOLERABLE_MULTIPLE * margin)
            out.append(
                Scenario(
                    f"tolerable/{kind}/{s.canary}", "tolerable", s, {kind: size}, expect="inside the margin"
                )
            )
    return out


def _good_scenarios(
    kpis: pd.DataFrame, settings: JudgeSettings, pick: Callable[[], list[CanarySpec]]
) -> list[Scenario]:
    """Each good kind (its metric the target) at every multiple of its margin, nothing harmed."""
    out: list[Scenario] = []
    for kind in GOOD_KINDS:
        metric = EFFECT_METRIC[kind]
        margin = settings.kpis[metric].margin
        for mult in GOOD_MULTIPLES:
            for s in pick():
                good = s.model_copy(update={"targets": [metric]})
                size = column_size(kpis, s, kind, mult * margin)
                out.append(
                    Scenario(
                        f"good/{kind}x{mult}/{s.canary}",
                        "good",
                        good,
                        {kind: size},
                        expect=f"{metric} improved",
                    )
                )
    return out


def _breaks_scenarios(
    kpis: pd.DataFrame, settings: JudgeSettings, pick: Callable[[], list[CanarySpec]]
) -> list[Scenario]:
    """Fewer abandons (the target) with one guardrail broken at 2x its margin."""
    out: list[Scenario] = []
    for breaks in BREAKS:
        margin = settings.kpis[EFFECT_METRIC[breaks]].margin
        for s in pick():
            good = s.model_copy(update={"targets": ["abandon_rate"]})
            effects = {
                "fewer_abandons": column_size(
                    kpis, s, "fewer_abandons", 2 * settings.kpis["abandon_rate"].margin
                ),
                breaks: 2 * margin,
            }
            out.append(
                Scenario(
                    f"breaks/{breaks}/{s.canary}",
                    "good_breaks_guardrail",
                    good,
                    effects,
                    expect=f"{breaks} breaks",
                )
            )
    return out


def _real_scenarios(
    kpis: pd.DataFrame, unchanged: list[str], change: pd.Timestamp, budget: int
) -> list[Scenario]:
    """The world run's real parameter changes, controls chosen on the history before them."""
    out: list[Scenario] = []
    for canary, change_def in REAL_CHANGES.items():
        history = kpis[pd.to_datetime(kpis["bucket_start"], utc=True) < change]
        controls = choose_controls(history, canary, unchanged, K_CONTROLS)
        spec = CanarySpec(
            canary=canary,
            controls=controls,
            start=change.to_pydatetime(),
            max_buckets=min(budget, int(POST_HOURS * 12)),
            targets=change_def["targets"],
        )
        out.append(Scenario(f"real/{canary}", "real", spec, expect=change_def["expect"]))
    return out


def kayenta(kpis: pd.DataFrame, spec: CanarySpec, settings: JudgeSettings) -> Outcome:
    """Kayenta-style: canary vs baseline buckets in the same window, Mann-Whitney at 98%, hourly looks."""
    names = settings.guardrails()
    table = ShardTable(kpis, sorted({c for n in names for c in METRICS[n].columns()}))
    start = pd.Timestamp(spec.start)
    post = np.flatnonzero(table.index >= start)[: spec.max_buckets]
    cols = [spec.canary, *spec.controls]
    series: dict[str, np.ndarray] = {}
    for name in names:
        m = METRICS[name]
        num = table.sum(m.numerator, cols)
        v = _ratio(num, table.sum(m.denominator, cols)) if m.denominator else num
        series[name] = _log(v) if m.log_scale else v
    looks = list(range(KAYENTA_LOOK_BUCKETS, len(post) + 1, KAYENTA_LOOK_BUCKETS))
    for n in looks:
        rows = post[:n]
        for name in names:
            pol = settings.kpis[name]
            m = METRICS[name]
            can = series[name][rows, 0]
            base = series[name][rows, 1:].ravel()
            can, base = can[np.isfinite(can)], base[np.isfinite(base)]
            if len(can) < 3 or len(base) < 3:
                continue
            p = stats.mannwhitneyu(can, base, alternative="two-sided").pvalue
            if p >= 1 - KAYENTA_CONFIDENCE:
                continue
            c_mean = np.exp(can).mean() if m.log_scale else can.mean()
            b_mean = np.exp(base).mean() if m.log_scale else base.mean()
            rel = c_mean / b_mean - 1 if b_mean else 0.0
            harm = {"lower": rel, "higher": -rel, "two_sided": abs(rel)}[pol.direction]
            if harm > pol.margin:
                return Outcome("rollback", n)
    return Outcome("promote" if len(post) >= spec.max_buckets else "inconclusive", len(post))


def summarize(results: list[dict[str, Any]], budget: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for judge_name in JUDGES:
        by: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in results:
            by[r["kind"]].append(r[judge_name])
        s: dict[str, Any] = {}
        aa = by["aa"]
        s["aa_runs"] = len(aa)
        s["false_rollback_rate"] = np.mean([o["verdict"] == "rollback" for o in aa]) if aa else float("nan")
        s["aa_promoted"] = np.mean([o["verdict"] == "promote" for o in aa]) if aa else float("nan")
        harm = by["harmful"]
        s["harmful_runs"] = len(harm)
        s["harm_caught"] = np.mean([o["verdict"] == "rollback" for o in harm])
        s["harm_inconclusive"] = np.mean([o["verdict"] == "inconclusive" for o in harm])
        s["harm_promoted"] = np.mean([o["verdict"] == "promote" for o in harm])
        caught = [o["buckets"] for o in harm if o["verdict"] == "rollback"]
        s["harm_exposure_buckets"] = float(np.mean(caught)) if caught else float("nan")
        s["harm_exposure_share"] = s["harm_exposure_buckets"] / budget
        good = by["good"]
        s["good_runs"] = len(good)
        s["good_promoted"] = np.mean([o["verdict"] == "promote" for o in good])
        promoted = [o["buckets"] for o in good if o["verdict"] == "promote"]
        s["good_exposure_buckets"] = float(np.mean(promoted)) if promoted else float("nan")
        tol = by["tolerable"]
        s["tolerable_runs"] = len(tol)
        s["tolerable_rolled_back"] = (
            np.mean([o["verdict"] == "rollback" for o in tol]) if tol else float("nan")
        )
        s["tolerable_promoted"] = np.mean([o["verdict"] == "promote" for o in tol]) if tol else float("nan")
        brk = by["good_breaks_guardrail"]
        s["breaks_runs"] = len(brk)
        s["breaks_rolled_back"] = np.mean([o["verdict"] == "rollback" for o in brk])
        s["breaks_promoted"] = np.mean([o["verdict"] == "promote" for o in brk])
        s["all_exposure_buckets"] = float(np.mean([o["buckets"] for k in by for o in by[k]]))
        out[judge_name] = {
            k: (round(float(v), 4) if isinstance(v, float | np.floating) else v) for k, v in s.items()
        }
    return out


def by_size(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Harm caught and promoted per (kind, multiple of the margin), sequential judge."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        if r["kind"] == "harmful":
            groups[r["name"].split("/")[1]].append(r["sequential"])
    return {
        k: {
            "caught": float(np.mean([o["verdict"] == "rollback" for o in v])),
            "promoted": float(np.mean([o["verdict"] == "promote" for o in v])),
            "buckets": float(np.mean([o["buckets"] for o in v])),
        }
        for k, v in sorted(groups.items())
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument(
        "--data", type=Path, default=None, help="judge this kpis parquet (its .json beside it) instead"
    )
    ap.add_argument("--every-hours", type=float, default=2.0, help="placebo start spacing")
    ap.add_argument(
        "--calibrate", action="store_true", help="also print the placebo calibration of each metric"
    )
    ap.add_argument("--json", dest="json_out", type=Path, default=None)
    args = ap.parse_args()
    kpis, meta = load(args.seed, args.data)
    settings = JudgeSettings.from_policy_data()
    scenarios = build(kpis, meta, settings, args.every_hours)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    seq_seconds = kay_seconds = 0.0
    for sc in scenarios:
        data = sc.kpis(kpis)
        t = time.perf_counter()
        j = judge(data, sc.spec, settings)
        seq_seconds += time.perf_counter() - t
        t = time.perf_counter()
        k = kayenta(data, sc.spec, settings)
        kay_seconds += time.perf_counter() - t
        region = sc.spec.canary.rsplit("-", 1)[0]
        same = [c for c in sc.spec.controls if c.rsplit("-", 1)[0] == region] or sc.spec.controls
        k_region = kayenta(data, sc.spec.model_copy(update={"controls": same}), settings)
        verdict = "inconclusive" if j.verdict == "continue" else j.verdict
        results.append(
            {
                "name": sc.name,
                "kind": sc.kind,
                "sequential": {"verdict": verdict, "buckets": j.buckets_observed, "reason": j.reason},
                "kayenta": {"verdict": k.verdict, "buckets": k.buckets},
                "kayenta_region": {"verdict": k_region.verdict, "buckets": k_region.buckets},
            }
        )
    summary = summarize(results, settings.default_max_buckets)
    real = {
        r["name"]: {
            "sequential": r["sequential"]["verdict"],
            "buckets": r["sequential"]["buckets"],
            "kayenta": r["kayenta"]["verdict"],
            "kayenta_region": r["kayenta_region"]["verdict"],
        }
        for r in results
        if r["kind"] == "real"
    }
    report: dict[str, Any] = {
        "data": str(args.data) if args.data else f"world seed {args.seed} ({meta['rows']} KPI rows)",
        "budget_buckets": settings.default_max_buckets,
        "scenarios": len(scenarios),
        "seconds": round(time.perf_counter() - started, 1),
        "judge_ms_per_scenario": round(1000 * seq_seconds / len(scenarios), 1),
        "kayenta_ms_per_scenario": round(1000 * kay_seconds / len(scenarios), 1),
        "machine": f"{platform.machine()} {platform.python_version()}",
        "summary": summary,
        "harm_by_size": by_size(results),
        "real": real,
    }
    if args.calibrate:
        aa_specs = [sc.spec for sc in scenarios if sc.kind == "aa"]
        report["calibration"] = calibrate(kpis, aa_specs, settings).model_dump()
    print_report(report)
    if args.json_out:
        args.json_out.write_text(json.dumps({**report, "results": results}, indent=2, default=float))
    return 0


def print_report(r: dict[str, Any]) -> None:
    s, k, kr = r["summary"]["sequential"], r["summary"]["kayenta"], r["summary"]["kayenta_region"]
    budget = r["budget_buckets"]
    print(
        f"canary judge benchmark: {r['data']}, {r['scenarios']} scenarios, budget {budget} buckets, {r['seconds']} s"
    )
    print(
        f"judge {r['judge_ms_per_scenario']} ms/scenario, kayenta-style {r['kayenta_ms_per_scenario']} ms/scenario ({r['machine']})"
    )
    rows = [
        ("A/A runs", "aa_runs", "{:.0f}", ""),
        ("false rollbacks (A/A)", "false_rollback_rate", "{:.1%}", "<= 5%"),
        ("A/A promoted at budget", "aa_promoted", "{:.1%}", ""),
        ("harmful runs", "harmful_runs", "{:.0f}", ""),
        ("harm caught (rolled back)", "harm_caught", "{:.1%}", ">= 95%"),
        ("harm inconclusive (rolls back at budget)", "harm_inconclusive", "{:.1%}", ""),
        ("harm promoted", "harm_promoted", "{:.1%}", "0"),
        ("mean exposure to catch harm (buckets)", "harm_exposure_buckets", "{:.1f}", f"<= {budget // 2}"),
        ("good runs", "good_runs", "{:.0f}", ""),
        ("good promoted", "good_promoted", "{:.1%}", ">= 85%"),
        ("mean exposure to promote good (buckets)", "good_exposure_buckets", "{:.1f}", ""),
        ("tolerable harm (0.5x margin) runs", "tolerable_runs", "{:.0f}", ""),
        ("tolerable harm rolled back", "tolerable_rolled_back", "{:.1%}", ""),
        ("tolerable harm promoted", "tolerable_promoted", "{:.1%}", ""),
        ("good-but-breaks-a-guardrail rolled back", "breaks_rolled_back", "{:.1%}", ""),
        ("good-but-breaks-a-guardrail promoted", "breaks_promoted", "{:.1%}", "0"),
        ("mean exposure, all scenarios (buckets)", "all_exposure_buckets", "{:.1f}", ""),
    ]
    print()
    print(
        "| figure | sequential judge | Kayenta-style (MWU 98%, hourly) | Kayenta-style, same-region baseline | goal |"
    )
    print("|---|---|---|---|---|")
    for label, key, fmt, goal in rows:
        print(f"| {label} | {fmt.format(s[key])} | {fmt.format(k[key])} | {fmt.format(kr[key])} | {goal} |")
    print()
    print("| harm (kind x margin) | caught | promoted | mean buckets |")
    print("|---|---|---|---|")
    for name, v in r["harm_by_size"].items():
        print(f"| {name} | {v['caught']:.0%} | {v['promoted']:.0%} | {v['buckets']:.1f} |")
    print()
    print("| real change | sequential | buckets | Kayenta-style | Kayenta-style, same region |")
    print("|---|---|---|---|---|")
    for name, v in r["real"].items():
        print(f"| {name} | {v['sequential']} | {v['buckets']} | {v['kayenta']} | {v['kayenta_region']} |")
    if "calibration" in r:
        c = r["calibration"]
        print()
        print(
            f"placebo calibration over {c['runs']} A/A runs (target {c['target']:.0%} of runs excluding zero):"
        )
        print(
            "| metric | placebo runs excluding zero | false rollbacks on this metric | ratio quantile |"
            " suggested variance_inflation |"
        )
        print("|---|---|---|---|---|")
        for m in c["kpis"]:
            print(
                f"| {m['name']} | {m['exclusion_rate']:.1%} | {m['false_rollback_rate']:.1%} |"
                f" {m['ratio_quantile']:.2f} | {m['variance_inflation']} |"
            )


if __name__ == "__main__":
    raise SystemExit(main())
