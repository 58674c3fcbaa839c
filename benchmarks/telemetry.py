"""Telemetry throughput, end to end: landing -> bronze, then the full marts build.

Prints, from one run on the same files (default 10 million events):

* the ceiling: DuckDB's raw multi-threaded scan of the landing files (every
  column), wall and CPU seconds;
* landing -> bronze (read, conform, validate, de-duplicate, write bronze, index,
  manifest): events/s wall (goal >= 2 M/s on the 2-core machine) and events per
  CPU-second, each as a ratio to the ceiling measured in the same run. The
  machine is shared: the CPU ratio is the figure that survives a noisy
  neighbour, the wall ratio the one a user feels;
* the same ingest on small batches (--small-batch-rows, what world-server shards
  land), since per-file costs dominate there;
* the warehouse: dbt's start-up (a cold ``dbt parse``), the full marts build
  (``dbt build --full-refresh``: every model and every dbt test, after that
  parse, as a Dagster run sees it; goal <= 30 s on 10 M events) with the
  seconds dbt spent in SQL, and a ``dbt build`` after one more batch lands.

Generation (synthetic schema-v1 batches, :mod:`aegis.lake.synth`) is untimed.
Libraries are imported before the clock starts (a run worker pays that once).

    .venv/bin/python benchmarks/telemetry.py [--events 10000000] [--batch-rows 100000]
        [--small-events 500000] [--small-batch-rows 2000] [--no-marts] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas  # noqa: F401 - pyarrow imports it lazily on first use; keep that out of the clock

from aegis.config import AegisPaths
from aegis.domain import WorldParams
from aegis.lake.bronze import IngestReport, ingest_batches
from aegis.lake.synth import DEFAULT_START, land_batch, make_batch
from aegis.quality.synthetic_lake import write_configs
from aegis.telemetry import SCHEMA_V1

DBT_DIR = Path(__file__).resolve().parents[1] / "dbt"
SHARDS = ("eu-1", "eu-2", "us-1", "us-2")
SCAN_THREADS = 2  # the machine's cores: the ceiling uses all of them, as the ingest does
GOAL_EVENTS_PER_S = 2_000_000
GOAL_MARTS_S = 30.0


@dataclass
class Timed:
    wall: float
    cpu: float


def generate(paths: AegisPaths, events: int, batch_rows: int, prefix: str = "bench", first: int = 0) -> int:
    """Land ``events`` valid events in batches of ``batch_rows``, round-robin over SHARDS, 5 minutes each."""
    n_batches = max(events // batch_rows, 1)
    span_s = 300.0 * batch_rows / 100_000  # keep the event rate per shard steady whatever the batch size
    for i in range(first, first + n_batches):
        shard = SHARDS[i % len(SHARDS)]
        start = DEFAULT_START + timedelta(seconds=span_s * (i // len(SHARDS)))
        table = make_batch(batch_rows, seed=i, shard_id=shard, region=shard[:2], start=start, span_s=span_s)
        land_batch(paths.landing_telemetry, table, f"{prefix}{i:06d}", shard_id=shard)
    for shard in SHARDS:
        write_configs(paths, shard, shard[:2], [(1, DEFAULT_START - timedelta(hours=1), WorldParams())], 5000)
    return n_batches * batch_rows


def duckdb_scan(paths: AegisPaths) -> Timed:
    """Every column of every landing file, aggregated so nothing is skipped."""
    files = [str(p) for p in paths.landing_telemetry.rglob("*.parquet")]
    aggs = ", ".join(f"max({c})" for c in SCHEMA_V1.names)
    con = duckdb.connect()
    con.execute(f"SET threads = {SCAN_THREADS}")
    cpu, wall = time.process_time(), time.perf_counter()
    con.execute(f"SELECT count(*), {aggs} FROM read_parquet(?)", [files]).fetchall()
    out = Timed(time.perf_counter() - wall, time.process_time() - cpu)
    con.close()
    return out


def ingest(paths: AegisPaths) -> tuple[IngestReport, Timed]:
    cpu = time.process_time()
    report = ingest_batches(paths)
    return report, Timed(report.seconds, time.process_time() - cpu)


def dbt(paths: AegisPaths, target: Path, *args: str) -> tuple[float, dict]:
    """Run dbt as Dagster does (a subprocess); returns wall seconds and run_results (if any)."""
    cmd = [str(Path(sys.executable).with_name("dbt")), *args]
    cmd += ["--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)]
    cmd += ["--target-path", str(target), "--log-path", str(target / "logs")]
    cmd += ["--vars", json.dumps({"aegis_home": str(paths.home)})]
    env = {**os.environ, "AEGIS_HOME": str(paths.home)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"dbt {' '.join(args)} failed after {took:.1f} s:\n{proc.stdout[-3000:]}")
    results = target / "run_results.json"
    return took, json.loads(results.read_text()) if args[0] != "parse" and results.exists() else {}


def sql_seconds(results: dict) -> tuple[float, float, float]:
    """dbt's own elapsed time, and the summed seconds of models and of tests (run 2 at a time)."""
    models = sum(r["execution_time"] for r in results["results"] if r["unique_id"].startswith("model."))
    tests = sum(r["execution_time"] for r in results["results"] if r["unique_id"].startswith("test."))
    return results["elapsed_time"], models, tests


