"""The one place that names the environment variables the ``prod`` profile reads.

The Pulumi program (infrastructure/) exports stack outputs; the platform
deployment injects each of them into Dagster's user code and run pods under the
environment variable named here (infrastructure/aegis_infra/platform.py loads
this file), and the ``prod`` profile reads them back with :func:`read_stack_env`.
No Dagster import: the infrastructure program loads this module on its own.

Outside the cluster, ``pulumi stack output --json | python -m pipelines.stack_outputs``
prints the same variables as ``export`` lines for a shell.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping

# stack output name -> environment variable
STACK_OUTPUT_ENV: dict[str, str] = {
    "primaryRegion": "AEGIS_AWS_REGION",
    "lakeBucket": "AEGIS_LAKE_BUCKET",
    "lakeLandingPrefix": "AEGIS_LAKE_LANDING_PREFIX",
    "auditBucket": "AEGIS_AUDIT_BUCKET",
    "platformBucket": "AEGIS_PLATFORM_BUCKET",
    "telemetryStreamName": "AEGIS_TELEMETRY_STREAM",
    "glueDatabase": "AEGIS_GLUE_DATABASE",
    "alertQueueUrl": "AEGIS_ALERT_QUEUE_URL",
    "dbWriterEndpoint": "AEGIS_DB_HOST",
    "dbReaderEndpoint": "AEGIS_DB_READER_HOST",
    "dbPort": "AEGIS_DB_PORT",
    "dbSecretArn": "AEGIS_DB_SECRET_ARN",
    "dagsterDatabase": "AEGIS_DAGSTER_DB",
    "ledgerDatabase": "AEGIS_LEDGER_DB",
    "clusterName": "AEGIS_EKS_CLUSTER",
    "mlflowTrackingUri": "MLFLOW_TRACKING_URI",
    "gameApiUrl": "AEGIS_GAME_API_URL",
}


# Secrets the platform injects beside the stack outputs (on EKS from Secrets Manager, the
# secret the stack output dbSecretArn names): environment variable -> what it is.
PROD_SECRET_ENV: dict[str, str] = {
    "AEGIS_DB_USER": "database user (secret dbSecretArn, key username)",
    "AEGIS_DB_PASSWORD": "database password (secret dbSecretArn, key password)",
}


class MissingStackOutputsError(RuntimeError):
    """The prod profile was started without the stack's outputs (or secrets) in its environment."""


def read_prod_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Stack outputs AND secrets of the prod profile; one error naming every missing value.

    Returns ``{stack output name: value}`` plus the secrets under their variable names.
    Called when the code location loads, so a bad deployment fails before any run starts.
    """
    env = os.environ if environ is None else environ
    missing: list[str] = []
    try:
        values = read_stack_env(env)
    except MissingStackOutputsError as exc:
        values = {}
        missing.append(str(exc).split(": ", 1)[1])
    secrets = {var: env.get(var, "").strip() for var in PROD_SECRET_ENV}
    absent = [f"{var} ({PROD_SECRET_ENV[var]})" for var, value in secrets.items() if not value]
    if absent:
        missing.append(", ".join(absent))
    if missing:
        raise MissingStackOutputsError(
            "the prod profile needs these environment variables, set from `pulumi stack output` and the "
            "database secret (on EKS the platform deployment sets them): " + ", ".join(missing)
        )
    return {**values, **secrets}


def read_stack_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return ``{stack output name: value}`` from the environment; raise listing every missing variable."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    missing: list[str] = []
    for output, var in STACK_OUTPUT_ENV.items():
        value = env.get(var, "").strip()
        if value:
            values[output] = value
        else:
            missing.append(f"{var} (stack output {output!r})")
    if missing:
        raise MissingStackOutputsError(
            "the prod profile needs these environment variables, set from `pulumi stack output` "
            "(on EKS the platform deployment sets them): " + ", ".join(missing)
        )
    return values


def env_from_outputs(outputs: Mapping[str, object]) -> dict[str, str]:
    """Map stack outputs (``pulumi stack output --json``) to the environment; missing outputs are an error."""
    missing = [name for name in STACK_OUTPUT_ENV if outputs.get(name) in (None, "")]
    if missing:
        raise MissingStackOutputsError(f"stack outputs missing: {', '.join(missing)}")
    return {var: str(outputs[name]) for name, var in STACK_OUTPUT_ENV.items()}


def main(argv: list[str] | None = None) -> int:
    try:
        outputs = json.load(sys.stdin)
        if not isinstance(outputs, dict):
            raise ValueError("expected a JSON object of stack outputs")
        env = env_from_outputs(outputs)
    except (ValueError, MissingStackOutputsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for var, value in env.items():
        print(f"export {var}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
