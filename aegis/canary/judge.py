"""The canary judge: an anytime-valid sequential comparison of a canary shard with its controls.

A change runs on one shard (the canary) from ``spec.start``; the other shards
(controls) run unchanged. After every KPI bucket the judge asks, for each
guardrail and target metric, how far the canary is from what it would have
been without the change, with an interval that stays valid however often it is
looked at. It is pure (pandas/numpy/scipy): the live sensor and the offline
``aegis canary judge`` replay run exactly this code, one look per bucket.

Per metric (``aegis.canary.metrics``):

1. **Scale.** Each KPI is put on a scale that suits it: rates as pooled rates
   (abandons / (abandons + completions)), counts per player online, heavy-tailed
   latency and player counts on the log scale.
2. **Counterfactual from the pre-change history (difference-in-differences with
   CUPED-style regression adjustment).** On the buckets before ``start`` the
   canary's series is regressed on its controls' pooled series (and, for tick
   latency and reconnects, on the canary's own saturation: load drives them
   far more than tuning does). The intercept is the canary's standing offset
   (DiD), the slopes take out what the controls share with it (diurnal cycle,
   world events) and the variance of the residuals is what is left. After
   ``start`` each bucket's residual against that fit is one observation of the
   change's effect.
3. **Anytime-valid interval.** The running mean of the post-change residuals
   gets a normal-mixture confidence sequence (Robbins' mixture; the mSPRT of
   Johari et al., "Always Valid Inference", and Howard et al. 2021), with the
   residuals' long-run (autocorrelation-robust, Newey-West) variance, times a
   per-KPI factor calibrated on placebo canaries (``aegis.canary.calibration``).
   The pre-period fit's own uncertainty is added with a fixed interval; alpha is
   split between the two and, Bonferroni, across the metrics (see
   :func:`alpha_per_metric`: each decision is one-sided), so the chance of ANY
   false rollback over ALL looks, and of promoting a change that harms any
   guardrail beyond its margin, is each at most ``alpha``.

Verdicts: ``rollback`` as soon as a metric's harm beyond its margin is
significant; ``promote`` once every guardrail is shown non-inferior (harm below
its margin) and every target improved, or at the exposure budget with every
guardrail non-inferior; ``inconclusive`` at the budget otherwise; ``continue``
while the data ends before any of these. An exposure (sample-ratio) check stops
a canary (``inconclusive``) whose players are significantly more than a
tolerance off their counterfactual from the controls (players moved to or from
the canary: its comparison is no longer fair), or whose buckets go missing.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from aegis.canary.metrics import (
    LEVEL_COLUMNS,
    METRICS,
    MetricDef,
    MetricFrame,
    ShardTable,
    metric_frame,
    required_columns,
)
from aegis.domain import CanaryResult, CanaryVerdict, ShardInfo

Verdict = Literal["promote", "rollback", "inconclusive", "continue"]
MetricStatus = Literal["ok", "regressed", "improved", "non_inferior", "undecided"]
Direction = Literal["lower", "higher", "two_sided"]
RollbackRule = Literal["interval", "estimate"]

POLICY_KEY = "canary"
EXPOSURE_METRIC = "exposure"
EXPOSURE_SOURCE = "players_online"
# Smallest variance a residual series may claim (a constant series would make any blip "significant").
MIN_VARIANCE = 1e-12
RIDGE = 1e-6
DAY_MINUTES = 1440
# Share of a day the fitted history must span before time-of-day terms enter (else they extrapolate).
DAY_COVERAGE = 0.95


class KpiPolicy(BaseModel):
    """How one metric is judged: which way is harm, the margin, and the placebo-calibrated scale."""

    model_config = ConfigDict(extra="forbid")

    direction: Direction
    margin: float = Field(gt=0, description="Largest tolerated harm, relative to the counterfactual level")
    guardrail: bool = True
    axiom: str = ""
    variance_inflation: float = Field(1.0, ge=1.0, description="Placebo calibration of the residual variance")


class JudgeSettings(BaseModel):
    """Alpha, exposure and per-metric margins; read from ``aegis.config.canary`` of ``policies/data.json``."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(gt=0, lt=1)
    pre_alpha_share: float = Field(
        gt=0, lt=1, description="Share of each metric's alpha for the pre-period fit"
    )
    min_buckets: int = Field(ge=1, description="Minimum exposure before any verdict")
    default_max_buckets: int = Field(ge=1, description="Default exposure budget in buckets")
    pre_buckets: int = Field(ge=2, description="Pre-change buckets used to fit the counterfactual")
    min_pre_buckets: int = Field(ge=2)
    tune_buckets: int = Field(ge=1, description="Look at which the mixture boundary is tightest")
    lag_buckets: int = Field(ge=0, description="Newey-West lags for the long-run variance")
    diurnal_harmonics: int = Field(
        ge=0, description="Time-of-day harmonics in the counterfactual (history >= a day)"
    )
    exposure_tolerance: float = Field(
        gt=0, lt=1, description="Allowed drift of the canary's players against their counterfactual"
    )
    max_missing_share: float = Field(ge=0, lt=1, description="Allowed share of canary buckets missing")
    rollback_on: RollbackRule = Field(
        "interval", description="What a significant regression beyond the margin takes (see status_of)"
    )
    kpis: dict[str, KpiPolicy]

    @field_validator("kpis")
    @classmethod
    def _known_metrics(cls, value: dict[str, KpiPolicy]) -> dict[str, KpiPolicy]:
        unknown = sorted(set(value) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown canary metrics {unknown}; known: {sorted(METRICS)}")
        return value

    @classmethod
    def from_policy_data(cls, data: dict[str, Any] | Path | None = None) -> JudgeSettings:
        """Settings from ``policies/data.json`` (or its parsed content), key ``aegis.config.canary``."""
        if data is None:
            from aegis.policy.engine import default_policies_dir
            from aegis.policy.rego_tests import DATA_FILE

            data = default_policies_dir() / DATA_FILE
        parsed: dict[str, Any] = json.loads(data.read_text()) if isinstance(data, Path) else data
        try:
            section = parsed["aegis"]["config"][POLICY_KEY]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"policy data has no aegis.config.{POLICY_KEY} section") from exc
        return cls.model_validate(section)

    def guardrails(self) -> list[str]:
        return [name for name, k in self.kpis.items() if k.guardrail]