def print_ingest(label: str, events: int, batches: int, report: IngestReport, t: Timed, scan: Timed) -> None:
    rate, per_cpu = report.rows_in / t.wall, report.rows_in / t.cpu
    ceiling, ceiling_cpu = events / scan.wall, events / scan.cpu
    print(
        f"{label}: {events:,} events in {batches:,} batches: {t.wall:.2f} s wall, {t.cpu:.2f} s CPU"
        f" -> {rate / 1e6:.2f} M events/s (goal >= {GOAL_EVENTS_PER_S / 1e6:.2f}), "
        f"{per_cpu / 1e6:.2f} M events/CPU-s; conserved={report.conserved}"
    )
    print(
        f"  ratio to the DuckDB raw scan of the same files: {rate / ceiling:.2f} wall, "
        f"{per_cpu / ceiling_cpu:.2f} per CPU-second"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--batch-rows", type=int, default=100_000)
    ap.add_argument("--small-events", type=int, default=500_000, help="0 skips the small-batch figure")
    ap.add_argument("--small-batch-rows", type=int, default=2_000)
    ap.add_argument("--no-marts", action="store_true")
    ap.add_argument("--keep", type=Path, help="work under this (new) directory and keep it")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="aegis-bench-telemetry-"))
    try:
        paths = AegisPaths(root / "home").ensure()
        t0 = time.perf_counter()
        events = generate(paths, args.events, args.batch_rows)
        batches = max(args.events // args.batch_rows, 1)
        print(
            f"generated {events:,} events in {batches:,} batches ({time.perf_counter() - t0:.1f} s, untimed)"
        )
        scan = duckdb_scan(paths)
        print(
            f"DuckDB raw scan of the landing files (ceiling, {SCAN_THREADS} threads): {scan.wall:.2f} s wall, "
            f"{scan.cpu:.2f} s CPU -> {events / scan.wall / 1e6:.2f} M events/s, "
            f"{events / scan.cpu / 1e6:.2f} M events/CPU-s"
        )
        report, t = ingest(paths)
        print_ingest("landing -> bronze", events, batches, report, t, scan)

        if args.small_events:
            small = AegisPaths(root / "small").ensure()
            n_small = generate(small, args.small_events, args.small_batch_rows, prefix="small")
            small_scan = duckdb_scan(small)
            small_report, small_t = ingest(small)
            print_ingest(
                f"landing -> bronze, small batches of {args.small_batch_rows:,}",
                n_small,
                n_small // args.small_batch_rows,
                small_report,
                small_t,
                small_scan,
            )

        if not args.no_marts:
            target = root / "dbt-target"
            parse, _ = dbt(paths, target, "parse")
            print(f"dbt start-up: cold `dbt parse` {parse:.1f} s (later runs reuse it: partial parsing)")
            full, results = dbt(paths, target, "build", "--full-refresh")
            elapsed, models, tests = sql_seconds(results)
            print(
                f"full marts build (`dbt build --full-refresh`, {len(results['results'])} nodes) on "
                f"{report.bronze_rows:,} events: {full:.1f} s wall (goal <= {GOAL_MARTS_S:.0f}); "
                f"dbt's run {elapsed:.1f} s of which SQL: models {models:.1f} s + tests {tests:.1f} s "
                f"(2 threads); the rest is dbt's process start-up"
            )
            generate(paths, args.batch_rows, args.batch_rows, prefix="more", first=batches)
            more, more_t = ingest(paths)
            again, results = dbt(paths, target, "build")
            print(
                f"after one more batch ({more.rows_in:,} events, ingested in {more_t.wall:.2f} s): "
                f"`dbt build` {again:.1f} s wall (dbt's run {results['elapsed_time']:.1f} s)"
            )
            with duckdb.connect(str(paths.warehouse), read_only=True) as con:
                n = con.execute("select count(*) from stg_lake__events").fetchone()[0]
                k = con.execute("select count(*) from fct_shard_kpis").fetchone()[0]
            print(f"warehouse: stg_lake__events {n:,} rows (= bronze), fct_shard_kpis {k:,} rows")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
