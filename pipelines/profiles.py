"""The one place that picks resources per profile (``AEGIS_PROFILE``: ``local`` | ``prod``).

Assets name the resources they need (``lake``, ``game``, ``dbt``, ...; the
classes live in ``assets.resources``); which lake, which backend and which
warehouse they get is decided here and nowhere else, so an asset never
branches on the environment.  ``prod`` reads the
Pulumi stack outputs from the environment variables that
``pipelines.stack_outputs`` names and fails with the list of missing ones.
Dagster's own storage is instance configuration, not a resource: locally
``aegis up`` writes ``AEGIS_HOME/dagster/dagster.yaml`` (SQLite);
:func:`prod_instance_config` is the PostgreSQL (Aurora) shape for the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aegis import db
from aegis.config import current_profile
from aegis.stack import RUN_TAG_LIMITS
from assets.resources.changes import ChangeSetResource
from assets.resources.game import GameBackendResource
from assets.resources.healing import HealingResource
from assets.resources.lake import LakeResource
from assets.resources.mlflow import MlflowResource
from assets.resources.training import TrainingResource
from pipelines.stack_outputs import STACK_OUTPUT_ENV, read_prod_env

PROFILES = ("local", "prod")
DAGSTER_PG_SCHEME = "postgresql+psycopg2"


def get_profile() -> str:
    """The active profile (an unknown value is an error, never a silent fallback)."""
    return current_profile()


def _dbt(profile: str) -> Any:
    # Imported on use: assets.resources.dbt imports dagster-dbt and parses a stale project,
    # which prod_instance_config's callers do not need.
    from assets.resources.dbt import dbt_resource

    return dbt_resource(profile)


def resources_for(profile: str) -> dict[str, Any]:
    """Resources keyed by the names assets ask for."""
    if profile == "local":
        return {
            "lake": LakeResource(),
            "game": GameBackendResource(),
            "dbt": _dbt(profile),
            "mlflow": MlflowResource(),
            "training": TrainingResource(),
            "changes": ChangeSetResource(),
            "healing": HealingResource(),
        }
    if profile == "prod":
        stack = read_prod_env()  # every missing stack output and secret in one error, before any run
        return {
            "lake": LakeResource(
                s3_bucket=stack["lakeBucket"],
                s3_landing_prefix=stack["lakeLandingPrefix"],
                region=stack["primaryRegion"],
            ),
            "game": GameBackendResource(base_url=stack["gameApiUrl"]),
            "dbt": _dbt(profile),
            "mlflow": MlflowResource(tracking_uri=stack["mlflowTrackingUri"]),
            "training": TrainingResource(),
            "changes": ChangeSetResource(backend_url=stack["gameApiUrl"]),
            # Alarms arrive through the queue; the Alertmanager stand-in probe has no receiver there.
            "healing": HealingResource(
                alert_queue_url=stack["alertQueueUrl"], region=stack["primaryRegion"], probe="off"
            ),
        }
    raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")


def executor_for(profile: str) -> Any:
    """The executor every job gets by default (asset jobs and automation runs included).

    ``local``: in-process. A step subprocess re-imports the whole code location
    (dbt, torch, MLflow: 15-25 s on a 2-core machine), which dwarfed the steps
    themselves (an ingest of 400 batches is ~2 s; a GX check under 1 s): with the
    multiprocess executor one ingest run took ~2 min and a warehouse build ~5.
    ``prod``: multiprocess, steps in parallel inside the run's pod.
    """
    import dagster as dg

    if profile == "local":
        return dg.in_process_executor
    if profile == "prod":
        return dg.multiprocess_executor
    raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")


def prod_instance_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """dagster.yaml for prod: run/event/schedule storage in Aurora PostgreSQL, values from the environment.

    Fails first, naming every missing stack output and secret. A database host that is a
    directory (``/...``, libpq's Unix-socket convention) is passed as the ``host`` parameter.
    """
    env = read_prod_env(environ)
    postgres_db: dict[str, Any] = {
        "hostname": {"env": db.ENV_DB_HOST},
        "port": {"env": db.ENV_DB_PORT},
        "db_name": {"env": STACK_OUTPUT_ENV["dagsterDatabase"]},
        # the user and password are not stack outputs: the platform injects the database secret
        "username": {"env": db.ENV_DB_USER},
        "password": {"env": db.ENV_DB_PASSWORD},
        # dagster-postgres issues `NOTIFY run_events, %(id)s`, which only psycopg2's client-side
        # interpolation accepts; SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
        "scheme": DAGSTER_PG_SCHEME,
    }
    if env["dbWriterEndpoint"].startswith("/"):
        postgres_db["hostname"] = "localhost"
        postgres_db["params"] = {"host": env["dbWriterEndpoint"]}
    postgres = {"postgres_db": postgres_db}
    return {
        "storage": {"postgres": postgres},
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"max_concurrent_runs": 20, "tag_concurrency_limits": RUN_TAG_LIMITS},
        },
        "telemetry": {"enabled": False},
    }
