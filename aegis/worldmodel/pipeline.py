"""The steps the assets and the CLI share: train with baselines, judge challenger against champion.

Kept out of the assets so they stay short and so the same steps run (and are
tested) without Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from aegis.worldmodel.baselines import Persistence, Ridge
from aegis.worldmodel.dataset import WorldModelDataset
from aegis.worldmodel.metrics import (
    DEFAULT_BASELINE_MARGIN,
    DEFAULT_MARGIN,
    ModelReport,
    PromotionDecision,
    decide_promotion,
    markdown_table,
    report,
)
from aegis.worldmodel.model import WorldModel
from aegis.worldmodel.pyfunc import input_example
from aegis.worldmodel.registry import CHALLENGER, CHAMPION, ModelRegistry, RegisteredModel
from aegis.worldmodel.train import ProgressFn, TrainConfig, TrainResult, fit_world_model


@dataclass
class TrainingOutcome:
    result: TrainResult
    reports: dict[str, ModelReport]  # world_model, persistence, linear

    @property
    def model(self) -> WorldModel:
        return self.result.model

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for kind, rep in self.reports.items():
            out.update({f"{kind}.{k}": v for k, v in rep.flat().items()})
        out["train.samples_per_second"] = self.result.samples_per_second
        out["train.seconds"] = self.result.seconds
        return out

    def markdown(self) -> str:
        order = [self.reports[k] for k in ("world_model", "persistence", "linear")]
        return "\n\n".join(
            f"**{split}**\n\n{markdown_table(order, split)}" for split in ("test_time", "test_shard")
        )


def baseline_reports(ds: WorldModelDataset) -> dict[str, ModelReport]:
    persistence = Persistence().fit(ds["train"], ds["val"])
    linear = Ridge().fit(ds["train"], ds["val"])
    return {"persistence": report(persistence, ds.splits), "linear": report(linear, ds.splits)}


def train_with_baselines(
    ds: WorldModelDataset, config: TrainConfig | None = None, progress: ProgressFn | None = None
) -> TrainingOutcome:
    result = fit_world_model(ds["train"], ds["val"], config, progress)
    reports = {"world_model": report(result.model, ds.splits), **baseline_reports(ds)}
    return TrainingOutcome(result, reports)


def log_to_registry(
    registry: ModelRegistry,
    outcome: TrainingOutcome,
    ds: WorldModelDataset,
    rows: pd.DataFrame | None,
    config: TrainConfig,
    tags: dict[str, str] | None = None,
) -> RegisteredModel:
    """One MLflow run with params, metrics, per-epoch losses and the pyfunc; registered as challenger."""
    epochs = [
        {f"member{log.member}.train_loss": log.train_loss, f"member{log.member}.val_nll": log.val_loss}
        for log in outcome.result.history
    ]
    params: dict[str, Any] = {
        **{f"train.{k}": v for k, v in config.as_params().items()},
        "window": ds.window,
        "dataset_hash": ds.content_hash,
        "held_out_shards": ",".join(ds.held_out_shards),
        "device": outcome.result.device,
        **{f"size.{k}": v for k, v in ds.sizes().items()},
    }
    return registry.log_training(
        outcome.model,
        ds,
        input_example(rows if rows is not None else ds.example_rows, ds.window),
        params,
        outcome.metrics(),
        epochs,
        tags,
        outcome.markdown(),
    )


@dataclass
class EvaluationOutcome:
    challenger_version: str
    champion_version: str | None
    decision: PromotionDecision
    reports: dict[str, ModelReport] = field(default_factory=dict)
    champion_error: str | None = None

    def markdown(self) -> str:
        kinds = [k for k in ("challenger", "champion", "persistence", "linear") if k in self.reports]
        reps = [replace(self.reports[k], kind=k) for k in kinds]  # columns named by role, reports untouched
        return "\n\n".join(
            f"**{split}**\n\n{markdown_table(reps, split)}" for split in ("test_time", "test_shard")
        )


class EvaluationError(RuntimeError):
    """Nothing to evaluate (no challenger) or the challenger cannot be loaded."""


def evaluate_challenger(
    registry: ModelRegistry,
    ds: WorldModelDataset,
    margin: float = DEFAULT_MARGIN,
    baseline_margin: float = DEFAULT_BASELINE_MARGIN,
) -> EvaluationOutcome:
    """Challenger vs champion vs baselines on ``ds``'s held-out split; moves ``champion`` only on a clear win."""
    loaded = registry.load(CHALLENGER)
    if loaded is None:
        raise EvaluationError(
            f"no '{CHALLENGER}' version of {registry.model_name}: materialize world_model first"
        )
    chal_mv, challenger = loaded
    if challenger.window != ds.window:
        raise EvaluationError(
            f"challenger v{chal_mv.version} uses window {challenger.window}, dataset {ds.window}"
        )
    reports = {"challenger": report(challenger, ds.splits), **baseline_reports(ds)}
    champion_report: ModelReport | None = None
    champion_version: str | None = None
    champion_error: str | None = None
    champ_mv = registry.version(CHAMPION)
    if champ_mv is not None and champ_mv.version == chal_mv.version:
        decision = PromotionDecision(
            False,
            f"v{chal_mv.version} is already the champion",
            reports["challenger"].relative_mae,
            reports["challenger"].relative_mae,
            margin,
        )
        return EvaluationOutcome(chal_mv.version, champ_mv.version, decision, reports)
    if champ_mv is not None:
        champion_version = str(champ_mv.version)
        try:
            loaded_champ = registry.load(CHAMPION)
            assert loaded_champ is not None
            champ_model = loaded_champ[1]
            if champ_model.window != ds.window:
                raise ValueError(f"champion uses window {champ_model.window}, dataset {ds.window}")
            champion_report = report(champ_model, ds.splits)
            reports["champion"] = champion_report
        except Exception as exc:  # a champion that cannot even predict is judged as absent, and said so
            champion_error = f"champion v{champion_version} could not be evaluated: {exc}"
    decision = decide_promotion(
        reports["challenger"],
        {k: reports[k] for k in ("persistence", "linear")},
        champion_report,
        margin,
        baseline_margin,
    )
    if champion_error and decision.promote:
        decision.reason = f"{decision.reason}; {champion_error}"
    details = {
        "checks": decision.checks,
        "challenger_score": decision.challenger_score,
        "champion_score": decision.champion_score,
        "dataset_hash": ds.content_hash,
    }
    if decision.promote:
        registry.promote(str(chal_mv.version), decision.reason, details)
    else:
        registry.record_decision(str(chal_mv.version), "kept_champion", decision.reason, details)
    return EvaluationOutcome(str(chal_mv.version), champion_version, decision, reports, champion_error)
