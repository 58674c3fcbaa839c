"""The Dagster areas, one module per stage, and the resources they ask for (``assets.resources``).

Each area module (telemetry, warehouse, training, evaluation, proposals, canary,
alerting, healing, automation) holds its assets, asset checks, jobs, schedules
and sensors and exports them as ``defs`` without resources;
``pipelines.definitions`` merges the areas and adds the profile's resources.
"""
