"""The warehouse lock: readers queue behind a build instead of failing it, across processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from aegis import warehouse as warehouse_db

HOLD = """
import sys, time
from pathlib import Path
from aegis import warehouse as w
with w.warehouse_lock(Path(sys.argv[1]), exclusive=sys.argv[2] == "x", wait_s=10):
    if sys.argv[2] == "x":  # a build: DuckDB's own write lock too, as dbt holds it
        import duckdb
        con = duckdb.connect(sys.argv[1])
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def _db(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table fct_shard_kpis as select 1 as n")
    return path


def _hold(path: Path, mode: str, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), mode, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_reader_waits_for_the_build_then_reads(tmp_path: Path) -> None:
    path = _db(tmp_path)
    build = _hold(path, "x", 1.5)
    started = time.monotonic()
    with warehouse_db.connect(path, wait_s=30) as con:
        assert con.execute("select n from fct_shard_kpis").fetchone() == (1,)
    assert time.monotonic() - started >= 1.0  # it queued behind the build instead of failing
    assert build.wait(timeout=10) == 0


def test_a_sensor_that_cannot_wait_gets_warehouse_busy(tmp_path: Path) -> None:
    path = _db(tmp_path)
    build = _hold(path, "x", 3)
    try:
        with pytest.raises(warehouse_db.WarehouseBusy, match="stayed locked"):
            warehouse_db.connect(path, wait_s=0.3)
        with pytest.raises(duckdb.IOException):  # what readers already handle
            warehouse_db.connect(path, wait_s=0.3)
    finally:
        build.wait(timeout=10)


def test_a_build_waits_for_readers_in_flight(tmp_path: Path) -> None:
    path = _db(tmp_path)
    reader = _hold(path, "s", 1.0)
    started = time.monotonic()
    with warehouse_db.warehouse_lock(path, exclusive=True, wait_s=30):
        assert time.monotonic() - started >= 0.7
        with duckdb.connect(str(path)) as con:  # DuckDB's write lock is free: no reader is in
            con.execute("insert into fct_shard_kpis values (2)")
    assert reader.wait(timeout=10) == 0


def test_readers_share_and_release(tmp_path: Path) -> None:
    path = _db(tmp_path)
    first = warehouse_db.connect(path, wait_s=1)
    second = warehouse_db.connect(path, wait_s=1)
    assert first.execute("select count(*) from fct_shard_kpis").fetchone() == (1,)
    first.close()
    second.close()
    with warehouse_db.warehouse_lock(path, exclusive=True, wait_s=1):
        pass  # both released


def test_no_warehouse_yet_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run the dbt assets first"):
        warehouse_db.connect(tmp_path / "missing.duckdb", wait_s=1)


def test_prod_publishes_the_build_and_readers_pull_the_newest_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run pods share no disk: the build's file goes to the platform bucket (moto server over
    HTTP), a reader elsewhere pulls it before connecting, a later build replaces it, and two
    threads pulling at once both end with the newest file."""
    import threading

    import boto3

    from aegis import warehouse as wh
    from tests.moto_support import moto_environment

    with moto_environment(monkeypatch):
        monkeypatch.setenv("AEGIS_PROFILE", "prod")
        monkeypatch.setenv("AEGIS_PLATFORM_BUCKET", "aegis-platform-test")
        boto3.client("s3").create_bucket(Bucket="aegis-platform-test")
        builder = tmp_path / "build-pod" / "warehouse.duckdb"
        reader = tmp_path / "reader-pod" / "warehouse.duckdb"
        assert not wh.available(reader)  # nothing published yet: "never built"
        builder.parent.mkdir()
        with duckdb.connect(str(builder)) as con:
            con.execute("create table t as select 1 as v")
        etag = wh.publish(builder)
        assert etag and wh.available(reader)
        with wh.connect(reader) as con:
            assert con.execute("select v from t").fetchall() == [(1,)]
        assert wh.pull(reader) is False  # same ETag: a 304, nothing downloaded
        with duckdb.connect(str(builder)) as con:
            con.execute("create or replace table t as select 2 as v")
        wh.publish(builder)
        errors: list[BaseException] = []

        def pull() -> None:
            try:
                wh.pull(reader)
            except BaseException as exc:  # collected: the assertion below names it
                errors.append(exc)

        threads = [threading.Thread(target=pull) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        with wh.connect(reader) as con:
            assert con.execute("select v from t").fetchall() == [(2,)]
        monkeypatch.setenv("AEGIS_PLATFORM_BUCKET", "no-such-platform-bucket")
        with pytest.raises(wh.WarehouseBusy, match="no-such-platform-bucket"):
            wh.connect(reader)
        assert wh.available(reader)  # a failed pull leaves the local copy to answer
