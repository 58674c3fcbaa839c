"""``TrainingResource``: when the world model retrains on new telemetry.

The ``world_model_new_telemetry`` sensor asks this resource for its threshold
at every tick, so the profile (``pipelines.profiles``) decides it, or, left
unset, ``$AEGIS_RETRAIN_NEW_ROWS`` as the stack was started with: nothing is
read from the environment when the code location is imported.
"""

from __future__ import annotations

import os

from dagster import ConfigurableResource
from pydantic import Field

from aegis.worldmodel.settings import DEFAULT_RETRAIN_NEW_ROWS, RETRAIN_NEW_ROWS_ENV


class TrainingResource(ConfigurableResource):
    """Retraining triggers of the world model."""

    retrain_new_rows: int | None = Field(
        default=None,
        ge=0,
        description=f"KPI rows fct_shard_kpis must gain since the last dataset before a retrain; default: "
        f"${RETRAIN_NEW_ROWS_ENV}, else {DEFAULT_RETRAIN_NEW_ROWS}",
    )

    def retrain_threshold(self) -> int:
        if self.retrain_new_rows is not None:
            return self.retrain_new_rows
        raw = os.environ.get(RETRAIN_NEW_ROWS_ENV, "").strip()
        if not raw:
            return DEFAULT_RETRAIN_NEW_ROWS
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{RETRAIN_NEW_ROWS_ENV}={raw!r} is not a whole number of rows") from None