class CanarySpec(BaseModel):
    """Which shard is the canary, its controls, when the change began, and the exposure budget.

    ``targets`` (optional) names the metrics the change means to improve; with
    none, a canary is promoted only at its budget, once nothing is harmful.
    """

    canary: str = Field(min_length=1)
    controls: list[str] = Field(min_length=1)
    start: datetime
    max_buckets: int = Field(ge=1)
    targets: list[str] = Field(default_factory=list)

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("start must carry a time zone (ISO-8601 with Z or +00:00)")
        return value


class MetricResult(BaseModel):
    """One metric at the look that decided (or the last look): relative effect and its interval."""

    name: str
    effect: float = Field(description="Relative change against the counterfactual (0.05 = 5% higher)")
    interval: tuple[float, float]
    status: MetricStatus
    role: Literal["guardrail", "target", "exposure"] = "guardrail"
    direction: Direction = "lower"
    margin: float = 0.0
    baseline: float | None = None


class Judgement(BaseModel):
    verdict: Verdict
    buckets_observed: int
    decided_at: datetime | None
    metrics: list[MetricResult]
    reason: str
    # Per look (bucket_start, per-metric (effect, lo, hi)): what the UI plots as confidence sequences.
    trace: list[dict[str, Any]] = Field(default_factory=list, exclude=True)

    def as_output(self) -> dict[str, Any]:
        """Exactly the object ``aegis canary judge --json`` prints."""
        return {
            "verdict": self.verdict,
            "buckets_observed": self.buckets_observed,
            "decided_at": None if self.decided_at is None else _iso(self.decided_at),
            "metrics": [
                {
                    "name": m.name,
                    "effect": _round(m.effect),
                    "interval": [_round(m.interval[0]), _round(m.interval[1])],
                    "status": m.status,
                }
                for m in self.metrics
            ],
            "reason": self.reason,
        }


class JudgeInputError(ValueError):
    """The KPI rows or the spec cannot be judged (missing columns, unknown shard, start outside the data)."""


def _iso(ts: datetime) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").isoformat().replace("+00:00", "Z")


