"""Telemetry ingest throughput: landing -> bronze on N events (default 10 million).

Prints, from one run on the same files:
  * landing -> bronze events/s (read, conform, validate, de-duplicate, write
    bronze, index, manifest) - goal >= 2 M events/s on this 2-core machine;
  * DuckDB's raw scan of the same landing files (every column) as the ceiling,
    and the ingest's ratio to it;
  * the full marts build (the warehouse's ``dbt build --full-refresh``) on the
    bronze just written - goal <= 30 s on 10 M events.
Generation (synthetic schema-v1 batches, :mod:`aegis.lake.synth`) is outside the
timed part.  The machine is shared and noisy: compare the ratio, not absolutes.

    .venv/bin/python benchmarks/telemetry.py [--events 10000000] [--batch-rows 100000] [--no-marts]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import duckdb

from aegis.config import AegisPaths
from aegis.domain import WorldParams
from aegis.lake.bronze import ingest_batches
from aegis.lake.synth import DEFAULT_START, land_batch, make_batch
from aegis.telemetry import SCHEMA_V1

DBT_DIR = Path(__file__).resolve().parents[1] / "dbt"
SHARDS = ("eu-1", "eu-2", "us-1", "us-2")


def generate(paths: AegisPaths, events: int, batch_rows: int) -> int:
    from aegis.quality.synthetic_lake import write_configs

    n_batches = max(events // batch_rows, 1)
    for i in range(n_batches):
        shard = SHARDS[i % len(SHARDS)]
        start = DEFAULT_START + timedelta(minutes=5 * (i // len(SHARDS)))
        table = make_batch(batch_rows, seed=i, shard_id=shard, region=shard[:2], start=start, span_s=300)
        land_batch(paths.landing_telemetry, table, f"bench{i:06d}", shard_id=shard)
    for shard in SHARDS:
        write_configs(paths, shard, shard[:2], [(1, DEFAULT_START - timedelta(hours=1), WorldParams())], 5000)
    return n_batches * batch_rows


def duckdb_scan(paths: AegisPaths) -> float:
    """Every column of every landing file, aggregated so nothing is skipped."""
    files = [str(p) for p in paths.landing_telemetry.rglob("*.parquet")]
    aggs = ", ".join(f"max({c})" for c in SCHEMA_V1.names)
    con = duckdb.connect()
    con.execute("SET threads = 2")
    start = time.perf_counter()
    con.execute(f"SELECT count(*), {aggs} FROM read_parquet(?)", [files]).fetchall()
    return time.perf_counter() - start


def marts_build(paths: AegisPaths) -> float:
    cmd = [
        str(Path(sys.executable).with_name("dbt")),
        "build",
        "--full-refresh",
        "--vars",
        f'{{"aegis_home": "{paths.home}"}}',
        "--project-dir",
        str(DBT_DIR),
        "--profiles-dir",
        str(DBT_DIR),
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, env={"AEGIS_HOME": str(paths.home), **_env()}
    )
    took = time.perf_counter() - start
    if proc.returncode != 0:
        print(f"marts build FAILED after {took:.1f} s:\n{proc.stdout[-2000:]}")
        return float("nan")
    return took


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "AEGIS_HOME"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--batch-rows", type=int, default=100_000)
    ap.add_argument("--no-marts", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="aegis-bench-telemetry-") as tmp:
        paths = AegisPaths(Path(tmp)).ensure()
        t0 = time.perf_counter()
        events = generate(paths, args.events, args.batch_rows)
        print(
            f"generated {events:,} events in {events // args.batch_rows} batches ({time.perf_counter() - t0:.1f} s, untimed)"
        )
        scan = duckdb_scan(paths)
        print(
            f"DuckDB raw scan of the landing files (ceiling): {scan:.2f} s -> {events / scan / 1e6:.2f} M events/s"
        )
        cpu0 = time.process_time()
        report = ingest_batches(paths)
        cpu = time.process_time() - cpu0
        rate = report.rows_in / report.seconds
        print(
            f"landing -> bronze: {report.seconds:.2f} s wall, {cpu:.2f} s CPU -> {rate / 1e6:.2f} M events/s "
            f"(goal >= 2.00); {report.bronze_rows:,} to bronze, conserved={report.conserved}"
        )
        print(f"ingest / DuckDB-scan throughput ratio: {rate / (events / scan):.2f}")
        if not args.no_marts:
            took = marts_build(paths)
            print(
                f"full marts build (dbt build --full-refresh) on {report.bronze_rows:,} events: {took:.1f} s (goal <= 30)"
            )


if __name__ == "__main__":
    main()
