"""Reality delta: the world model's predicted effects against what canaries observed, over time.

Every reflection with a prediction and an observation for the same KPI gives a
pair (predicted mean and 90% interval, observed canary effect). Over the most
recent :data:`WINDOW` pairs we report the error (mean absolute error, bias) and
the interval coverage (share of observed effects inside the predicted
interval; 0.9 when the intervals are honest).

When coverage falls short of nominal by more than :data:`COVERAGE_TOLERANCE`
(with at least :data:`MIN_PAIRS` pairs), the model is miscalibrated and the
intervals are widened: the new ``interval_scale`` is the factor that would have
put :data:`NOMINAL_COVERAGE` of the recent observations inside their intervals
(the 90th percentile of ``|observed - mean| / half-width``), applied on top of
the scale in force (the proposals were ranked with already-widened intervals).
The scale never drops below 1 and never exceeds :data:`MAX_SCALE`; past
:data:`RETRAIN_SCALE` widening is not enough and retraining is asked for.

The scale is written to ``AEGIS_HOME/proposals/calibration.json`` as
``{"interval_scale": float, "updated_at": ISO-8601, ...}``; the proposal engine
multiplies each predicted interval's half-widths by it before ranking.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from aegis.changes.artifacts import write_atomic_text
from aegis.domain import ReflectionRecord, utcnow

NOMINAL_COVERAGE = 0.9
COVERAGE_TOLERANCE = 0.1
MIN_PAIRS = 5
WINDOW = 50
MAX_SCALE = 10.0
RETRAIN_SCALE = 3.0
CALIBRATION_FILE = "calibration.json"
MIN_HALF_WIDTH = 1e-9


@dataclass(frozen=True)
class PredictionPair:
    changeset_id: str
    kpi: str
    at: datetime
    mean: float
    lo: float
    hi: float
    observed: float

    @property
    def covered(self) -> bool:
        return self.lo <= self.observed <= self.hi

    @property
    def error(self) -> float:
        return self.observed - self.mean

    @property
    def normalised_error(self) -> float:
        """|error| in units of the interval's half-width on the error's side."""
        half = (self.hi - self.mean) if self.error >= 0 else (self.mean - self.lo)
        return abs(self.error) / max(half, MIN_HALF_WIDTH)


class RealityDelta(BaseModel):
    """What the reality-delta asset reports and decides."""

    pairs: int
    changesets: int
    coverage: float | None = Field(
        None, description="share of observed effects inside the predicted 90% interval"
    )
    mae: float | None = None
    bias: float | None = Field(None, description="mean of observed - predicted")
    by_kpi: dict[str, dict[str, float]] = Field(default_factory=dict)
    previous_scale: float = 1.0
    interval_scale: float = 1.0
    miscalibrated: bool = False
    retrain: bool = False
    reason: str = ""


def pairs_from(reflections: list[ReflectionRecord]) -> list[PredictionPair]:
    """Every (prediction, observation) pair, oldest first."""
    out = []
    for r in sorted(reflections, key=lambda r: r.created_at):
        for kpi in sorted(set(r.expected) & set(r.observed) & set(r.expected_intervals)):
            lo, hi = r.expected_intervals[kpi]
            out.append(
                PredictionPair(r.changeset_id, kpi, r.created_at, r.expected[kpi], lo, hi, r.observed[kpi])
            )
    return out


def score(pairs: list[PredictionPair], previous_scale: float = 1.0) -> RealityDelta:
    """Error and coverage over the recent window, and the interval scale to use from now on."""
    recent = pairs[-WINDOW:]
    if not recent:
        return RealityDelta(
            pairs=0,
            changesets=0,
            previous_scale=previous_scale,
            interval_scale=previous_scale,
            reason="no canary has both a prediction and an observed effect yet",
        )
    errors = np.array([p.error for p in recent])
    covered = np.array([p.covered for p in recent])
    by_kpi: dict[str, dict[str, float]] = {}
    for kpi in sorted({p.kpi for p in recent}):
        sel = [p for p in recent if p.kpi == kpi]
        by_kpi[kpi] = {
            "pairs": float(len(sel)),
            "coverage": float(np.mean([p.covered for p in sel])),
            "mae": float(np.mean([abs(p.error) for p in sel])),
        }
    coverage = float(covered.mean())
    scale = previous_scale
    miscalibrated = False
    reason = f"coverage {coverage:.0%} over {len(recent)} pair(s)"
    if len(recent) < MIN_PAIRS:
        reason += f"; fewer than {MIN_PAIRS} pairs: too few to recalibrate"
    else:
        needed = float(np.quantile([p.normalised_error for p in recent], NOMINAL_COVERAGE))
        proposed = float(np.clip(previous_scale * max(needed, 1e-6), 1.0, MAX_SCALE))
        if coverage < NOMINAL_COVERAGE - COVERAGE_TOLERANCE:
            miscalibrated = True
            scale = max(proposed, previous_scale)
            reason += f" is below {NOMINAL_COVERAGE:.0%}: intervals widened x{scale / previous_scale:.2f}"
        elif needed < 1.0 and previous_scale > 1.0:
            scale = proposed  # honest again with less widening: narrow back toward the model's own intervals
            reason += f"; intervals were wider than needed: scale {previous_scale:.2f} -> {scale:.2f}"
        else:
            reason += f" is within {COVERAGE_TOLERANCE:.0%} of nominal: calibrated"
    retrain = scale >= RETRAIN_SCALE
    if retrain:
        reason += f"; scale {scale:.2f} >= {RETRAIN_SCALE}: retraining requested"
    return RealityDelta(
        pairs=len(recent),
        changesets=len({p.changeset_id for p in recent}),
        coverage=coverage,
        mae=float(np.abs(errors).mean()),
        bias=float(errors.mean()),
        by_kpi=by_kpi,
        previous_scale=previous_scale,
        interval_scale=scale,
        miscalibrated=miscalibrated,
        retrain=retrain,
        reason=reason,
    )


def calibration_path(home: Path) -> Path:
    return home / "proposals" / CALIBRATION_FILE


def read_scale(home: Path) -> float:
    """The interval scale in force (1.0 when none was written or the file is unreadable)."""
    try:
        value = float(json.loads(calibration_path(home).read_text())["interval_scale"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1.0
    return value if 1.0 <= value <= MAX_SCALE else 1.0


def write_calibration(home: Path, delta: RealityDelta) -> Path:
    """``{"interval_scale", "updated_at", ...}`` for the proposal engine (atomic write)."""
    path = calibration_path(home)
    doc: dict[str, Any] = {
        "interval_scale": delta.interval_scale,
        "updated_at": utcnow().isoformat(),
        "coverage": delta.coverage,
        "pairs": delta.pairs,
        "retrain": delta.retrain,
        "reason": delta.reason,
    }
    write_atomic_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path


def delta_chart(pairs: list[PredictionPair]) -> bytes:
    """Left: predicted effect with its interval against the observed effect, per pair (over time).
    Right: rolling interval coverage against the nominal 90%."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from aegis.quality.reporting import _figure_png

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    if pairs:
        x = np.arange(len(pairs))
        mean = np.array([p.mean for p in pairs])
        ax1.errorbar(
            x,
            mean,
            yerr=[mean - np.array([p.lo for p in pairs]), np.array([p.hi for p in pairs]) - mean],
            fmt="o",
            color="tab:blue",
            label="predicted (90% interval)",
            capsize=3,
        )
        obs = np.array([p.observed for p in pairs])
        inside = np.array([p.covered for p in pairs])
        ax1.scatter(x[inside], obs[inside], color="tab:green", marker="x", label="observed, inside", zorder=3)
        ax1.scatter(
            x[~inside], obs[~inside], color="tab:red", marker="x", label="observed, outside", zorder=3
        )
        ax1.set_xticks(x, [f"{p.kpi}\n{p.changeset_id[-6:]}" for p in pairs], fontsize=6, rotation=45)
        cum = np.cumsum(inside) / (x + 1)
        ax2.plot(x, cum, color="tab:blue", label="coverage so far")
    ax1.axhline(0, color="grey", lw=0.5)
    ax1.set_title("predicted vs observed canary effect")
    ax1.legend(fontsize=7)
    ax2.axhline(NOMINAL_COVERAGE, color="tab:orange", ls="--", label="nominal 90%")
    ax2.set_ylim(0, 1.05)
    ax2.set_title("interval coverage over time")
    ax2.set_xlabel("prediction (oldest first)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return _figure_png(fig)
