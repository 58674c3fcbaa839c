"""The world model as an MLflow pyfunc: ``mlflow.pyfunc.load_model("models:/aegis-world-model@champion")``.

Input: KPI rows in the ``fct_shard_kpis`` contract (one or more shards; the last
``window`` buckets of each are used). Output: one row per shard with the
predicted next-bucket value of every target KPI and its 90% interval
(``<kpi>``, ``<kpi>_low``, ``<kpi>_high``), assuming the parameters in force in
the last bucket stay. Counterfactual questions go through
:func:`aegis.worldmodel.effects.predict_effects` on the unwrapped model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

from aegis.telemetry import KPI_KEY_COLUMNS
from aegis.worldmodel.dataset import INPUT_KPIS, PARAM_COLUMNS, TARGET_KPIS, history_windows
from aegis.worldmodel.model import WorldModel

ARTIFACT_KEY = "world_model"


def predict_frame(model: WorldModel, rows: pd.DataFrame) -> pd.DataFrame:
    """Next-bucket predictions for every shard in ``rows``."""
    out = []
    for shard_id, group in rows.groupby(rows["shard_id"].astype(str), sort=True):
        sample, _ = history_windows(group, model.window)
        pred = model.predict(sample)
        record: dict[str, Any] = {
            "shard_id": shard_id,
            "bucket_start": pd.Timestamp(sample.target_start[0], tz="UTC"),
        }
        for i, kpi in enumerate(TARGET_KPIS):
            record[kpi] = float(pred.mean[0, i])
            record[f"{kpi}_low"] = float(pred.low[0, i])
            record[f"{kpi}_high"] = float(pred.high[0, i])
        out.append(record)
    return pd.DataFrame(out)


class WorldModelPyfunc(PythonModel):
    """Loads the ensemble file logged as an artifact; keeps it as ``world_model``."""

    def __init__(self) -> None:
        self.world_model: WorldModel | None = None

    def load_context(self, context: Any) -> None:
        self.world_model = WorldModel.load(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        # Untyped on purpose: MLflow 3 reads type hints as a schema; the logged signature is the schema.
        if self.world_model is None:
            self.load_context(context)
        assert self.world_model is not None
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return predict_frame(self.world_model, frame)


def to_pyfunc_input(rows: pd.DataFrame) -> pd.DataFrame:
    """KPI rows in the types the logged signature declares.

    MLflow's schema knows only naive datetimes, so ``bucket_start`` travels as
    naive UTC; KPIs and parameters as float64, ``config_version`` as int64.
    """
    out = rows.loc[
        :, [c for c in (*KPI_KEY_COLUMNS, *INPUT_KPIS, *PARAM_COLUMNS) if c in rows.columns]
    ].copy()
    out["bucket_start"] = pd.to_datetime(out["bucket_start"], utc=True).dt.tz_localize(None)
    out["config_version"] = pd.to_numeric(out["config_version"]).astype("int64")
    for col in ("shard_id", "region"):
        out[col] = out[col].astype(str)
    numeric = [*INPUT_KPIS, *PARAM_COLUMNS]
    out[numeric] = out[numeric].astype("float64")
    return out.reset_index(drop=True)


def input_example(rows: pd.DataFrame, window: int) -> pd.DataFrame:
    """The last ``window`` buckets of one shard: a valid request for the signature."""
    shard = sorted(rows["shard_id"].astype(str).unique())[0]
    example = rows[rows["shard_id"].astype(str) == shard].sort_values("bucket_start").tail(window)
    return to_pyfunc_input(example)
