"""The code location: every area's definitions, merged, plus resources and executor for the profile.

Each area under ``assets/`` exports ``defs`` (its assets, checks, jobs,
schedules and sensors) without resources; this module only assembles them and
adds what ``pipelines.profiles`` picks for the profile, so an area never knows
its environment.
"""

from __future__ import annotations

import dagster as dg

from assets import (
    alerting,
    automation,
    canary,
    evaluation,
    healing,
    proposals,
    telemetry,
    training,
    warehouse,
)
from pipelines.profiles import executor_for, get_profile, resources_for

# In the order of the loop: telemetry -> warehouse -> model -> proposals -> canary; then
# the alerting and healing paths, and the automation sensor that drives the conditions of all.
AREAS = (telemetry, warehouse, training, evaluation, proposals, canary, alerting, healing, automation)


def build_definitions(profile: str) -> dg.Definitions:
    """Every area's ``defs`` with the resources and executor of ``profile`` (``local`` | ``prod``)."""
    return dg.Definitions.merge(
        *(area.defs for area in AREAS),
        dg.Definitions(resources=resources_for(profile), executor=executor_for(profile)),
    )


defs = build_definitions(get_profile())
