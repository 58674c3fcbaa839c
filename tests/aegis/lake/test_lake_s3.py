"""The lake on S3 (a real moto server over HTTP, reached through ``AWS_ENDPOINT_URL``).

Batches land under ``landing/telemetry/`` as Firehose writes them; the ingest
writes bronze and quarantine objects, each with one PutObject (never a partial
object), records the manifest, and a second pod with an empty scratch directory
continues where the first stopped: its event index is rebuilt from the manifest
and bronze, so a re-landed batch is still a duplicate.  An unreachable bucket is
a clear error that leaves nothing half-written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import boto3
import duckdb
import pyarrow as pa
import pytest

from aegis.lake.bronze import BRONZE_SCHEMA, ingest_batches, pending_batches
from aegis.lake.manifest import Manifest
from aegis.lake.store import Lake, LakeUnavailable, S3LakeStore, register_duckdb
from aegis.lake.synth import DEFAULT_START, make_batch
from aegis.telemetry import SCHEMA_V1
from tests.moto_support import aws_env, moto_server

BUCKET = "aegis-lake-test"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def s3(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    for name, value in aws_env(endpoint).items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", ()):
            client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


def _lake(tmp_path: Path, pod: str = "pod-a", manifest: Path | None = None) -> Lake:
    db = manifest or tmp_path / "manifest.db"
    return Lake.s3(f"s3://{BUCKET}", state_dir=tmp_path / pod, manifest_url=f"sqlite:///{db}")


def _land(lake: Lake, table: pa.Table, batch_id: str, shard: str = "eu-1") -> str:
    """Put a batch where Firehose would (one object, dynamic partitions)."""
    ts = table.column("ts")[0].as_py() if table.num_rows else DEFAULT_START
    rel = f"date={ts:%Y-%m-%d}/hour={ts:%H}/shard={shard}/{batch_id}.parquet"
    lake.store.write_parquet(lake.landing_rel(rel), table)
    return rel


def _keys(client: object, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)  # type: ignore[attr-defined]
    return sorted(o["Key"] for p in pages for o in p.get("Contents", ()))


def test_ingest_reads_firehose_landing_and_writes_bronze_and_quarantine_to_s3(
    s3: object, tmp_path: Path
) -> None:
    lake = _lake(tmp_path)
    good = make_batch(200, seed=1)
    bad = good.slice(0, 10).to_pylist()
    bad[0]["kind"] = "teleport"  # unknown kind: quarantined, the other rows kept
    bad_rel = _land(lake, pa.Table.from_pylist(bad, schema=pa.schema(list(SCHEMA_V1))), "b-bad")
    _land(lake, make_batch(150, seed=2), "b-good")
    lake.store.write_bytes(
        lake.landing_rel("date=2026-01-02/hour=00/shard=eu-1/b-junk.parquet"), b"not parquet"
    )

    report = ingest_batches(lake)

    assert report.conserved and len(report.results) == 3
    by_id = {r.batch_id: r for r in report.results}
    assert by_id["b-good"].status == "ok" and by_id["b-good"].bronze_rows == 150
    assert by_id["b-bad"].status == "partial" and by_id["b-bad"].quarantined_rows == 1
    assert by_id["b-junk"].status == "rejected"
    bronze = _keys(s3, "bronze/")
    assert len(bronze) == 2 and all(k.startswith("bronze/date=") for k in bronze)
    table = lake.store.read_parquet(by_id["b-good"].bronze_path)
    assert table.num_rows == 150 and table.column_names == BRONZE_SCHEMA.names
    quarantine = lake.store.read_parquet(by_id["b-bad"].quarantine_path)
    assert quarantine.num_rows == 1 and "teleport" in quarantine.column("reason")[0].as_py()
    assert quarantine.column("source_file").to_pylist() == [bad_rel]
    junk = by_id["b-junk"].quarantine_path
    assert lake.store.read_bytes(junk) == b"not parquet"  # kept whole, byte for byte
    reason = json.loads(lake.store.read_bytes(f"{junk}.reason.json"))
    assert reason["batch_id"] == "b-junk" and "Parquet" in reason["reason"]
    # the manifest's Parquet copy is in the lake for DuckDB readers
    exported = lake.store.read_parquet("ingest/manifest.parquet")
    assert sorted(exported.column("batch_id").to_pylist()) == ["b-bad", "b-good", "b-junk"]
    # nothing staged is left on the pod's disk
    assert not list((lake.state_dir / "staging").rglob("*.parquet"))
    assert pending_batches(lake) == [] and ingest_batches(lake).results == []


def test_a_second_pod_rebuilds_its_index_and_still_drops_duplicates(s3: object, tmp_path: Path) -> None:
    first = _lake(tmp_path, "pod-a")
    batch = make_batch(120, seed=7)
    _land(first, batch, "orig")
    assert ingest_batches(first).results[0].bronze_rows == 120
    # Another pod: same manifest and bucket, an empty scratch disk.
    assert first.store.exists("ingest/event_index.duckdb")  # the index the next pod starts from
    second = _lake(tmp_path, "pod-b")
    _land(second, batch, "replayed", shard="eu-1")  # the same events landed again
    said: list[str] = []
    (r,) = ingest_batches(second, log=said.append).results
    assert not [m for m in said if "re-read" in m], said  # it took the lake's index, not all of bronze
    assert r.batch_id == "replayed" and r.duplicate_rows == 120 and r.bronze_rows == 0
    totals = Manifest(second).totals()
    assert totals["rows_in"] == 240 and totals["bronze_rows"] == 120 and totals["duplicate_rows"] == 120


def test_duckdb_reads_bronze_on_s3_without_httpfs(s3: object, tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    _land(lake, make_batch(80, seed=3), "a")
    _land(lake, make_batch(70, seed=4, start=DEFAULT_START + timedelta(days=1)), "b")
    ingest_batches(lake)
    con = duckdb.connect()
    register_duckdb(con)
    rows = con.sql(
        f"SELECT date, count(*) FROM read_parquet('{lake.store.uri_of('bronze/*/*.parquet')}', "
        "hive_partitioning = true) GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert [n for _, n in rows] == [80, 70]


def test_an_unreachable_bucket_is_a_clear_error_and_nothing_is_written(s3: object, tmp_path: Path) -> None:
    lake = Lake.s3(
        "s3://no-such-bucket-here", state_dir=tmp_path / "pod", manifest_url=f"sqlite:///{tmp_path}/m.db"
    )
    with pytest.raises(LakeUnavailable, match="no-such-bucket-here"):
        ingest_batches(lake)
    assert Manifest(lake).totals()["batches"] == 0


def test_an_object_is_never_visible_half_written(
    s3: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PutObject that fails leaves no object; a rerun writes it whole."""
    lake = _lake(tmp_path)
    _land(lake, make_batch(50, seed=5), "x")
    store = lake.store
    assert isinstance(store, S3LakeStore)
    real_put = store.client.put_object
    calls = {"n": 0}

    def failing_put(**kwargs: object) -> object:
        if str(kwargs["Key"]).startswith("bronze/"):
            calls["n"] += 1
            raise ConnectionError("network cut mid-upload")
        return real_put(**kwargs)

    monkeypatch.setattr(store.client, "put_object", failing_put)
    with pytest.raises(LakeUnavailable, match="network cut"):
        ingest_batches(lake)
    assert calls["n"] == 1 and _keys(s3, "bronze/") == []
    assert Manifest(lake).totals()["unfinished"] == 1  # recorded as started, not as done
    monkeypatch.setattr(store.client, "put_object", real_put)
    (r,) = ingest_batches(lake).results  # the rerun resumes: the batch is done once
    assert r.bronze_rows == 50 and len(_keys(s3, "bronze/")) == 1
    totals = Manifest(lake).totals()
    assert totals["batches"] == 1 and totals["unfinished"] == 0 and totals["bronze_rows"] == 50


