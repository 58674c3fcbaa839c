"""The code location: every area's definitions, merged, plus resources for the active profile.

Each assets module exports ``defs`` without resources; this is the one place
that adds them (``pipelines.profiles``), so an area never knows its environment.
"""

from __future__ import annotations

import dagster as dg

from assets import alerting, evaluation, telemetry, training, warehouse
from assets import canary as canary_assets
from assets import healing as healing_assets
from assets import proposals as proposals_assets
from pipelines.profiles import executor_for, get_profile, resources_for
from pipelines.schedules import SCHEDULES
from pipelines.sensors import SENSORS

defs = dg.Definitions.merge(
    telemetry.defs,
    warehouse.defs,
    training.defs,
    evaluation.defs,
    alerting.defs,
    proposals_assets.defs,
    healing_assets.defs,
    canary_assets.defs,
    dg.Definitions(
        sensors=SENSORS,
        schedules=SCHEDULES,
        resources=resources_for(get_profile()),
        executor=executor_for(get_profile()),
    ),
)