def _round(x: float) -> float | None:
    """Six significant digits; ``None`` (JSON null) for a bound no data has narrowed yet."""
    return float(f"{x:.6g}") if math.isfinite(x) else None


# --------------------------------------------------------------------------- statistics


def mixture_half_width(n: np.ndarray, sigma: float, alpha: float, tune: int) -> np.ndarray:
    """Half-width of the two-sided normal-mixture confidence sequence for a mean after n observations.

    With mixing variance ``rho2 * sigma**2`` on the effect, the mixture
    likelihood ratio is a nonnegative martingale under the null; Ville's
    inequality turns ``P(ever >= 1/alpha) <= alpha`` into the boundary
    ``sigma * sqrt(2 (1 + n rho2) / (n^2 rho2) * (log(1/alpha) + log(1 + n rho2) / 2))``
    (Robbins 1970; Howard et al. 2021, eq. (14)), tightest near ``n = tune``.
    The one-sided alpha of each side is alpha/2: two-sided coverage 1 - alpha.
    """
    a = alpha / 2.0
    la = math.log(1.0 / a)
    rho2 = (2.0 * la + math.log(2.0 * la) + 1.0) / max(tune, 1)
    n = np.asarray(n, dtype=float)
    return sigma * np.sqrt(2.0 * (1.0 + n * rho2) / (n * n * rho2) * (la + 0.5 * np.log1p(n * rho2)))


def long_run_variance(resid: np.ndarray, lags: int) -> float:
    """Newey-West (Bartlett) long-run variance: bucket noise is autocorrelated (players persist)."""
    r = resid - resid.mean()
    m = len(r)
    var = float(r @ r) / m
    for lag in range(1, min(lags, m - 1) + 1):
        var += 2.0 * (1.0 - lag / (lags + 1)) * float(r[lag:] @ r[:-lag]) / m
    return max(var, float(r @ r) / m * 0.25, MIN_VARIANCE)


