"""End to end, no clicks: `aegis up` starts the world server and `dagster dev`; the world
lands batches, the landing sensor ingests them, automation builds the marts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port

pytestmark = pytest.mark.slow
MART_TIMEOUT_S = 6 * 60
MART = "fct_shard_kpis"


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"aegis up exited early with {proc.returncode}"
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} not ready after {timeout_s} s")


def test_stack_materializes_the_marts_on_its_own(tmp_path: Path) -> None:
    import dagster as dg
    import duckdb

    home = tmp_path / "aegis-home"
    world_port, dagster_port = free_port(), free_port()
    env = {**os.environ, "AEGIS_HOME": str(home), "AEGIS_PROFILE": "local"}
    env.pop("DAGSTER_HOME", None)
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("aegis")),
            "up",
            "--world-port",
            str(world_port),
            "--dagster-port",
            str(dagster_port),
            "--speed",
            "600",
            "--players-per-shard",
            "200",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{world_port}/v1/health", 120, proc)
        _wait_http(f"http://127.0.0.1:{dagster_port}/server_info", 240, proc)
        dagster_home = home / "dagster"
        deadline = time.monotonic() + MART_TIMEOUT_S
        event = None
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            while time.monotonic() < deadline and event is None:
                assert proc.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
                event = instance.get_latest_materialization_event(dg.AssetKey(MART))
                if event is None:
                    time.sleep(10)
            assert event is not None, f"{MART} not materialized within {MART_TIMEOUT_S} s"
            bronze = instance.get_latest_materialization_event(dg.AssetKey("bronze_events"))
            assert bronze is not None
            assert bronze.asset_materialization.metadata["bronze_rows"].value > 0
        rows = None
        for _ in range(30):  # dbt may hold the DuckDB file for a moment
            try:
                with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
                    rows = con.execute(f"SELECT count(*), count(DISTINCT shard_id) FROM {MART}").fetchone()
                break
            except duckdb.IOException:
                time.sleep(2)
        assert rows is not None and rows[0] > 0 and rows[1] > 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # what Ctrl-C does: aegis up stops its children
        try:
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()
    for port in (world_port, dagster_port):  # nothing left listening
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
