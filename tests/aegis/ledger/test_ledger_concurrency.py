"""Concurrent writers in separate processes never fork the chain (SQLite and real PostgreSQL)."""

from __future__ import annotations

import itertools
import multiprocessing as mp
from pathlib import Path

import pytest

from aegis.config import AegisPaths
from aegis.ledger import Ledger

PROCESSES = 4
APPENDS_EACH = 25
JOIN_TIMEOUT_S = 120


def _writer(url: str, key_dir: str, worker: int, barrier: mp.synchronize.Barrier, errors: mp.Queue) -> None:
    try:
        ledger = Ledger(url, Path(key_dir))
        barrier.wait(timeout=60)
        for i in range(APPENDS_EACH):
            ledger.append("note", f"cs-w{worker}", {"worker": worker, "i": i}, actor=f"writer-{worker}")
        ledger.dispose()
    except Exception as exc:  # reported to the parent: a silent child failure must fail the test
        errors.put(f"worker {worker}: {exc!r}")


def _hammer(url: str, key_dir: Path) -> Ledger:
    ledger = Ledger(url, key_dir)  # schema and key made once, before the race
    ctx = mp.get_context("spawn")
    barrier, errors = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(url, str(key_dir), w, barrier, errors)) for w in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_TIMEOUT_S)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a writer hung"
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert not problems, problems
    assert all(p.exitcode == 0 for p in procs)
    return ledger


def _assert_one_chain(ledger: Ledger) -> None:
    records = ledger.records()
    total = PROCESSES * APPENDS_EACH
    assert records[0].kind == "genesis"  # made once, by whichever writer won the first append
    assert [r.seq for r in records] == list(range(1, total + 2))
    records = records[1:]
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    for w in range(PROCESSES):  # each writer's own appends kept their order
        mine = [r.payload["i"] for r in records if r.payload["worker"] == w]
        assert mine == list(range(APPENDS_EACH))
    report = ledger.verify()
    assert report.ok and report.records_checked == total + 1, report.summary()
    assert report.witnessed_seq == total + 1  # every writer checkpointed; the newest head is witnessed


def test_concurrent_appends_sqlite(aegis_home: AegisPaths) -> None:
    _assert_one_chain(_hammer(aegis_home.ledger_url, aegis_home.keys))


@pytest.mark.postgres
def test_concurrent_appends_postgres(aegis_home: AegisPaths, pg_url: str) -> None:
    ledger = _hammer(pg_url, aegis_home.keys)
    _assert_one_chain(ledger)
    ledger.dispose()
