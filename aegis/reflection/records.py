"""A :class:`~aegis.domain.ReflectionRecord` for every finished changeset.

The record puts side by side what was expected (the proposal's hypothesis and
the world model's predicted effect with its 90% interval) and what happened
(the canary judge's effect and interval per KPI, the verdict and the reason),
and for a change that failed names the class of cause, so the trail can be
counted by cause rather than read one by one:

``model_error``           a regressed KPI landed outside the predicted interval:
                          the world model did not see it coming
``guardrail_regression``  a guardrail regressed as the model allowed (or it made no
                          prediction for it): the ranking took a risk it should not have
``integrity_failure``     the integrity check after the apply failed (restored)
``stale_config``          the live config moved between the proposal and the apply
``inconclusive``          the exposure budget ran out without a decision
``policy_denied`` / ``simulation_failed``   stopped by a gate before anything applied
``rollout_failed``        a promotion wave failed (that wave was restored)
``operator``              rolled back by a person or another component (healing)
"""

from __future__ import annotations

from typing import Any

from aegis.changes.store import CanarySpecRecord, ChangeSetRecord, TransitionRecord
from aegis.domain import PromotionState, ReflectionRecord

S = PromotionState
# The world model predicts absolute deltas of fct_shard_kpis columns; the canary judge observes
# relative effects on its metrics (aegis.canary.metrics). A KPI column maps to the judge metric
# that moves with it (per-player metrics move like their count while players online hold).
KPI_TO_METRIC: dict[str, str] = {
    "abandon_rate": "abandon_rate",
    "abandons_late": "abandons_late_per_player",
    "deaths_late": "deaths_late_per_player",
    "quest_completions": "completions_per_player",
    "tick_p95_ms": "tick_p95_ms",
    "reconnect_rate": "reconnect_rate",
    "currency_sources": "currency_inflow_per_player",
    "net_inflow": "net_inflow_per_player",
    "price_index": "price_index",
    "churn_rate": "churn_rate",
    "players_online": "players_online",
    "sessions_started": "sessions_per_player",
}
LEVEL_BUCKETS = 24
MIN_LEVEL = 1e-9
STALE_MARKERS = ("changed since the proposal", "moved under us", "keeps moving", "diverged")


def relative_predictions(
    predicted: list[dict[str, Any]], kpis: Any, canary: str, buckets: int = LEVEL_BUCKETS
) -> list[dict[str, Any]]:
    """The predicted absolute KPI deltas as relative effects on the judge's metrics.

    Each delta is divided by the canary's own level of that KPI over its last
    ``buckets`` buckets before the change (what "relative to the counterfactual"
    means to the judge); KPIs without a judge metric or with a level of zero are
    left out.
    """
    if kpis is None or getattr(kpis, "empty", True) or "shard_id" not in kpis.columns:
        return []
    rows = kpis[kpis["shard_id"] == canary].sort_values("bucket_start").tail(buckets)
    out = []
    for p in predicted:
        metric = KPI_TO_METRIC.get(p["kpi"])
        if metric is None or p["kpi"] not in rows.columns or rows.empty:
            continue
        level = float(rows[p["kpi"]].astype(float).mean())
        if not abs(level) > MIN_LEVEL:
            continue
        lo, hi = sorted((p["lo"] / level, p["hi"] / level))
        out.append(
            {
                "kpi": metric,
                "mean": p["mean"] / level,
                "lo": lo,
                "hi": hi,
                "from_kpi": p["kpi"],
                "level": level,
            }
        )
    return out


def _predicted(spec: CanarySpecRecord | None) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Predicted effects comparable with the judge's (relative, by metric name)."""
    means: dict[str, float] = {}
    intervals: dict[str, tuple[float, float]] = {}
    doc = (spec.proposal or {}) if spec else {}
    key = "predicted_relative" if "predicted_relative" in doc else "predicted"
    for p in doc.get(key) or []:
        means[p["kpi"]] = float(p["mean"])
        intervals[p["kpi"]] = (float(p["lo"]), float(p["hi"]))
    return means, intervals


def _observed(
    spec: CanarySpecRecord | None,
) -> tuple[dict[str, float], dict[str, tuple[float, float]], list[dict[str, Any]]]:
    metrics = ((spec.judgement or {}).get("metrics") or []) if spec else []
    effects: dict[str, float] = {}
    intervals: dict[str, tuple[float, float]] = {}
    for m in metrics:
        if m.get("role") == "exposure" or m.get("effect") is None:
            continue  # the exposure check is not an effect of the change; None: no data for the metric
        effects[m["name"]] = float(m["effect"])
        lo, hi = (m.get("interval") or [None, None])[:2]
        if lo is not None and hi is not None:
            intervals[m["name"]] = (float(lo), float(hi))
    return effects, intervals, metrics


