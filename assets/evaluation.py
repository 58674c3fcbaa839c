"""The evaluation stage: challenger vs champion on the held-out split; the only place ``champion`` moves.

``model_evaluation`` compares the newest challenger with the current champion
and both baselines on the same held-out shards and time, promotes only on a
clear win (``margin``; a first model must beat persistence and ridge), and
records the decision and its reason in metadata and as MLflow tags.

``champion_is_sound`` is a blocking check: whatever the decision, the champion
that downstream stages (proposals, canary) will load must exist, load from
``models:/aegis-world-model@champion``, and still beat persistence with honest
intervals on today's held-out data. When it fails, downstream assets in the
same run do not materialize.

Import cost: the code location imports this module in every run subprocess and
code server, and only evaluation runs need torch and mlflow (about 2 s), so
``aegis.worldmodel.metrics`` / ``pipeline`` are imported inside the asset and
check bodies. Thresholds come from :mod:`aegis.worldmodel.settings` (standard
library); :class:`WorldModelDataset`, the input type Dagster resolves at
definition time, from :mod:`aegis.worldmodel.dataset` (numpy, pandas). No
``from __future__ import annotations``: Dagster reads the config class and
input types from the evaluated annotations.
"""

from typing import Any

import dagster as dg

from aegis.worldmodel.dataset import WorldModelDataset
from aegis.worldmodel.settings import CHAMPION, COVERAGE_BAND, DEFAULT_BASELINE_MARGIN, DEFAULT_MARGIN
from assets.resources.mlflow import MlflowResource

GROUP = "evaluation"


class EvaluationConfig(dg.Config):
    margin: float = DEFAULT_MARGIN
    baseline_margin: float = DEFAULT_BASELINE_MARGIN


@dg.asset(
    group_name=GROUP,
    deps=["world_model"],
    kinds={"mlflow"},
    description="Challenger vs champion vs baselines on held-out shards and time; moves the champion alias.",
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    training_dataset: WorldModelDataset,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    # torch and mlflow: imported here, not at module top (see the module docstring)
    from aegis.worldmodel.pipeline import EvaluationError, evaluate_challenger

    registry = mlflow.registry()
    try:
        outcome = evaluate_challenger(registry, training_dataset, config.margin, config.baseline_margin)
    except EvaluationError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    d = outcome.decision
    if d.promote:  # the champion moved: a decision, so it goes into the signed ledger too
        from aegis.ledger.events import record_model_promotion

        record_model_promotion(
            registry.model_name, outcome.challenger_version, outcome.champion_version, d.reason,
            {"checks": d.checks, "challenger_relative_mae": d.challenger_score,
             "dataset_hash": training_dataset.content_hash},
        )  # fmt: skip
    context.log.info(f"{'PROMOTED' if d.promote else 'kept champion'}: {d.reason}")
    meta: dict[str, Any] = {
        "decision": "promoted" if d.promote else "kept_champion",
        "reason": d.reason,
        "challenger_version": outcome.challenger_version,
        "champion_version_before": outcome.champion_version or "none",
        "challenger_relative_mae": dg.MetadataValue.float(round(d.challenger_score, 4)),
        "checks": dg.MetadataValue.json(d.checks),
        "dataset_hash": training_dataset.content_hash,
        "comparison": dg.MetadataValue.md(outcome.markdown()),
        "summary": dg.MetadataValue.text(
            f"{'PROMOTED to champion' if d.promote else 'kept champion'}: {d.reason}"
        ),
    }
    if d.champion_score is not None:
        meta["champion_relative_mae"] = dg.MetadataValue.float(round(d.champion_score, 4))
    if outcome.champion_error:
        meta["champion_error"] = outcome.champion_error
    for split, m in outcome.reports["challenger"].splits.items():
        meta[f"challenger.{split}.coverage"] = dg.MetadataValue.float(round(m.coverage, 4))
        if m.directional_accuracy is not None:
            meta[f"challenger.{split}.directional_accuracy"] = dg.MetadataValue.float(
                round(m.directional_accuracy, 4)
            )
    return dg.MaterializeResult(metadata=meta)


@dg.asset_check(
    asset=model_evaluation,
    blocking=True,
    additional_ins={"training_dataset": dg.AssetIn("training_dataset")},
    description="The champion exists, loads from the registry, beats persistence and has honest intervals.",
)
def champion_is_sound(training_dataset: WorldModelDataset, mlflow: MlflowResource) -> dg.AssetCheckResult:
    # torch and mlflow: imported here, not at module top (see the module docstring)
    from aegis.worldmodel.baselines import Persistence
    from aegis.worldmodel.metrics import report

    registry = mlflow.registry()
    try:
        loaded = registry.load(CHAMPION)
    except Exception as exc:
        return dg.AssetCheckResult(passed=False, description=f"champion cannot be loaded: {exc}")
    if loaded is None:
        return dg.AssetCheckResult(
            passed=False,
            description="no champion yet: no model has passed the quality gate, downstream stays blocked",
        )
    mv, champion = loaded
    try:
        rep = report(champion, training_dataset.splits)
    except ValueError as exc:
        return dg.AssetCheckResult(passed=False, description=f"champion v{mv.version} cannot predict: {exc}")
    # Only persistence is asked of the champion: fitting ridge as well would be wasted work.
    persistence = report(
        Persistence().fit(training_dataset["train"], training_dataset["val"]), training_dataset.splits
    )
    problems = []
    for split, m in rep.splits.items():
        if not m.relative_mae < persistence.splits[split].relative_mae:
            problems.append(f"{split}: relative MAE {m.relative_mae:.3f} does not beat persistence")
        if not COVERAGE_BAND[0] <= m.coverage <= COVERAGE_BAND[1]:
            problems.append(f"{split}: coverage {m.coverage:.3f} outside {COVERAGE_BAND}")
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems)
        or f"champion v{mv.version} is sound on dataset {training_dataset.content_hash[:12]}",
        metadata={
            "champion_version": str(mv.version),
            **{f"{s}.relative_mae": round(m.relative_mae, 4) for s, m in rep.splits.items()},
            **{f"{s}.coverage": round(m.coverage, 4) for s, m in rep.splits.items()},
        },
    )


evaluation_assets = [model_evaluation]
evaluation_checks = [champion_is_sound]
defs = evaluation_defs = dg.Definitions(assets=evaluation_assets, asset_checks=evaluation_checks)
