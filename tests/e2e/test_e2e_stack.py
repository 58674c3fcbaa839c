"""End to end, no clicks: `aegis up` starts the world server, `dagster dev` and the MLflow UI; the
world lands batches, the landing sensor ingests them, automation builds the marts; SIGTERM stops
all of it.

The test launches no run itself: it only reads the instance, the warehouse and the HTTP endpoints.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import ISSUE_MARTS, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(9 * 60)]
READY_TIMEOUT_S = 240
MART_TIMEOUT_S = 5 * 60
POLL_S = 5
STOP_TIMEOUT_S = 60
# Every mart the warehouse builds must have materialized, fct_shard_kpis included (its path runs
# through stg_lake__world_configs, which plain eager() never built).
MARTS = ISSUE_MARTS
AUTOMATION_SENSOR = "default_automation_condition_sensor"
# Demo speed: 2 game minutes per wall second, so a few minutes of wall clock hold hours of game time.
SPEED = "120"
PLAYERS_PER_SHARD = "200"


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes], log: Path) -> float:
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, (
            f"aegis up exited early with {proc.returncode}:\n{log.read_text()[-3000:]}"
        )
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")


def _read_warehouse(warehouse: Path, sql: str) -> list[tuple]:
    import duckdb

    for _ in range(30):  # a dbt build may hold the DuckDB file for a moment
        try:
            with duckdb.connect(str(warehouse), read_only=True) as con:
                return con.execute(sql).fetchall()
        except duckdb.IOException:
            time.sleep(2)
    raise AssertionError(f"warehouse {warehouse} stayed locked")


def _port_closed(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    except httpx.HTTPError:
        return True
    return False


def test_stack_materializes_the_marts_on_its_own(tmp_path: Path) -> None:
    import dagster as dg

    home = tmp_path / "aegis-home"
    world_port, dagster_port, mlflow_port = free_port(), free_port(), free_port()
    alerting_ports = {  # the receiver, Prometheus and Alertmanager start too, on free ports
        f"AEGIS_{name}_PORT": str(free_port()) for name in ("ALERTS", "PROMETHEUS", "ALERTMANAGER")
    }
    env = {**os.environ, **alerting_ports, "AEGIS_HOME": str(home), "AEGIS_PROFILE": "local"}
    env.pop("DAGSTER_HOME", None)
    log_path = tmp_path / "up.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("aegis")),
            "up",
            "--world-port",
            str(world_port),
            "--dagster-port",
            str(dagster_port),
            "--mlflow-port",
            str(mlflow_port),
            "--speed",
            SPEED,
            "--players-per-shard",
            PLAYERS_PER_SHARD,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    timings: dict[str, float] = {}
    started = time.monotonic()
    try:
        _wait_http(f"http://127.0.0.1:{world_port}/v1/health", 120, proc, log_path)
        assert _wait_http(f"http://127.0.0.1:{mlflow_port}/health", READY_TIMEOUT_S, proc, log_path) >= 0
        search = httpx.get(
            f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/search",
            params={"max_results": 10},
            timeout=10,
        )
        assert search.status_code == 200, search.text
        assert "Default" in {e["name"] for e in search.json().get("experiments", [])}
        assert (home / "mlflow" / "mlflow.db").exists()  # the UI serves AEGIS_HOME's tracking database
        _wait_http(f"http://127.0.0.1:{dagster_port}/server_info", READY_TIMEOUT_S, proc, log_path)
        timings["ready"] = time.monotonic() - started

        with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
            deadline = time.monotonic() + MART_TIMEOUT_S
            missing: list[str] = list(MARTS)
            while missing and time.monotonic() < deadline:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                missing = [
                    m for m in MARTS if instance.get_latest_materialization_event(dg.AssetKey(m)) is None
                ]
                if missing:
                    time.sleep(POLL_S)
            timings["marts"] = time.monotonic() - started
            runs = {r.dagster_run.run_id: r.dagster_run for r in instance.get_run_records()}
            summary = "\n".join(f"{r.job_name} {r.status.value} {dict(r.tags)}" for r in runs.values())
            assert not missing, f"not materialized within {MART_TIMEOUT_S} s: {missing}\nruns:\n{summary}"

            # Every mart came from a run the automation sensor launched; the ingest from the landing sensor.
            for mart in MARTS:
                event = instance.get_latest_materialization_event(dg.AssetKey(mart))
                assert event is not None
                tags = runs[event.run_id].tags
                assert tags.get("dagster/sensor_name") == AUTOMATION_SENSOR, (mart, tags)
                assert tags.get("dagster/auto_materialize") == "true", (mart, tags)
            bronze = instance.get_latest_materialization_event(dg.AssetKey("bronze_events"))
            assert bronze is not None and bronze.asset_materialization is not None
            assert runs[bronze.run_id].tags.get("dagster/sensor_name") == "landing_sensor"
            assert bronze.asset_materialization.metadata["bronze_rows"].value > 0
            # No run came from anywhere but the stack's own sensors (nothing by hand or by the test):
            # the default world pages for latency at a region's peak, so healing runs may join in.
            launched_by = {
                r.tags.get("dagster/sensor_name") or r.tags.get("dagster/schedule_name")
                for r in runs.values()
            }
            assert launched_by <= {
                "landing_sensor",
                AUTOMATION_SENSOR,
                "world_model_new_telemetry",
                "healing_alert_sensor",
                "canary_judge_sensor",
            }, summary
            # Warming up is not a failure: a fresh stack leaves no red run.
            failed = [r for r in runs.values() if r.status == dg.DagsterRunStatus.FAILURE]
            why = [
                f"{r.job_name} {r.run_id}: {e.dagster_event.step_key}: {e.dagster_event.event_specific_data.error.message}"
                for r in failed
                for e in instance.all_logs(r.run_id)
                if e.dagster_event is not None and e.dagster_event.event_type_value == "STEP_FAILURE"
            ]
            assert not failed, "\n".join(why) or str([r.run_id for r in failed])
            # Pacing: never two ingest runs in flight at once (the landing sensor waits for the last one).
            ingest = instance.get_run_records(dg.RunsFilter(job_name="ingest_telemetry"))
            spans = sorted((r.create_timestamp.timestamp(), r.end_time or time.time()) for r in ingest)
            assert all(b[0] >= a[1] - 1 for a, b in itertools.pairwise(spans)), spans

        kpis = _read_warehouse(
            home / "warehouse.duckdb",
            "select count(*), count(distinct shard_id), max(players_online) from fct_shard_kpis",
        )
        assert kpis[0][0] > 0 and kpis[0][1] >= 2 and kpis[0][2] > 0, kpis
        health = _read_warehouse(home / "warehouse.duckdb", "select count(*) from fct_server_health")
        funnel = _read_warehouse(home / "warehouse.duckdb", "select sum(starts) from fct_progression_funnel")
        assert health[0][0] > 0 and funnel[0][0] > 0, (health, funnel)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # what Ctrl-C does: aegis up stops its children
        try:
            code = proc.wait(timeout=STOP_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()
        timings["stopped"] = time.monotonic() - started
        print(f"timings (s since start): {timings}")
    assert code == 0, log_path.read_text()[-3000:]
    assert "stopped" in log_path.read_text()
    for port in (world_port, dagster_port, mlflow_port, *map(int, alerting_ports.values())):  # nothing left
        assert _port_closed(port), port
    # and no process of the stack is left: every child ran in its own group under aegis up
    leftover = subprocess.run(
        ["pgrep", "-f", str(home)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert not leftover, leftover
