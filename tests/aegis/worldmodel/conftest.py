"""Shared, session-scoped synthetic data and one trained model (training is the slow part)."""

from __future__ import annotations

import pandas as pd
import pytest

from aegis.worldmodel.dataset import WorldModelDataset, build_dataset
from aegis.worldmodel.pipeline import TrainingOutcome, train_with_baselines
from aegis.worldmodel.synthetic import synthetic_kpis
from aegis.worldmodel.train import TrainConfig

SMALL_TRAIN = TrainConfig(epochs=15, members=2, hidden=32, batch_size=64, seed=0)


@pytest.fixture(scope="session")
def wm_rows() -> pd.DataFrame:
    return synthetic_kpis(shards=6, hours=36, seed=0)


@pytest.fixture(scope="session")
def wm_dataset(wm_rows: pd.DataFrame) -> WorldModelDataset:
    return build_dataset(wm_rows)


@pytest.fixture(scope="session")
def wm_trained(wm_dataset: WorldModelDataset) -> TrainingOutcome:
    return train_with_baselines(wm_dataset, SMALL_TRAIN)
