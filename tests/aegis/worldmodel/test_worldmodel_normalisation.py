"""Per-KPI scales before symlog and the validation-fitted shrinkage toward persistence."""

from __future__ import annotations

import json

import numpy as np
import torch

from aegis.worldmodel.dataset import TARGET_KPIS, WorldModelDataset
from aegis.worldmodel.model import Normaliser, WorldModel, robust_scale
from aegis.worldmodel.pipeline import TrainingOutcome


def test_robust_scale_is_the_median_magnitude_and_ignores_zeros() -> None:
    values = np.array([[0.0, 0.004, -3.0], [0.0, 0.006, 5.0], [0.0, 5.0, 4.0]])
    scale = robust_scale(values)
    assert scale[0] == 1.0  # an all-zero column keeps plain symlog
    assert scale[1] == np.float64(0.006)
    assert scale[2] == 4.0


def test_scaled_normaliser_roundtrips_and_separates_small_moves(wm_dataset: WorldModelDataset) -> None:
    train = wm_dataset["train"]
    scaled = Normaliser.fit(train)
    plain = Normaliser.fit(train, scaled=False)
    assert np.all(plain.target_scale == 1.0)
    assert not np.allclose(scaled.target_scale, 1.0)
    y = wm_dataset["val"].target
    assert np.allclose(scaled.untarget(scaled.target(y).astype(np.float64)), y, rtol=1e-4, atol=1e-6)
    # Serialised and read back, including a dict written before the scales existed.
    again = Normaliser.from_dict(json.loads(json.dumps(scaled.to_dict())))
    assert np.allclose(again.target(y), scaled.target(y))
    legacy = {k: v for k, v in plain.to_dict().items() if not k.endswith("_scale")}
    assert np.allclose(Normaliser.from_dict(legacy).target(y), plain.target(y))


def test_shrinkage_is_a_share_of_the_change_and_never_worse_on_validation(
    wm_trained: TrainingOutcome,
) -> None:
    model = wm_trained.result.model
    assert model.shrink.shape == (len(TARGET_KPIS),)
    assert np.all((model.shrink >= 0.0) & (model.shrink <= 1.0))


def test_fit_shrinkage_beats_or_ties_the_unshrunk_model(wm_trained: TrainingOutcome, wm_dataset) -> None:
    model = wm_trained.result.model
    val = wm_dataset["val"]
    kept = model.shrink.copy()
    try:
        model.shrink = np.ones(len(TARGET_KPIS))
        full = np.abs(model.predict(val).mean - val.target).mean(0)
        fitted = model.fit_shrinkage(val)
        shrunk = np.abs(model.predict(val).mean - val.target).mean(0)
        assert np.all(shrunk <= full + 1e-9)
        # Shrinkage 0 is persistence exactly.
        model.shrink = np.zeros(len(TARGET_KPIS))
        assert np.allclose(model.predict(val).mean, val.last_target, rtol=1e-4, atol=1e-6)
        assert np.array_equal(fitted, kept)
    finally:
        model.shrink = kept


def test_shrink_survives_save_and_load(tmp_path, wm_trained: TrainingOutcome) -> None:
    model = wm_trained.result.model
    path = model.save(tmp_path / "wm.pt")
    loaded = WorldModel.load(path)
    assert np.array_equal(loaded.shrink, model.shrink)
    assert np.allclose(loaded.normaliser.target_scale, model.normaliser.target_scale)
    # A file from before shrinkage existed loads with the unshrunk model.
    state = torch.load(path, weights_only=True)
    meta = json.loads(state["meta"])
    del meta["shrink"]
    state["meta"] = json.dumps(meta)
    torch.save(state, tmp_path / "old.pt")
    assert np.all(WorldModel.load(tmp_path / "old.pt").shrink == 1.0)