class MetricPath(BaseModel):
    """A metric's effect and interval at every look (arrays indexed by look), on the relative scale."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    effect: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    baseline: float
    sigma: float


def diurnal_terms(index: pd.DatetimeIndex, harmonics: int) -> np.ndarray:
    """Time-of-day harmonics: what the canary's diurnal cycle does that its controls' does not."""
    phase = 2.0 * np.pi * (index.hour * 60 + index.minute).to_numpy(float) / DAY_MINUTES
    cols = [f(k * phase) for k in range(1, harmonics + 1) for f in (np.sin, np.cos)]
    return np.column_stack(cols) if cols else np.zeros((len(index), 0))


def metric_path(
    frame: MetricFrame,
    post_index: pd.DatetimeIndex,
    start: datetime,
    mdef: MetricDef,
    policy: KpiPolicy,
    settings: JudgeSettings,
    alpha: float,
) -> MetricPath | None:
    """Fit the counterfactual on the pre-change buckets and follow the effect look by look.

    ``frame`` is :func:`aegis.canary.metrics.metric_frame`'s output. Only
    buckets before ``start`` enter the fit; each look's estimate uses the
    buckets up to it. ``None`` when the history is too short to fit.
    """
    ts = pd.Timestamp(start)
    d = frame.y - frame.offset
    usable = np.isfinite(d) & np.isfinite(frame.x).all(axis=1)
    pre_rows = np.flatnonzero(usable & (frame.index < ts))[-settings.pre_buckets :]
    if len(pre_rows) < settings.min_pre_buckets:
        return None
    x = frame.x
    span = frame.index[pre_rows[-1]] - frame.index[pre_rows[0]]
    if settings.diurnal_harmonics and span >= pd.Timedelta(minutes=DAY_MINUTES * DAY_COVERAGE):
        x = np.column_stack([x, diurnal_terms(frame.index, settings.diurnal_harmonics)])
    k = x.shape[1]
    raw = x[pre_rows]
    mu, sd = raw.mean(axis=0), raw.std(axis=0)
    sd[sd == 0] = 1.0
    xs_all = np.column_stack([np.ones(len(x)), (x - mu) / sd])
    xs = xs_all[pre_rows]
    y_pre = d[pre_rows]
    gram = xs.T @ xs + RIDGE * len(pre_rows) * np.diag([0.0, *([1.0] * k)])
    gram_inv = np.linalg.inv(gram)
    beta = gram_inv @ (xs.T @ y_pre)
    resid = y_pre - xs @ beta
    lags = min(settings.lag_buckets, len(pre_rows) // 4)
    sigma2 = long_run_variance(resid, lags) * policy.variance_inflation
    sigma = math.sqrt(sigma2)

    rows = frame.index.get_indexer(post_index)
    xp = np.where(rows[:, None] >= 0, xs_all[np.maximum(rows, 0)], np.nan)
    fitted = xp @ beta + np.where(rows >= 0, frame.offset[np.maximum(rows, 0)], np.nan)
    yp = np.where(rows >= 0, frame.y[np.maximum(rows, 0)], np.nan)
    r = yp - fitted
    ok = np.isfinite(r)
    r = np.where(ok, r, 0.0)
    counts = np.cumsum(ok)
    n = np.maximum(counts, 1)
    mean_r = np.cumsum(r) / n
    mean_fit = np.cumsum(np.where(ok, fitted, 0.0)) / n
    # Uncertainty of the counterfactual itself (fixed once the pre-period is): the fit's
    # covariance at the mean post-change covariate row, at the pre-period share of alpha.
    xbar = np.cumsum(np.where(ok[:, None], xp, 0.0), axis=0) / n[:, None]
    se_fit = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", xbar, sigma2 * gram_inv, xbar), 0.0))
    z_pre = NormalDist().inv_cdf(1.0 - alpha * settings.pre_alpha_share / 2.0)
    hw = (
        mixture_half_width(n, sigma, alpha * (1.0 - settings.pre_alpha_share), settings.tune_buckets)
        + z_pre * se_fit
    )
    lo, hi = mean_r - hw, mean_r + hw
    pre_level = float(np.mean(frame.y[pre_rows]))
    if mdef.log_scale:
        effect, lo_rel, hi_rel = np.expm1(mean_r), np.expm1(lo), np.expm1(hi)
        baseline = float(np.exp(pre_level))
    else:
        level = np.where(np.abs(mean_fit) > 0, np.abs(mean_fit), abs(pre_level) or 1.0)
        effect, lo_rel, hi_rel = mean_r / level, lo / level, hi / level
        baseline = pre_level
    none = counts == 0
    return MetricPath(
        name=mdef.name,
        effect=np.where(none, np.nan, effect),
        lo=np.where(none, -np.inf, lo_rel),
        hi=np.where(none, np.inf, hi_rel),
        baseline=baseline,
        sigma=sigma,
    )


def harm_bounds(lo: float, hi: float, direction: Direction) -> tuple[float, float]:
    """(smallest, largest) plausible harm: an increase is harm for 'lower' metrics, a decrease for 'higher'."""
    if direction == "lower":
        return lo, hi
    if direction == "higher":
        return -hi, -lo
    # two-sided: harm is the distance from zero either way
    smallest = 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))
    return smallest, max(abs(lo), abs(hi))


def exposure_broken(path: MetricPath | None, i: int, tolerance: float) -> bool:
    """Sample-ratio check: the canary's players are SIGNIFICANTLY more than ``tolerance`` off their counterfactual."""
    if path is None or not 0 <= i < len(path.effect):
        return False
    return harm_bounds(float(path.lo[i]), float(path.hi[i]), "two_sided")[0] > tolerance


def status_of(
    effect: float,
    lo: float,
    hi: float,
    policy: KpiPolicy,
    target: bool,
    rollback_on: RollbackRule = "interval",
) -> MetricStatus:
    """Regressed: a regression beyond the margin is significant; improved (targets): benefit significant;
    non-inferior: all plausible harm is inside the margin; undecided otherwise.

    ``rollback_on`` says what "a regression beyond its margin is significant" takes:
    ``interval``, the whole interval beyond the margin (harm > margin shown);
    ``estimate``, a significant regression (harm > 0 shown) whose estimate is
    beyond the margin. Both keep a false rollback under no change at most alpha
    (each needs harm > 0 shown); ``estimate`` catches harm just past the margin
    far sooner, at the price of sometimes rolling back a change whose true harm
    is just inside it.
    """
    least_harm, most_harm = harm_bounds(lo, hi, policy.direction)
    point_harm = harm_bounds(effect, effect, policy.direction)[1] if math.isfinite(effect) else 0.0
    if least_harm > policy.margin or (
        rollback_on == "estimate" and least_harm > 0 and point_harm > policy.margin
    ):
        return "regressed"
    if target and policy.direction != "two_sided" and most_harm < 0:
        return "improved"
    if most_harm < policy.margin:
        return "non_inferior"
    return "undecided"