def root_cause(
    rec: ChangeSetRecord,
    reason: str,
    expected_intervals: dict[str, tuple[float, float]],
    observed: dict[str, float],
    metrics: list[dict[str, Any]],
    rollout: dict[str, Any] | None,
) -> str | None:
    """The class of cause of a failed changeset (None for a success)."""
    text = reason.lower()
    if rec.state == S.PROMOTED:
        return "rollout_failed" if (rollout or {}).get("status") == "stopped" else None
    if rec.state == S.REJECTED:
        if any(m in text for m in STALE_MARKERS):
            return "stale_config"
        if "simulation gate" in text:
            return "simulation_failed"
        return "policy_denied"
    if rec.state != S.ROLLED_BACK:
        return None
    if "integrity" in text:
        return "integrity_failure"
    if "promotion wave" in text:
        return "rollout_failed"
    if "verdict inconclusive" in text:
        return "inconclusive"
    if "verdict rollback" in text:
        regressed = [m["name"] for m in metrics if m.get("status") == "regressed"]
        for name in regressed:
            lo_hi = expected_intervals.get(name)
            if lo_hi is not None and name in observed and not (lo_hi[0] <= observed[name] <= lo_hi[1]):
                return "model_error"
        return "guardrail_regression"
    return "operator"


def build_reflection(
    rec: ChangeSetRecord, spec: CanarySpecRecord | None, transitions: list[TransitionRecord]
) -> ReflectionRecord:
    """The reflection of one finished changeset from what the store holds about it."""
    expected, expected_iv = _predicted(spec)
    observed, observed_iv, metrics = _observed(spec)
    final = [t for t in transitions if t.dst == rec.state]
    reason = (final[-1].reason if final else rec.reason) or ""
    verdict = None
    judgement = (spec.judgement if spec else None) or {}
    if judgement.get("verdict") in ("promote", "rollback", "inconclusive"):
        verdict = judgement["verdict"]
    cause = root_cause(rec, reason, expected_iv, observed, metrics, spec.rollout if spec else None)
    lessons: list[str] = []
    for kpi in sorted(set(expected) & set(observed)):
        lo, hi = expected_iv[kpi]
        inside = lo <= observed[kpi] <= hi
        lessons.append(
            f"{kpi}: predicted {expected[kpi]:+.4g} [{lo:+.4g}, {hi:+.4g}], observed {observed[kpi]:+.4g} "
            + ("(inside the interval)" if inside else "(OUTSIDE the interval)")
        )
    if cause == "model_error":
        lessons.append(
            "the world model missed a regression: its intervals are too narrow for this kind of change"
        )
    elif cause == "guardrail_regression":
        lessons.append(
            "a guardrail regressed within what the model allowed: rank such changes with more caution"
        )
    elif cause == "stale_config":
        lessons.append("the config moved between proposal and apply: propose against the live config")
    elif cause == "inconclusive":
        lessons.append("the budget ran out before a decision: the effect is smaller than the judge can see")
    why = reason
    judge_reason = str(judgement.get("reason") or "")
    if judge_reason and judge_reason not in why:
        why = f"{why} (judge: {judge_reason})" if why else judge_reason
    return ReflectionRecord(
        changeset_id=rec.id,
        outcome=rec.state,
        expected=expected,
        observed=observed,
        lessons=lessons,
        hypothesis=((spec.proposal or {}).get("hypothesis") if spec else None) or rec.changeset.rationale,
        expected_intervals=expected_iv,
        observed_intervals=observed_iv,
        verdict=verdict,
        why=why,
        root_cause=cause,  # type: ignore[arg-type]
    )


def reflection_summary(refl: ReflectionRecord) -> str:
    """One plain sentence for the ledger."""
    head = f"Reflection on {refl.changeset_id}: it ended {refl.outcome.value}"
    if refl.verdict:
        head += f" after a canary verdict of {refl.verdict}"
    if refl.root_cause:
        head += f"; root cause: {refl.root_cause.replace('_', ' ')}"
    misses = [
        k
        for k in refl.expected
        if k in refl.observed
        and not (refl.expected_intervals[k][0] <= refl.observed[k] <= refl.expected_intervals[k][1])
    ]
    if refl.expected and refl.observed:
        head += f"; {len(misses)} of {len(set(refl.expected) & set(refl.observed))} predicted effects missed their interval"
    return head + "."
