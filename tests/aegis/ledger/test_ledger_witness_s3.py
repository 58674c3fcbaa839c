"""The production witness: checkpoints in an S3 Object Lock bucket (moto in server mode, over real HTTP)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner

from aegis.cli import cli
from aegis.config import AegisPaths
from aegis.ledger import Ledger
from aegis.ledger import witness as witness_module
from aegis.ledger.witness import S3Witness, WitnessError, checkpoint_name, default_witness
from tests.support import free_port

BUCKET = "aegis-audit"
PREFIX = "ledger-witness"
REGION = "us-east-1"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A boto3 client of a moto S3 server with an Object Lock bucket (COMPLIANCE default retention)."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    httpx.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()  # moto's state is per process
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    client.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    client.put_object_lock_configuration(
        Bucket=BUCKET,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    try:
        yield client
    finally:
        server.stop()


def _filled(witness: S3Witness, n: int = 5) -> Ledger:
    ledger = Ledger(witness=witness)
    for i in range(n):
        ledger.append("note", f"cs-{i}", {"i": i}, actor="t")
    return ledger


def test_checkpoints_land_locked_in_the_bucket(aegis_home: AegisPaths, s3: Any) -> None:
    witness = S3Witness(BUCKET, PREFIX, client=s3)
    ledger = _filled(witness)
    report = ledger.verify()
    assert report.ok and report.witness == f"s3://{BUCKET}/{PREFIX}/" and report.witnessed_seq == 6
    key = f"{PREFIX}/{checkpoint_name(6)}"
    assert s3.head_object(Bucket=BUCKET, Key=key)["ObjectLockMode"] == "COMPLIANCE"
    assert [c.seq for c in witness.checkpoints()] == [2, 3, 4, 5, 6]
    # nobody can remove a locked checkpoint, nor write another over it
    version = s3.list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"][0]["VersionId"]
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=BUCKET, Key=key, VersionId=version)
    cp = witness.latest()
    assert cp is not None
    with pytest.raises(WitnessError, match="already holds seq 6"):
        witness.put(cp.model_copy(update={"head_hash": "e" * 64}))
    witness.put(cp)  # the same checkpoint again is a no-op, not an error
    assert len(s3.list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"]) == 1


def test_truncation_is_caught_by_the_bucket(aegis_home: AegisPaths, s3: Any) -> None:
    _filled(S3Witness(BUCKET, PREFIX, client=s3)).dispose()
    with sqlite3.connect(aegis_home.ledger) as conn:
        conn.execute("DROP TRIGGER audit_records_no_delete")
        (h,) = conn.execute("SELECT hash FROM audit_records WHERE seq = 3").fetchone()
        conn.execute("DELETE FROM audit_records WHERE seq > 3")
        conn.execute("UPDATE ledger_head SET seq = 3, hash = ?", (h,))
    result = CliRunner().invoke(cli, ["audit", "--witness", f"s3://{BUCKET}/{PREFIX}", "verify"])
    assert result.exit_code == 1 and "3 record(s) were removed from the end (truncation)" in result.output
    assert f"s3://{BUCKET}/{PREFIX}/" in result.output


def test_latest_spans_prefix_buckets(
    aegis_home: AegisPaths, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(witness_module, "BUCKET_SIZE", 2)
    witness = S3Witness(BUCKET, "small-buckets", client=s3)
    ledger = _filled(witness, n=6)
    latest = witness.latest()
    assert latest is not None and latest.seq == 7
    assert ledger.verify().ok


def test_prod_profile_anchors_in_the_audit_bucket(
    aegis_home: AegisPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AEGIS_PROFILE", "prod")
    monkeypatch.delenv("AEGIS_AUDIT_BUCKET", raising=False)
    with pytest.raises(WitnessError, match="AEGIS_AUDIT_BUCKET"):
        default_witness(aegis_home.ledger_url)
    monkeypatch.setenv("AEGIS_AUDIT_BUCKET", BUCKET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    assert default_witness("postgresql+psycopg://db/ledger").describe() == f"s3://{BUCKET}/{PREFIX}/"
