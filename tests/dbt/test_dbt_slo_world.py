"""The warehouse on the real simulator: SLO pages only on a fault; the economy's rates are sane.

Real ``run_world`` worlds, ingested with ``ingest_batches`` and built with
``dbt build`` (as Dagster runs it). Calibration of the latency SLO is explained
in dbt/dbt_project.yml (vars latency_threshold_ms).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from aegis.config import AegisPaths
from aegis.domain import Fault, FaultKind
from aegis.lake.bronze import ingest_batches
from aegis.world.runner import run_world
from aegis.world.sim import World

DBT_DIR = Path(__file__).resolve().parents[2] / "dbt"
SPIKED_SHARD = "eu-west-1"
PLAYERS = 5000  # the default world's population per shard: the load the SLO is calibrated on

pytestmark = pytest.mark.slow


def _build(home: AegisPaths) -> duckdb.DuckDBPyConnection:
    report = ingest_batches(home)
    assert report.bronze_rows > 0
    dbt = Path(sys.executable).with_name("dbt")
    args = [str(dbt), "build", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)]
    args += ["--vars", json.dumps({"aegis_home": str(home.home)})]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"dbt build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert "ERROR=0" in proc.stdout, proc.stdout[-2000:]
    con = duckdb.connect(str(home.warehouse), read_only=True)
    con.execute("set TimeZone = 'UTC'")
    return con


def _home(tmp_path_factory: pytest.TempPathFactory, name: str) -> AegisPaths:
    return AegisPaths.from_env(tmp_path_factory.mktemp(name) / "home").ensure()


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory):
    home = _home(tmp_path_factory, "healthy")
    run_world(home, 2.0, world=World(seed=7, players_per_shard=PLAYERS), explore=False, workers=1)
    con = _build(home)
    yield con
    con.close()


@pytest.fixture(scope="module")
def spiked(tmp_path_factory: pytest.TempPathFactory):
    """The same world, with a 45-minute x10 latency spike on one shard after the first game hour."""
    home = _home(tmp_path_factory, "spiked")
    world = World(seed=7, players_per_shard=PLAYERS)
    run_world(home, 1.0, world=world, explore=False, workers=1)
    fault = Fault(kind=FaultKind.LATENCY_SPIKE, shard_id=SPIKED_SHARD, duration_minutes=45, magnitude=10)
    world.shards[SPIKED_SHARD].inject(fault, world.game_time)
    run_world(home, 1.0, world=world, explore=False, workers=1)
    con = _build(home)
    yield con
    con.close()


def test_threshold_is_the_calibrated_one() -> None:
    project = yaml.safe_load((DBT_DIR / "dbt_project.yml").read_text())
    assert project["vars"]["latency_threshold_ms"] == 500
    assert project["vars"]["slo_target"] == 0.999


def test_fault_free_world_never_pages(healthy) -> None:
    shards, rows = healthy.execute("select count(distinct shard_id), count(*) from fct_slo_burn").fetchone()
    assert shards == 9 and rows >= 9 * 2 * 20  # 9 shards, 2 SLIs, 24 five-minute buckets in 2 game hours
    paging = healthy.execute(
        "select shard_id, sli, count(*) from fct_slo_burn where page_fast or page_slow group by all order by all"
    ).fetchall()
    assert paging == []
    # the world is loaded (not trivially idle): real tick times, some above the old 100 ms threshold
    p50, slowest = healthy.execute(
        "select quantile_cont(tick_ms, 0.5), max(tick_ms) from stg_lake__events where kind = 'server_tick'"
    ).fetchone()
    assert p50 > 50 and slowest > 100


def test_latency_spike_pages_on_its_shard_only(spiked) -> None:
    paged = spiked.execute(
        "select shard_id, sli from fct_slo_burn where page_fast group by all order by all"
    ).fetchall()
    assert paged == [(SPIKED_SHARD, "latency")]
    first = spiked.execute(
        "select min(bucket_start) from fct_slo_burn where page_fast and shard_id = ?", [SPIKED_SHARD]
    ).fetchone()[0]
    spike_start = spiked.execute("select min(bucket_start) + interval 1 hour from fct_slo_burn").fetchone()[0]
    assert spike_start <= first  # never before the fault


def test_economy_rates_are_defined_from_day_two(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = _home(tmp_path_factory, "economy")
    # Two UTC days of a small world: the first day in the lake is partial, the second is measured.
    run_world(home, 26.0, world=World(seed=3, players_per_shard=200), explore=False, workers=1)
    con = _build(home)
    try:
        rows = con.execute(
            "select is_partial, opening_supply, net_inflation, velocity, currency from fct_economy_daily"
        ).fetchall()
    finally:
        con.close()
    first = [r for r in rows if r[0]]
    later = [r for r in rows if not r[0]]
    assert first and later
    assert all(r[1] is None and r[2] is None and r[3] is None for r in first)
    for _, opening, inflation, velocity, currency in later:
        assert opening is not None and opening > 0
        assert inflation is not None and math.isfinite(inflation) and -1 <= inflation <= 10
        assert velocity is not None and math.isfinite(velocity) and 0 <= velocity <= 50
        if currency == "gold":
            assert velocity > 0  # gold is traded every day