def test_great_expectations_suites_read_bronze_on_s3(s3: object, tmp_path: Path) -> None:
    from aegis.quality.suites import bronze_integrity, bronze_volume

    lake = _lake(tmp_path)
    assert not bronze_integrity(lake).success  # no bronze yet: a blocking failure saying so
    _land(lake, make_batch(90, seed=9), "g")
    ingest_batches(lake)
    report = bronze_integrity(lake)
    assert report.success, report
    assert report.details["sampled_newest_rows"] == 90
    volume = bronze_volume(lake)  # read from S3: the hours it counted are in its details
    assert volume.suite == "bronze_volume" and volume.details["periods"] >= 1, volume


@pytest.mark.postgres
def test_prod_lake_keeps_its_manifest_in_postgres_and_one_ingest_runs_at_a_time(
    s3: object, tmp_path: Path, pg_server: str
) -> None:
    """The prod combination: S3 files, the manifest in PostgreSQL (schema aegis_lake), the
    ingest lock a PostgreSQL advisory lock that a second pod waits on."""
    import threading

    from aegis.db import with_schema
    from aegis.lake.bronze import IngestBusy, ingest_lock
    from tests.pg_support import fresh_database

    url = with_schema(fresh_database(pg_server, "lake_manifest"), "aegis_lake")
    pod_a = Lake.s3(f"s3://{BUCKET}", state_dir=tmp_path / "a", manifest_url=url)
    pod_b = Lake.s3(f"s3://{BUCKET}", state_dir=tmp_path / "b", manifest_url=url)
    _land(pod_a, make_batch(60, seed=11), "pg-1")
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with ingest_lock(pod_a):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    with pytest.raises(IngestBusy), ingest_lock(pod_b, timeout_s=0.5):
        pass
    release.set()
    holder.join()
    (r,) = ingest_batches(pod_b).results
    assert r.bronze_rows == 60
    import sqlalchemy as sa

    with sa.create_engine(url).connect() as con:
        schema = con.execute(
            sa.text("select table_schema from information_schema.tables where table_name='batches'")
        )
        assert schema.scalar() == "aegis_lake"
        assert con.execute(sa.text("select status from aegis_lake.batches")).scalar() == "ok"


