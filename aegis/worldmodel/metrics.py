"""How a world model is judged, and when a challenger replaces the champion.

Three questions, asked on held-out shards and on held-out time:

* accuracy: MAE per KPI in KPI units, and the *relative MAE* (the model's MAE
  over persistence's, averaged over the KPIs) that makes KPIs of different
  scales comparable; below 1 means better than "nothing changes";
* calibration: coverage, the share of held-out targets inside the predicted
  90% interval (honest uncertainty sits near 0.9);
* direction: on rows where the parameters changed, the share of KPIs whose
  predicted change (prediction minus last value) has the sign of the observed
  change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from aegis.worldmodel.dataset import TARGET_KPIS, Windows
from aegis.worldmodel.model import Prediction
from aegis.worldmodel.settings import COVERAGE_BAND, DEFAULT_BASELINE_MARGIN, DEFAULT_MARGIN, EVAL_SPLITS


class Predictor(Protocol):
    kind: str

    def predict(self, w: Windows) -> Prediction: ...


@dataclass
class SplitMetrics:
    n: int
    mae: dict[str, float]
    relative_mae: float  # mean over KPIs of MAE / persistence MAE
    coverage: float
    coverage_by_kpi: dict[str, float]
    directional_accuracy: float | None
    changed_rows: int

    def flat(self, prefix: str) -> dict[str, float]:
        out = {
            f"{prefix}.relative_mae": self.relative_mae,
            f"{prefix}.coverage": self.coverage,
            f"{prefix}.n": float(self.n),
        }
        if self.directional_accuracy is not None:
            out[f"{prefix}.directional_accuracy"] = self.directional_accuracy
        out.update({f"{prefix}.mae.{k}": v for k, v in self.mae.items()})
        return out


@dataclass
class ModelReport:
    kind: str
    splits: dict[str, SplitMetrics]

    def flat(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, m in self.splits.items():
            out.update(m.flat(name))
        return out

    @property
    def relative_mae(self) -> float:
        """The worse of the held-out splits: a model must generalise in both directions."""
        return max(m.relative_mae for m in self.splits.values())

    @property
    def coverage(self) -> float:
        return float(np.mean([m.coverage for m in self.splits.values()]))

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "splits": {k: asdict(v) for k, v in self.splits.items()}}


def evaluate(predictor: Predictor, w: Windows) -> SplitMetrics:
    if len(w) == 0:
        raise ValueError("cannot evaluate on an empty split")
    pred = predictor.predict(w)
    if not (np.isfinite(pred.mean).all() and np.isfinite(pred.low).all() and np.isfinite(pred.high).all()):
        raise ValueError(f"{predictor.kind} produced NaN or infinite predictions")
    err = np.abs(pred.mean - w.target)
    mae = err.mean(0)
    base = np.abs(w.last_target - w.target).mean(0)
    # KPIs that never move on this split (persistence MAE 0) say nothing about skill.
    informative = base > 1e-12
    rel = float(np.mean(mae[informative] / base[informative])) if informative.any() else 1.0
    inside = (w.target >= pred.low) & (w.target <= pred.high)
    changed = w.params_changed
    direction: float | None = None
    if changed.any():
        obs = np.sign(w.target[changed] - w.last_target[changed])
        est = np.sign(pred.mean[changed] - w.last_target[changed])
        moved = obs != 0
        if moved.any():
            direction = float((obs[moved] == est[moved]).mean())
    return SplitMetrics(
        n=len(w),
        mae={k: float(v) for k, v in zip(TARGET_KPIS, mae, strict=True)},
        relative_mae=rel,
        coverage=float(inside.mean()),
        coverage_by_kpi={k: float(v) for k, v in zip(TARGET_KPIS, inside.mean(0), strict=True)},
        directional_accuracy=direction,
        changed_rows=int(changed.sum()),
    )


def report(predictor: Predictor, splits: dict[str, Windows]) -> ModelReport:
    return ModelReport(predictor.kind, {name: evaluate(predictor, splits[name]) for name in EVAL_SPLITS})


@dataclass
class PromotionDecision:
    promote: bool
    reason: str
    challenger_score: float
    champion_score: float | None
    margin: float
    checks: dict[str, bool] = field(default_factory=dict)


def quality_gate(
    candidate: ModelReport, baselines: dict[str, ModelReport], margin: float = DEFAULT_BASELINE_MARGIN
) -> dict[str, bool]:
    """What any model must pass: beat every baseline by ``margin`` on every held-out split, honest intervals."""
    checks: dict[str, bool] = {}
    for name, m in candidate.splits.items():
        ok_num = np.isfinite(m.relative_mae) and np.isfinite(m.coverage)
        checks[f"{name}.finite"] = bool(ok_num)
        for base_kind, base in baselines.items():
            checks[f"{name}.beats_{base_kind}"] = bool(
                m.relative_mae <= base.splits[name].relative_mae * (1 - margin)
            )
        checks[f"{name}.coverage_in_band"] = bool(COVERAGE_BAND[0] <= m.coverage <= COVERAGE_BAND[1])
    return checks


def decide_promotion(
    challenger: ModelReport,
    baselines: dict[str, ModelReport],
    champion: ModelReport | None,
    margin: float = DEFAULT_MARGIN,
    baseline_margin: float = DEFAULT_BASELINE_MARGIN,
) -> PromotionDecision:
    """Promote only a challenger that passes the quality gate and beats the champion by ``margin``.

    A tie or a narrow win keeps the champion: a model swap has a cost (new
    predictions, new surprises) that a noise-level improvement does not pay.
    """
    checks = quality_gate(challenger, baselines, baseline_margin)
    failed = [k for k, ok in checks.items() if not ok]
    score = challenger.relative_mae
    if failed:
        return PromotionDecision(
            False,
            f"challenger fails the quality gate: {', '.join(failed)}",
            score,
            champion.relative_mae if champion else None,
            margin,
            checks,
        )
    if champion is None:
        return PromotionDecision(
            True,
            "first model: beats persistence and linear on held-out shards and time",
            score,
            None,
            margin,
            checks,
        )
    need = champion.relative_mae * (1 - margin)
    checks["beats_champion"] = bool(score <= need)
    if score <= need:
        reason = (
            f"challenger relative MAE {score:.4f} <= champion {champion.relative_mae:.4f} x (1 - {margin})"
        )
        return PromotionDecision(True, reason, score, champion.relative_mae, margin, checks)
    reason = (
        f"champion kept: challenger relative MAE {score:.4f} does not beat champion "
        f"{champion.relative_mae:.4f} by the {margin:.0%} margin (needs <= {need:.4f})"
    )
    return PromotionDecision(False, reason, score, champion.relative_mae, margin, checks)


def markdown_table(reports: list[ModelReport], split: str) -> str:
    """MAE per KPI, relative MAE and coverage of several models on one split."""
    head = "| KPI | " + " | ".join(r.kind for r in reports) + " |"
    sep = "|---|" + "---:|" * len(reports)
    lines = [head, sep]
    for kpi in TARGET_KPIS:
        lines.append(f"| {kpi} | " + " | ".join(f"{r.splits[split].mae[kpi]:.4g}" for r in reports) + " |")
    lines.append(
        "| **relative MAE** | " + " | ".join(f"{r.splits[split].relative_mae:.3f}" for r in reports) + " |"
    )
    lines.append(
        "| **coverage (90%)** | " + " | ".join(f"{r.splits[split].coverage:.3f}" for r in reports) + " |"
    )
    lines.append(
        "| **directional acc.** | "
        + " | ".join(
            "n/a"
            if r.splits[split].directional_accuracy is None
            else f"{r.splits[split].directional_accuracy:.3f}"
            for r in reports
        )
        + " |"
    )
    return "\n".join(lines)
