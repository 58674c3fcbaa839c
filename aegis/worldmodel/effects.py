"""Predicted effects of a proposed change: what the proposal and canary stages ask the model.

The effect of a changeset on a KPI is the model's prediction for the next
bucket with the changed parameters minus its prediction with the parameters
left as they are, from the same shard history. Both predictions share the
future's noise, so the interval is the ensemble's disagreement about the
*difference* (epistemic uncertainty), widened by a Student-t factor for the
few members: a change the model has never seen anything like gets a wide
interval, not a confident guess.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from aegis.domain import AutonomousChangeSet, WorldParams
from aegis.worldmodel.dataset import PARAM_COLUMNS, TARGET_KPIS, DatasetError, history_windows
from aegis.worldmodel.model import WorldModel

EFFECT_LEVEL = 0.90


class EffectEstimate(BaseModel):
    """Predicted change of one KPI in the next bucket, with its 90% interval."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delta: float = Field(description="Predicted KPI with the change minus without it")
    low: float
    high: float
    baseline: float = Field(description="Predicted KPI without the change")
    expected: float = Field(description="Predicted KPI with the change")


class EffectError(ValueError):
    """The effect cannot be predicted (bad history, bad change, unusable model)."""


def as_world_model(model: Any) -> WorldModel:
    """Accept the core model or an MLflow pyfunc loaded from the registry."""
    if isinstance(model, WorldModel):
        return model
    unwrap = getattr(model, "unwrap_python_model", None)
    if unwrap is not None:
        inner = unwrap()
        wm = getattr(inner, "world_model", None)
        if isinstance(wm, WorldModel):
            return wm
    raise EffectError(f"expected a WorldModel or an aegis-world-model pyfunc, got {type(model).__name__}")


def params_from_row(row: pd.Series) -> WorldParams:
    """The ``p_*`` columns of a KPI row back into :class:`WorldParams`."""
    data: dict[str, Any] = {}
    for name in WorldParams.field_names():
        cols = [c for c in PARAM_COLUMNS if c == f"p_{name}" or c.startswith(f"p_{name}_")]
        values = [float(row[c]) for c in cols]
        data[name] = values if len(cols) > 1 or cols[0] != f"p_{name}" else values[0]
    return WorldParams.model_validate(data)


def predict_effects(
    changeset: AutonomousChangeSet, history: pd.DataFrame, model: Any
) -> dict[str, EffectEstimate]:
    """Predicted next-bucket KPI deltas of ``changeset`` against no change, per target KPI.

    ``history`` holds KPI rows (the ``fct_shard_kpis`` contract) of the target
    shard; its last ``model.window`` buckets must be consecutive. The changed
    parameters are the changeset's ``after`` values applied to the parameters in
    force in the last bucket.
    """
    wm = as_world_model(model)
    if history is None or len(history) == 0:
        raise EffectError(f"no KPI history for shard {changeset.target!r}")
    if "shard_id" in history.columns:
        shards = set(history["shard_id"].astype(str))
        if shards != {changeset.target}:
            raise EffectError(
                f"history covers shard(s) {sorted(shards)}, the changeset targets {changeset.target!r}"
            )
    try:
        sample, tail = history_windows(history, wm.window)
        current = params_from_row(tail.iloc[-1])
        changed = current.apply(changeset.diff)
    except DatasetError as exc:
        raise EffectError(str(exc)) from exc
    except ValueError as exc:
        raise EffectError(f"changeset {changeset.id} cannot be applied: {exc}") from exc
    moved = sample.subset(np.zeros(1, dtype=int))
    moved.action = np.asarray([changed.to_vector()], dtype=np.float64)

    mu_base, _ = wm.predict_normalised(sample)
    mu_new, _ = wm.predict_normalised(moved)
    base_k, _ = wm.member_moments(sample)
    new_k, _ = wm.member_moments(moved)
    n = wm.normaliser
    baseline = n.untarget(mu_base)[0]
    expected = n.untarget(mu_new)[0]
    delta = expected - baseline
    member_delta = n.untarget(new_k[:, 0, :]) - n.untarget(base_k[:, 0, :])  # [K, T]
    k = member_delta.shape[0]
    if k > 1:
        t = stats.t.ppf(0.5 + EFFECT_LEVEL / 2, df=k - 1)
        half = t * member_delta.std(0, ddof=1) * np.sqrt(1 + 1 / k)
    else:  # one member cannot know what it does not know: no interval narrower than the effect itself
        half = np.abs(delta)
    return {
        kpi: EffectEstimate(
            delta=float(delta[i]),
            low=float(delta[i] - half[i]),
            high=float(delta[i] + half[i]),
            baseline=float(baseline[i]),
            expected=float(expected[i]),
        )
        for i, kpi in enumerate(TARGET_KPIS)
    }
