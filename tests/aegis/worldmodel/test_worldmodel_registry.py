"""Champion/challenger alias logic against a real local MLflow (SQLite in tmp)."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from aegis.worldmodel.dataset import WorldModelDataset
from aegis.worldmodel.pipeline import (
    EvaluationError,
    TrainingOutcome,
    evaluate_challenger,
    log_to_registry,
    train_with_baselines,
)
from aegis.worldmodel.pyfunc import to_pyfunc_input
from aegis.worldmodel.registry import CHALLENGER, CHAMPION, ModelRegistry
from aegis.worldmodel.train import TrainConfig

WEAK = TrainConfig(epochs=1, members=1, hidden=4, batch_size=512, seed=3)


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri())


def _decision(reg: ModelRegistry, version: str) -> dict[str, str]:
    return reg.client.get_model_version(reg.model_name, version).tags


@pytest.mark.slow  # four real MLflow model logs: ~30 s on an idle machine
def test_alias_logic_first_win_tie_and_win(
    registry: ModelRegistry, wm_dataset: WorldModelDataset, wm_trained: TrainingOutcome, wm_rows: pd.DataFrame
) -> None:
    with pytest.raises(EvaluationError, match="no 'challenger'"):
        evaluate_challenger(registry, wm_dataset)

    # a weak first model fails the quality gate: no champion, and the registry says why
    weak = train_with_baselines(wm_dataset, WEAK)
    v1 = log_to_registry(registry, weak, wm_dataset, wm_rows, WEAK)
    first = evaluate_challenger(registry, wm_dataset)
    assert not first.decision.promote and "quality gate" in first.decision.reason
    assert registry.version(CHAMPION) is None
    assert _decision(registry, v1.version)["aegis.decision"] == "kept_champion"

    # the good model wins against the baselines and becomes the first champion
    v2 = log_to_registry(registry, wm_trained, wm_dataset, wm_rows, TrainConfig())
    assert str(registry.version(CHALLENGER).version) == v2.version
    win = evaluate_challenger(registry, wm_dataset)
    assert win.decision.promote, win.decision.reason
    assert str(registry.version(CHAMPION).version) == v2.version
    assert _decision(registry, v2.version)["aegis.decision"] == "promoted"
    run = registry.client.get_run(v2.run_id)
    assert run.data.tags["dataset_hash"] == wm_dataset.content_hash
    assert run.data.tags["aegis.decision"] == "promoted"
    assert "world_model.test_shard.relative_mae" in run.data.metrics

    # the same model again is a tie: the champion stays
    v3 = log_to_registry(registry, wm_trained, wm_dataset, wm_rows, TrainConfig())
    tie = evaluate_challenger(registry, wm_dataset)
    assert not tie.decision.promote and "champion kept" in tie.decision.reason
    assert str(registry.version(CHAMPION).version) == v2.version
    assert "margin" in _decision(registry, v3.version)["aegis.decision_reason"]

    # a worse challenger loses
    log_to_registry(registry, weak, wm_dataset, wm_rows, WEAK)
    lose = evaluate_challenger(registry, wm_dataset)
    assert not lose.decision.promote
    assert str(registry.version(CHAMPION).version) == v2.version

    # and the champion serves as a pyfunc from the registry URI
    mlflow.set_tracking_uri(registry.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model("models:/aegis-world-model@champion")
        history = wm_rows[wm_rows.shard_id == "shard-01"].iloc[:100]
        out = model.predict(to_pyfunc_input(history))
    finally:
        mlflow.set_tracking_uri(None)
    assert len(out) == 1 and out["shard_id"].iloc[0] == "shard-01"
    assert (out["deaths_early_low"] <= out["deaths_early"]).all()
    assert (out["deaths_early"] <= out["deaths_early_high"]).all()