def test_an_unreachable_manifest_database_is_a_clear_error_and_nothing_is_written(
    s3: object, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    from tests.support import free_port

    url = f"postgresql+psycopg://aegis:secret-pw@127.0.0.1:{free_port()}/platform"
    lake = Lake.s3(f"s3://{BUCKET}", state_dir=tmp_path / "pod", manifest_url=url)
    _land(lake, make_batch(30, seed=13), "db-down")
    with pytest.raises(sa.exc.OperationalError) as err:
        ingest_batches(lake)
    assert "127.0.0.1" in str(err.value) and "secret-pw" not in str(err.value)
    assert _keys(s3, "bronze/") == [] and _keys(s3, "quarantine/") == []


def test_a_landed_key_never_picks_a_local_path_and_a_vanished_batch_is_forgotten(
    s3: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys are data: "//" or ".." in one must not stage (or delete) outside the scratch dir; a
    batch deleted after listing is not left "processing" for ever."""
    from aegis.lake import bronze
    from aegis.lake.landing import list_landed_in

    lake = _lake(tmp_path)
    evil = f"landing/telemetry//{tmp_path}/escaped.parquet"
    lake.store.write_parquet(evil, make_batch(20, seed=21))
    lake.store.write_parquet("landing/telemetry/date=2026-01-02/../../x/up.parquet", make_batch(20, seed=22))
    staged = [b.path for b in list_landed_in(lake)]
    assert staged and all(p.parent == lake.state_dir / "staging" for p in staged)
    report = ingest_batches(lake)
    assert report.conserved and report.bronze_rows == 40
    assert not (tmp_path / "escaped.parquet").exists()

    _land(lake, make_batch(30, seed=23), "gone-soon")
    real_stage = bronze._stage

    def stage_after_retention(lk: Lake, batch: object) -> Path:
        lk.store.delete(lk.landing_rel(batch.rel))  # type: ignore[attr-defined]
        return real_stage(lk, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(bronze, "_stage", stage_after_retention)
    said: list[str] = []
    assert ingest_batches(lake, log=said.append).results == []
    assert any("removed from the landing" in m for m in said)
    assert Manifest(lake).totals()["unfinished"] == 0
