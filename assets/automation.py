"""Declarative automation for the whole code location: the one automation condition sensor.

Every asset with an ``automation_condition`` (the warehouse's dbt models, the
SLO alerts, the proposals, the canary launch) is evaluated by this sensor, so
it belongs to no single area. Its runs carry ``AUTOMATION_TAG``: ``aegis up``'s
dagster.yaml (:mod:`aegis.stack`) runs them one at a time, since the warehouse
builds in them write one DuckDB file, which takes a single writer. On by default.
"""

import dagster as dg

from aegis.stack import AUTOMATION_TAG

AUTOMATION_INTERVAL_S = 15
AUTOMATION_SENSOR_NAME = "default_automation_condition_sensor"

automation_sensor = dg.AutomationConditionSensorDefinition(
    AUTOMATION_SENSOR_NAME,
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_INTERVAL_S,
    run_tags={AUTOMATION_TAG: "declarative"},
    description="Evaluates every asset's automation condition (marts follow bronze); on by default.",
)

defs = dg.Definitions(sensors=[automation_sensor])

__all__ = ["AUTOMATION_INTERVAL_S", "AUTOMATION_SENSOR_NAME", "AUTOMATION_TAG", "automation_sensor", "defs"]
