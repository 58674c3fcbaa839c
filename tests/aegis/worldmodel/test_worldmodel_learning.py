"""The model learns a known dynamic, beats the baselines, predicts effects in the right direction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aegis.domain import AutonomousChangeSet, ParamChange
from aegis.worldmodel.dataset import SplitConfig, build_dataset
from aegis.worldmodel.effects import EffectError, predict_effects
from aegis.worldmodel.metrics import decide_promotion, quality_gate
from aegis.worldmodel.model import WorldModel
from aegis.worldmodel.pipeline import TrainingOutcome
from aegis.worldmodel.synthetic import synthetic_kpis
from aegis.worldmodel.train import TrainConfig, fit_world_model


def test_model_beats_persistence_and_linear_on_held_out_shards_and_time(wm_trained: TrainingOutcome) -> None:
    reports = wm_trained.reports
    for split in ("test_time", "test_shard"):
        model = reports["world_model"].splits[split]
        assert model.relative_mae < 0.95 * reports["persistence"].splits[split].relative_mae, split
        assert model.relative_mae < 0.95 * reports["linear"].splits[split].relative_mae, split
        assert 0.8 <= model.coverage <= 0.97, (split, model.coverage)
        assert model.directional_accuracy is not None and model.directional_accuracy > 0.6
    checks = quality_gate(reports["world_model"], {k: reports[k] for k in ("persistence", "linear")})
    assert all(checks.values()), checks


def test_predicted_effect_of_harder_quests_is_more_deaths_and_abandons(
    wm_trained: TrainingOutcome, wm_rows: pd.DataFrame
) -> None:
    history = wm_rows[wm_rows.shard_id == "shard-00"].iloc[:200]
    harder = AutonomousChangeSet(
        target="shard-00", diff={"quest_difficulty": ParamChange(before=[1.0] * 5, after=[1.6] * 5)}
    )
    effects = predict_effects(harder, history, wm_trained.model)
    for kpi in ("deaths_early", "deaths_mid", "abandons_early", "abandons_mid", "abandon_rate"):
        e = effects[kpi]
        assert e.delta > 0, (kpi, e)
        assert e.low <= e.delta <= e.high
        assert e.expected == pytest.approx(e.baseline + e.delta)
    easier = harder.model_copy(
        update={"diff": {"quest_difficulty": ParamChange(before=[1.0] * 5, after=[0.6] * 5)}}
    )
    assert predict_effects(easier, history, wm_trained.model)["deaths_early"].delta < 0
    # no change, no effect
    same = harder.model_copy(update={"diff": {}})
    assert all(abs(e.delta) < 1e-9 for e in predict_effects(same, history, wm_trained.model).values())


def test_effects_reject_bad_requests(wm_trained: TrainingOutcome, wm_rows: pd.DataFrame) -> None:
    history = wm_rows[wm_rows.shard_id == "shard-00"].iloc[:50]
    cs = AutonomousChangeSet(target="shard-01", diff={"drop_rate": ParamChange(before=1.0, after=1.2)})
    with pytest.raises(EffectError, match="targets 'shard-01'"):
        predict_effects(cs, history, wm_trained.model)
    with pytest.raises(EffectError, match="no KPI history"):
        predict_effects(cs, history.iloc[:0], wm_trained.model)
    short = AutonomousChangeSet(target="shard-00", diff={"drop_rate": ParamChange(before=1.0, after=1.2)})
    with pytest.raises(EffectError, match="needs the last 12"):
        predict_effects(short, history.iloc[:5], wm_trained.model)
    out_of_bounds = AutonomousChangeSet(
        target="shard-00", diff={"drop_rate": ParamChange(before=1.0, after=99.0)}
    )
    with pytest.raises(EffectError, match=r"drop_rate=99\.0 is outside"):
        predict_effects(out_of_bounds, history, wm_trained.model)
    with pytest.raises(EffectError, match="expected a WorldModel"):
        predict_effects(short, history, object())


def test_same_seed_same_metrics_and_model_file_roundtrip(tmp_path, wm_trained: TrainingOutcome) -> None:
    rows = synthetic_kpis(shards=3, hours=14, seed=5)
    ds = build_dataset(rows, SplitConfig(window=6))
    cfg = TrainConfig(epochs=3, members=2, hidden=8, seed=7)
    a = fit_world_model(ds["train"], ds["val"], cfg)
    b = fit_world_model(ds["train"], ds["val"], cfg)
    pa, pb = a.model.predict(ds["test_time"]), b.model.predict(ds["test_time"])
    np.testing.assert_array_equal(pa.mean, pb.mean)
    np.testing.assert_array_equal(pa.high, pb.high)
    assert [h.val_loss for h in a.history] == [h.val_loss for h in b.history]
    c = fit_world_model(ds["train"], ds["val"], TrainConfig(epochs=3, members=2, hidden=8, seed=8))
    assert not np.array_equal(c.model.predict(ds["test_time"]).mean, pa.mean)
    loaded = WorldModel.load(a.model.save(tmp_path / "m.pt"))
    np.testing.assert_allclose(loaded.predict(ds["test_time"]).mean, pa.mean)


def test_training_rejects_nan_windows(wm_trained: TrainingOutcome) -> None:
    rows = synthetic_kpis(shards=3, hours=14, seed=5)
    ds = build_dataset(rows, SplitConfig(window=6))
    ds["train"].target[0, 0] = np.nan
    with pytest.raises(ValueError, match="train windows contain NaN"):
        fit_world_model(ds["train"], ds["val"], TrainConfig(epochs=1, members=1, hidden=4))


def test_promotion_rules(wm_trained: TrainingOutcome) -> None:
    r = wm_trained.reports
    base = {k: r[k] for k in ("persistence", "linear")}
    first = decide_promotion(r["world_model"], base, None)
    assert first.promote and "first model" in first.reason
    tie = decide_promotion(r["world_model"], base, r["world_model"])
    assert not tie.promote and "champion kept" in tie.reason
    # a model no better than persistence never becomes champion, even with no champion at all
    lose = decide_promotion(r["persistence"], base, None)
    assert not lose.promote and "quality gate" in lose.reason
