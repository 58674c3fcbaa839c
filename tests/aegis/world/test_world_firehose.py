"""A world lands to S3 as Firehose would (``aegis world run --ship-to`` / ``aegis world ship``),
through the CLI as a subprocess against a real moto server, and the S3 lake ingests it whole:
the world clock went up first, so no simulated event is judged "in the future"."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from aegis.lake.bronze import ingest_batches
from aegis.lake.store import Lake
from tests.moto_support import aws_env, moto_server

BUCKET = "aegis-world-lake"


@pytest.fixture
def s3_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with moto_server() as endpoint:
        env = {
            **os.environ,
            **aws_env(endpoint),
            "AEGIS_HOME": str(tmp_path / "home"),
            "AEGIS_PROFILE": "local",
        }
        creds = aws_env(endpoint)
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket=BUCKET)
        yield env


def _aegis(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aegis.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_world_run_ships_to_s3_and_the_s3_lake_ingests_everything(
    s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _aegis(
        s3_env,
        "world",
        "run",
        "--hours",
        "1",
        "--players-per-shard",
        "40",
        "--no-progress",
        "--json",
        "--ship-to",
        f"s3://{BUCKET}",
    )
    assert out.returncode == 0, out.stderr
    spool = tmp_path / "home" / "lake" / "landing" / "telemetry"
    assert not list(spool.rglob("*.parquet")), "shipped batches leave the spool"
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, s3_env[name])
    lake = Lake.s3(f"s3://{BUCKET}", state_dir=tmp_path / "pod", manifest_url=f"sqlite:///{tmp_path}/m.db")
    assert lake.store.exists("landing/telemetry/_world_clock.json")
    assert lake.store.list_files("landing/configs"), "the config change feed is shipped too"
    report = ingest_batches(lake)
    assert report.results and report.conserved
    assert report.quarantined_rows == 0, report.by_rule()
    assert report.bronze_rows == report.rows_in > 0
    # Nothing left to ship: a second pass is a no-op.
    again = _aegis(s3_env, "world", "ship", "--to", f"s3://{BUCKET}")
    assert again.returncode == 0 and "shipped 0 file(s)" in again.stdout


def test_shipping_to_a_missing_bucket_is_a_clear_error_and_keeps_the_spool(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    out = _aegis(s3_env, "world", "run", "--hours", "0.5", "--players-per-shard", "20", "--no-progress")
    assert out.returncode == 0, out.stderr
    spool = tmp_path / "home" / "lake" / "landing" / "telemetry"
    landed = sorted(spool.rglob("*.parquet"))
    assert landed
    failed = _aegis(s3_env, "world", "ship", "--to", "s3://no-such-lake-bucket")
    assert failed.returncode != 0 and "no-such-lake-bucket" in failed.stderr
    assert sorted(spool.rglob("*.parquet")) == landed  # nothing lost
