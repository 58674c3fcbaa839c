"""graph_cache.py: the stacks' graphs built once per run, shared by the xdist workers, never taken from another run."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import graph_cache as gc
import pytest

GRAPHS = {"dev": {"stack": "dev", "resources": [{"urn": "u"}], "outputs": {"x": "1"}}}


class CountingBuilder:
    """Stands in for evaluating the stacks: notes each call in a file (so it counts across processes)."""

    def __init__(self, log: Path, fail: bool = False, delay_s: float = 0.0) -> None:
        self.log, self.fail, self.delay_s = log, fail, delay_s

    @property
    def calls(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def __call__(self, work_dir: Path) -> gc.Graphs:
        with self.log.open("a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(self.delay_s)
        (work_dir / "dev.json").write_text("{}")
        if self.fail:
            raise AssertionError("stack dev failed under mocks")
        return json.loads(json.dumps(GRAPHS))


def _worker(cache: Path, build: CountingBuilder, work: Path, out: Path) -> None:
    """One xdist worker's share: ask for the run's graphs, write what it got."""
    work.mkdir()
    out.write_text(json.dumps(gc.shared_graphs(cache, "run-1", build, work)))


def test_workers_of_one_run_build_once_and_read_the_same_graphs(tmp_path: Path) -> None:
    build = CountingBuilder(tmp_path / "builds.log", delay_s=0.5)
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter, as an xdist worker is
    outs = [tmp_path / f"out{i}.json" for i in range(3)]
    procs = [
        ctx.Process(target=_worker, args=(tmp_path / "cache", build, tmp_path / f"w{i}", out))
        for i, out in enumerate(outs)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert build.calls == 1
    assert [json.loads(o.read_text()) for o in outs] == [GRAPHS] * 3
    (written,) = (tmp_path / "cache" / "run-1").glob("graphs-*.json")
    assert json.loads(written.read_text()) == GRAPHS
    assert not list((tmp_path / "cache" / "run-1").glob(".*.tmp"))


def test_a_new_run_never_reads_an_earlier_runs_graphs(tmp_path: Path) -> None:
    build = CountingBuilder(tmp_path / "builds.log")
    gc.shared_graphs(tmp_path / "cache", "run-1", build, tmp_path)
    gc.shared_graphs(tmp_path / "cache", "run-2", build, tmp_path)
    assert build.calls == 2


def test_a_failed_build_writes_nothing_and_the_next_worker_builds_for_itself(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="failed under mocks"):
        gc.shared_graphs(
            tmp_path / "cache", "run-1", CountingBuilder(tmp_path / "failed.log", fail=True), tmp_path
        )
    assert not list((tmp_path / "cache" / "run-1").glob("graphs-*.json"))
    build = CountingBuilder(tmp_path / "builds.log")
    assert gc.shared_graphs(tmp_path / "cache", "run-1", build, tmp_path) == GRAPHS
    assert build.calls == 1


def test_a_torn_file_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    run_dir = tmp_path / "cache" / "run-1"
    run_dir.mkdir(parents=True)
    (run_dir / f"graphs-{gc.source_digest()}.json").write_text('{"dev": {"stack"')
    build = CountingBuilder(tmp_path / "builds.log")
    assert gc.shared_graphs(tmp_path / "cache", "run-1", build, tmp_path) == GRAPHS
    assert build.calls == 1


def test_without_a_run_id_or_a_cache_it_builds_every_time_and_writes_nothing(tmp_path: Path) -> None:
    build = CountingBuilder(tmp_path / "builds.log")
    gc.shared_graphs(tmp_path / "cache", None, build, tmp_path)
    gc.shared_graphs(None, "run-1", build, tmp_path)
    assert build.calls == 2
    assert not (tmp_path / "cache").exists()


def test_directories_of_long_finished_runs_are_pruned(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    old, recent = cache / "run-old", cache / "run-recent"
    for d in (old, recent):
        d.mkdir(parents=True)
        (d / "graphs-x.json").write_text("{}")
    past = time.time() - gc.STALE_RUN_S - 60
    os.utime(old, (past, past))
    gc.shared_graphs(cache, "run-now", CountingBuilder(tmp_path / "builds.log"), tmp_path)
    assert not old.exists() and recent.exists() and (cache / "run-now").exists()


def test_the_digest_covers_the_program_the_stack_files_and_the_mocks(tmp_path: Path) -> None:
    files = gc.source_files()
    for must in (
        gc.INFRA / "__main__.py",
        gc.INFRA / "aegis_infra" / "program.py",
        gc.INFRA / "Pulumi.yaml",
        gc.INFRA / "Pulumi.dev.yaml",
        gc.INFRA / "Pulumi.prod.yaml",
        gc.HERE / "stack_runner.py",
    ):
        assert must in files
    assert not [p for p in files if p.suffix == ".pyc" or "__pycache__" in p.parts]
    src = tmp_path / "program.py"
    src.write_text("A = 1\n")
    before = gc.source_digest([src], root=tmp_path)
    assert gc.source_digest([src], root=tmp_path) == before
    src.write_text("A = 2\n")
    assert gc.source_digest([src], root=tmp_path) != before


def test_the_graphs_fixture_shares_through_the_cache_exactly_under_xdist(
    request: pytest.FixtureRequest, graphs: dict[str, dict[str, Any]]
) -> None:
    assert {g["stack"] for g in graphs.values()} == set(graphs) == {"dev", "prod"}
    root, run_id = gc.cache_location(request.config)
    if hasattr(
        request.config, "workerinput"
    ):  # an xdist worker: the run's file holds what every worker reads
        assert root is not None and run_id == request.config.workerinput["testrunuid"]
        written = root / run_id / f"graphs-{gc.source_digest()}.json"
        assert json.loads(written.read_text()) == graphs
    else:  # one process: no file, the session fixture is the one copy
        assert (root, run_id) == (None, None)


def test_only_an_xdist_worker_with_the_cache_provider_gets_a_location(request: pytest.FixtureRequest) -> None:
    cache = request.config.cache
    worker = SimpleNamespace(workerinput={"workerid": "gw1", "testrunuid": "abc123"}, cache=cache)
    assert gc.cache_location(worker) == (cache.mkdir("aegis-infra-graphs"), "abc123")
    assert gc.cache_location(SimpleNamespace(cache=cache)) == (None, None)  # the controller or no xdist
    assert gc.cache_location(SimpleNamespace(workerinput=worker.workerinput)) == (
        None,
        None,
    )  # no cacheprovider