# --------------------------------------------------------------------------- the judge


def validate(kpis: pd.DataFrame, spec: CanarySpec, settings: JudgeSettings) -> pd.DataFrame:
    """Check the rows and the spec; return the rows with a UTC ``bucket_start``. Raises JudgeInputError."""
    needed = required_columns([*settings.kpis])
    missing = sorted(set(needed) - set(kpis.columns))
    if missing:
        raise JudgeInputError(f"kpis is missing columns {missing}")
    unknown_targets = sorted(set(spec.targets) - set(settings.kpis))
    if unknown_targets:
        raise JudgeInputError(f"unknown target metrics {unknown_targets}; known: {sorted(settings.kpis)}")
    if spec.canary in spec.controls:
        raise JudgeInputError(f"canary {spec.canary!r} is also listed as a control")
    df = kpis[list(dict.fromkeys([*needed, *[c for c in kpis.columns if c in ("config_version",)]]))].copy()
    try:
        df["bucket_start"] = pd.to_datetime(df["bucket_start"], utc=True)
    except (ValueError, TypeError) as exc:
        raise JudgeInputError(f"bucket_start is not a timestamp column: {exc}") from exc
    df["shard_id"] = df["shard_id"].astype(str)
    values = [c for c in needed if c not in ("shard_id", "region", "bucket_start")]
    bad = [c for c in values if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise JudgeInputError(f"columns {bad} must be numeric")
    if df.duplicated(["shard_id", "bucket_start"]).any():
        # A bucket split by a config change: counts add up, levels average.
        agg = {c: ("mean" if c in LEVEL_COLUMNS else "sum") for c in values}
        agg["region"] = "first"
        df = df.groupby(["shard_id", "bucket_start"], as_index=False).agg(agg)
    shards = set(df["shard_id"].astype(str))
    absent = [s for s in [spec.canary, *spec.controls] if s not in shards]
    if absent:
        raise JudgeInputError(f"shards {absent} have no rows in kpis (known: {sorted(shards)})")
    start = pd.Timestamp(spec.start).tz_convert("UTC")
    canary_times = df.loc[df["shard_id"] == spec.canary, "bucket_start"]
    if not (canary_times.min() < start <= canary_times.max()):
        raise JudgeInputError(
            f"start {_iso(start)} is outside the canary's data ({_iso(canary_times.min())} .. {_iso(canary_times.max())}): "
            "it needs pre-change history before it and at least one bucket at or after it"
        )
    return df


def alpha_per_metric(settings: JudgeSettings, names: list[str]) -> float:
    """Two-sided alpha of each metric's confidence sequence.

    Every decision is one-sided: a rollback needs the LOWER harm bound above
    the margin, a promotion the UPPER harm bound below it. A two-sided sequence
    at 2 * alpha / K misses on each side with probability alpha / K, so over the
    K metrics P(any false rollback) <= alpha and P(a harmful change promoted)
    <= alpha (Bonferroni). Two-sided metrics (harm either way) need both tails
    for one decision and get alpha / K.
    """
    k = max(len(names), 1)
    one_sided = all(settings.kpis[n].direction != "two_sided" for n in names)
    return min(2.0 * settings.alpha / k, 0.5) if one_sided else settings.alpha / k


def metric_paths(
    kpis: pd.DataFrame,
    spec: CanarySpec,
    settings: JudgeSettings,
    names: list[str],
    alpha_each: float | None = None,
) -> dict[str, MetricPath]:
    """Each named metric's effect and interval at every look of ``spec`` (validated input; same code as :func:`judge`)."""
    df = validate(kpis, spec, settings)
    return _paths(df, spec, settings, names, alpha_each)[0]


def _paths(
    df: pd.DataFrame, spec: CanarySpec, settings: JudgeSettings, names: list[str], alpha_each: float | None
) -> tuple[dict[str, MetricPath], pd.DatetimeIndex, ShardTable]:
    start = pd.Timestamp(spec.start).tz_convert("UTC")
    # Looks are the buckets any of the canary and its controls reported from ``start`` on: a canary
    # that stops reporting still spends its budget (and fails the exposure check), never stalls.
    times = df.loc[df["shard_id"].isin([spec.canary, *spec.controls]), "bucket_start"]
    post_index = pd.DatetimeIndex(sorted(times[times >= start].unique()))[: spec.max_buckets]
    alpha_each = alpha_per_metric(settings, names) if alpha_each is None else alpha_each
    table = ShardTable(df, _value_columns([*names, EXPOSURE_SOURCE]))
    paths: dict[str, MetricPath] = {}
    unfit: list[str] = []
    for name in names:
        wide = metric_frame(table, METRICS[name], spec.canary, spec.controls)
        path = metric_path(
            wide, post_index, start.to_pydatetime(), METRICS[name], settings.kpis[name], settings, alpha_each
        )
        if path is None:
            unfit.append(name)
        else:
            paths[name] = path
    if unfit:
        raise JudgeInputError(
            f"too little pre-change history before {_iso(start)} for {unfit}: need {settings.min_pre_buckets} buckets "
            "where the canary and its controls both report"
        )
    return paths, post_index, table


def _value_columns(names: list[str]) -> list[str]:
    return sorted({c for n in names for c in METRICS[n].columns()})


def judge(
    kpis: pd.DataFrame, spec: CanarySpec, settings: JudgeSettings | None = None, *, trace: bool = False
) -> Judgement:
    """The live judge: one look per bucket from ``spec.start`` over the rows given; stops at the first decision.

    Each look uses only buckets up to it (the counterfactual is fitted on
    buckets before ``start``), so replaying a finished canary gives the verdict
    the live judge gave. ``continue`` when the data ends before a decision and
    before the budget. ``trace`` keeps every look's effects and intervals
    (``Judgement.trace``) for plots of the confidence sequences.
    """
    settings = settings or JudgeSettings.from_policy_data()
    df = validate(kpis, spec, settings)
    names = list(dict.fromkeys([*settings.guardrails(), *spec.targets]))
    alpha_each = alpha_per_metric(settings, names)
    paths, post_index, table = _paths(df, spec, settings, names, alpha_each)
    drift = _exposure_path(paths, table, post_index, spec, settings, alpha_each)
    canary_times = pd.DatetimeIndex(df.loc[df["shard_id"] == spec.canary, "bucket_start"].unique())
    reported = np.cumsum(post_index.isin(canary_times))
    looks = len(post_index)
    steps: list[dict[str, Any]] = []
    for i in range(looks):
        n = i + 1
        statuses = _statuses_at(paths, i, settings, spec)
        if trace:
            steps.append(_trace_step(paths, post_index, i))
        missing_share = 1.0 - reported[i] / n
        if n < settings.min_buckets and n < spec.max_buckets:
            continue
        decision = _decide_look(paths, statuses, drift, i, n, missing_share, settings, spec)
        if decision is not None:
            verdict, reason = decision
            return _judgement(
                verdict, n, post_index[i], paths, statuses, settings, spec, i, drift, reason, steps
            )
    last = looks - 1
    statuses = _statuses_at(paths, last, settings, spec) if looks else {k: "undecided" for k in paths}
    reason = f"continue: {looks} of {spec.max_buckets} buckets observed, no decision yet"
    return _judgement(
        "continue", looks, None, paths, statuses, settings, spec, last, drift, reason, steps, decided=False
    )


def _exposure_path(
    paths: dict[str, MetricPath],
    table: ShardTable,
    post_index: pd.DatetimeIndex,
    spec: CanarySpec,
    settings: JudgeSettings,
    alpha_each: float,
) -> MetricPath | None:
    """Exposure (sample-ratio) check: the canary's players against their counterfactual from the controls."""
    start = pd.Timestamp(spec.start).tz_convert("UTC")
    return paths.get(EXPOSURE_SOURCE) or metric_path(
        metric_frame(table, METRICS[EXPOSURE_SOURCE], spec.canary, spec.controls),
        post_index,
        start.to_pydatetime(),
        METRICS[EXPOSURE_SOURCE],
        KpiPolicy(direction="higher", margin=settings.exposure_tolerance),
        settings,
        alpha_each,
    )


def _statuses_at(
    paths: dict[str, MetricPath], i: int, settings: JudgeSettings, spec: CanarySpec
) -> dict[str, MetricStatus]:
    """Every metric's status at look ``i``."""
    return {
        name: status_of(
            float(p.effect[i]),
            float(p.lo[i]),
            float(p.hi[i]),
            settings.kpis[name],
            name in spec.targets,
            settings.rollback_on,
        )
        for name, p in paths.items()
    }


def _trace_step(paths: dict[str, MetricPath], post_index: pd.DatetimeIndex, i: int) -> dict[str, Any]:
    """Look ``i``'s effects and intervals (one entry of ``Judgement.trace``)."""
    return {
        "bucket_start": post_index[i],
        **{k: (float(p.effect[i]), float(p.lo[i]), float(p.hi[i])) for k, p in paths.items()},
    }


def _decide_look(
    paths: dict[str, MetricPath],
    statuses: dict[str, MetricStatus],
    drift: MetricPath | None,
    i: int,
    n: int,
    missing_share: float,
    settings: JudgeSettings,
    spec: CanarySpec,
) -> tuple[Verdict, str] | None:
    """The verdict and its reason at look ``i`` (``n`` buckets), or None to look again."""
    regressed = [k for k, s in statuses.items() if s == "regressed"]
    if regressed:
        reason = "rollback: significant harm beyond the margin on " + ", ".join(
            f"{k} ({_pct(paths[k].effect[i])}, interval {_pct(paths[k].lo[i])}..{_pct(paths[k].hi[i])}, margin {_pct(settings.kpis[k].margin)})"
            for k in regressed
        )
        return "rollback", reason
    moved = exposure_broken(drift, i, settings.exposure_tolerance)
    if moved or missing_share > settings.max_missing_share:
        what = (
            f"the canary's players moved {_pct(drift.effect[i])} (interval {_pct(drift.lo[i])}..{_pct(drift.hi[i])}) "
            f"against their counterfactual, beyond the tolerance of {_pct(settings.exposure_tolerance)}"
            if moved and drift is not None
            else f"{_pct(missing_share)} of the canary's buckets are missing "
            f"(tolerance {_pct(settings.max_missing_share)})"
        )
        return (
            "inconclusive",
            f"inconclusive: exposure check failed: {what}; the comparison is no longer fair",
        )
    guards_ok = all(statuses[k] in ("non_inferior", "improved") for k in settings.guardrails())
    targets_improved = bool(spec.targets) and all(statuses[k] == "improved" for k in spec.targets)
    if guards_ok and targets_improved:
        return "promote", (
            f"promote: {', '.join(spec.targets)} improved and every guardrail is non-inferior after {n} buckets"
        )
    if n < spec.max_buckets:
        return None
    if guards_ok:
        reason = f"promote: exposure budget of {spec.max_buckets} buckets reached with every guardrail non-inferior"
        if spec.targets:
            reason += " (targets not shown improved)"
        return "promote", reason
    undecided = [k for k in settings.guardrails() if statuses[k] not in ("non_inferior", "improved")]
    return "inconclusive", (
        f"inconclusive: exposure budget of {spec.max_buckets} buckets reached and {', '.join(undecided)} not shown non-inferior"
    )


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%" if math.isfinite(x) else str(x)


def _judgement(
    verdict: Verdict,
    n: int,
    at: pd.Timestamp | None,
    paths: dict[str, MetricPath],
    statuses: dict[str, MetricStatus],
    settings: JudgeSettings,
    spec: CanarySpec,
    i: int,
    drift: MetricPath | None,
    reason: str,
    steps: list[dict[str, Any]],
    decided: bool = True,
) -> Judgement:
    metrics: list[MetricResult] = []
    for name, p in paths.items():
        pol = settings.kpis[name]
        has = i >= 0 and len(p.effect) > i
        metrics.append(
            MetricResult(
                name=name,
                effect=float(p.effect[i]) if has else float("nan"),
                interval=(float(p.lo[i]), float(p.hi[i])) if has else (-math.inf, math.inf),
                status=statuses.get(name, "undecided"),
                role="target" if name in spec.targets else "guardrail",
                direction=pol.direction,
                margin=pol.margin,
                baseline=p.baseline,
            )
        )
    if drift is not None and 0 <= i < len(drift.effect):
        tol = settings.exposure_tolerance
        metrics.append(
            MetricResult(
                name=EXPOSURE_METRIC,
                effect=float(drift.effect[i]),
                interval=(float(drift.lo[i]), float(drift.hi[i])),
                status="regressed" if exposure_broken(drift, i, tol) else "ok",
                role="exposure",
                direction="two_sided",
                margin=tol,
            )
        )
    return Judgement(
        verdict=verdict,
        buckets_observed=n,
        decided_at=at.to_pydatetime() if (decided and at is not None) else None,
        metrics=metrics,
        reason=reason,
        trace=steps,
    )


def to_canary_result(j: Judgement, spec: CanarySpec) -> CanaryResult:
    """The judgement as the domain's :class:`CanaryResult` (its first regressed metric, else its first target/guardrail)."""
    verdict = {
        "promote": CanaryVerdict.PROMOTE,
        "rollback": CanaryVerdict.ROLL_BACK,
        "inconclusive": CanaryVerdict.ROLL_BACK,  # inconclusive at the budget rolls back
        "continue": CanaryVerdict.CONTINUE,
    }[j.verdict]
    kpi_metrics = [m for m in j.metrics if m.role != "exposure"]
    lead = next((m for m in j.metrics if m.status == "regressed"), None) or next(
        (m for m in kpi_metrics if m.role == "target"), None
    )
    lead = lead or (kpi_metrics[0] if kpi_metrics else None)
    interval = lead.interval if lead and all(math.isfinite(v) for v in lead.interval) else None
    return CanaryResult(
        canary_shard=spec.canary,
        control_shards=list(spec.controls),
        metric=lead.name if lead else "none",
        effect=float(lead.effect) if lead and math.isfinite(lead.effect) else 0.0,
        interval=interval,
        threshold=lead.margin if lead else None,
        samples=j.buckets_observed,
        verdict=verdict,
        detail=j.reason,
    )


def choose_controls(
    kpis: pd.DataFrame, canary: str, shards: list[ShardInfo] | list[str], k: int
) -> list[str]:
    """Fair controls for ``canary``: same region first, then the most correlated players-online history.

    Regions peak at different hours, so a shard of the canary's region shares
    its diurnal phase; among the rest, the correlation of the players-online
    series over the history (diurnal phase) ranks them. Shards that are down,
    are canaries themselves or have no rows are skipped.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ids: list[str] = []
    region_of: dict[str, str] = {}
    for s in shards:
        if isinstance(s, ShardInfo):
            if s.id == canary or s.status != "up" or s.role.value == "canary":
                continue
            ids.append(s.id)
            region_of[s.id] = s.region
        elif s != canary:
            ids.append(s)
    if not kpis.empty and {"shard_id", "region"} <= set(kpis.columns):
        region_of.update(
            kpis.drop_duplicates("shard_id").set_index("shard_id")["region"].astype(str).to_dict()
        )
    canary_region = region_of.get(canary)
    corr: dict[str, float] = {}
    if not kpis.empty and {"shard_id", "bucket_start", "players_online"} <= set(kpis.columns):
        wide = kpis.pivot_table(
            index="bucket_start", columns="shard_id", values="players_online", aggfunc="mean"
        )
        if canary in wide:
            for sid in ids:
                if sid in wide:
                    c = wide[canary].corr(wide[sid])
                    corr[sid] = float(c) if c == c else -1.0
    with_rows = [s for s in ids if kpis.empty or s in corr or "players_online" not in kpis.columns]
    ranked = sorted(with_rows, key=lambda s: (region_of.get(s) != canary_region, -corr.get(s, -1.0), s))
    return ranked[:k]


__all__ = [
    "CanaryResult",
    "CanarySpec",
    "CanaryVerdict",
    "JudgeInputError",
    "JudgeSettings",
    "Judgement",
    "KpiPolicy",
    "MetricResult",
    "choose_controls",
    "judge",
    "metric_paths",
    "mixture_half_width",
    "status_of",
    "to_canary_result",
]
