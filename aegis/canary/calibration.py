"""Placebo-in-space calibration of each metric's boundary, as the synthetic-control literature does.

Every control shard, declared a canary at many starts over an A/A history (no
change anywhere), must not look changed. For each placebo run and metric the
statistic is the largest ratio, over all looks, of |effect| to the interval's
half-width on that side: above 1, the confidence sequence excluded zero at some
look (a false discovery at margin zero, a stricter event than a false rollback,
which needs the harm to exceed the margin). Theory says that happens in at
most alpha / (number of metrics) of runs; where the placebos say otherwise
(autocorrelation the long-run variance missed, residual diurnal mismatch), the
metric's ``variance_inflation`` is set so that at most ``target`` of the
placebo runs exclude zero: the empirical (1 - target) quantile of the ratio,
squared, and never below 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from pydantic import BaseModel

from aegis.canary.judge import CanarySpec, JudgeSettings, metric_paths, status_of


class KpiCalibration(BaseModel):
    name: str
    runs: int
    exclusion_rate: float  # share of placebo runs whose interval ever excluded zero (settings as given)
    false_rollback_rate: float  # share of placebo runs in which this metric alone would have rolled back
    ratio_quantile: float  # the (1 - target) quantile of max |effect| / half-width
    variance_inflation: float  # suggested: current inflation x quantile^2 (>= current, >= 1)


class Calibration(BaseModel):
    runs: int
    target: float
    kpis: list[KpiCalibration]


def _max_ratio(effect: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    ok = np.isfinite(effect) & np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        return 0.0
    e, lo_, hi_ = effect[ok], lo[ok], hi[ok]
    half = np.where(e >= 0, e - lo_, hi_ - e)
    return float(np.max(np.abs(e) / np.maximum(half, 1e-12)))


def placebo_ratios(
    kpis: pd.DataFrame, specs: Iterable[CanarySpec], settings: JudgeSettings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per placebo run (rows) and metric (columns): the largest |effect| / half-width over the looks,
    and whether the metric was ever ``regressed`` from ``min_buckets`` on (a false rollback)."""
    ratios, rollbacks = [], []
    for spec in specs:
        paths = metric_paths(kpis, spec, settings, list(settings.kpis))
        ratios.append({name: _max_ratio(p.effect, p.lo, p.hi) for name, p in paths.items()})
        rollbacks.append(
            {
                name: any(
                    status_of(
                        float(p.effect[i]),
                        float(p.lo[i]),
                        float(p.hi[i]),
                        settings.kpis[name],
                        False,
                        settings.rollback_on,
                    )
                    == "regressed"
                    for i in range(min(settings.min_buckets, len(p.effect)) - 1, len(p.effect))
                )
                for name, p in paths.items()
            }
        )
    return pd.DataFrame(ratios), pd.DataFrame(rollbacks)


def calibrate(
    kpis: pd.DataFrame, specs: Iterable[CanarySpec], settings: JudgeSettings, target: float | None = None
) -> Calibration:
    """Per metric: how often placebos exclude zero now, and the variance inflation that brings it to ``target``."""
    target = settings.alpha if target is None else target
    ratios, rollbacks = placebo_ratios(kpis, specs, settings)
    out = []
    for name in settings.kpis:
        r = ratios[name].to_numpy(float) if name in ratios else np.zeros(0)
        q = float(np.quantile(r, 1.0 - target)) if len(r) else 0.0
        current = settings.kpis[name].variance_inflation
        out.append(
            KpiCalibration(
                name=name,
                runs=len(r),
                exclusion_rate=float(np.mean(r > 1.0)) if len(r) else math.nan,
                false_rollback_rate=float(rollbacks[name].mean()) if name in rollbacks else math.nan,
                ratio_quantile=q,
                variance_inflation=round(max(current * max(q, 1.0) ** 2, 1.0), 2),
            )
        )
    return Calibration(runs=len(ratios), target=target, kpis=out)
