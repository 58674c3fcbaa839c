"""Warehouse build time on a synthetic lake (default 10 million events).

Prints: events, the full `dbt run` of every model (the marts build), the full
`dbt build` (models + all dbt tests), and an incremental `dbt run` after one more
hour of bronze lands. The goal (issue "Telemetry asset graph"): the full marts
build on 10M events within 30 s on a 2-core machine.

    .venv/bin/python benchmarks/bench_warehouse.py [--events 10000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import duckdb

from aegis.config import AegisPaths
from aegis.quality.synthetic_lake import WORLD_EPOCH, write_synthetic_lake

DBT_DIR = Path(__file__).resolve().parents[1] / "dbt"
SHARDS = 8
EVENTS_PER_PLAYER_HOUR = 47.0  # measured from the generator's rates; ticks come on top


def dbt(home: AegisPaths, *args: str) -> float:
    cmd = [
        str(Path(sys.executable).with_name("dbt")),
        *args,
        "--project-dir",
        str(DBT_DIR),
        "--profiles-dir",
        str(DBT_DIR),
    ]
    cmd += ["--vars", json.dumps({"aegis_home": str(home.home)})]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"dbt {' '.join(args)} failed:\n{proc.stdout[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--hours", type=int, default=48)
    parser.add_argument("--keep", type=Path, help="build under this directory and keep it")
    ns = parser.parse_args()
    root = ns.keep or Path(tempfile.mkdtemp(prefix="aegis-bench-wh-"))
    home = AegisPaths.from_env(root / "home").ensure()
    try:
        players = max(1, round(ns.events / (SHARDS * ns.hours * EVENTS_PER_PLAYER_HOUR)))
        t0 = time.perf_counter()
        lake = write_synthetic_lake(home, hours=ns.hours, n_shards=SHARDS, players_per_shard=players, seed=1)
        gen = time.perf_counter() - t0
        print(
            f"lake: {lake.events:,} events in {lake.batches} batches ({SHARDS} shards x {ns.hours} h, {players} players/shard), generated in {gen:.1f} s"
        )
        parse = dbt(home, "parse")
        print(f"dbt parse (overhead baseline): {parse:.1f} s")
        full_run = dbt(home, "run", "--full-refresh")
        print(
            f"full marts build (dbt run --full-refresh, all 11 models): {full_run:.1f} s  -> {lake.events / full_run / 1e6:.2f} M events/s"
        )
        full_build = dbt(home, "build", "--full-refresh")
        print(f"full dbt build (models + all tests): {full_build:.1f} s")
        more = write_synthetic_lake(
            home,
            hours=1,
            n_shards=SHARDS,
            players_per_shard=players,
            seed=2,
            start=WORLD_EPOCH + timedelta(hours=ns.hours),
        )
        incr = dbt(home, "run")
        print(f"incremental dbt run after +{more.events:,} events: {incr:.1f} s")
        with duckdb.connect(str(home.warehouse), read_only=True) as con:
            n = con.execute("select count(*) from stg_lake__events").fetchone()[0]
            k = con.execute("select count(*) from fct_shard_kpis").fetchone()[0]
        print(f"warehouse: stg_lake__events {n:,} rows, fct_shard_kpis {k:,} rows")
    finally:
        if ns.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
