"""The stacks' evaluated graphs, built once per test run and shared by every pytest-xdist worker.

Evaluating both stacks under mocks costs seconds of CPU (``stack_runner.py``); each
worker would otherwise do it again. The first worker to need them builds them and
writes them under pytest's cache dir; the others wait on a lock and read that file.

The file's place is keyed by the run (xdist's ``testrunuid``, the same in every
worker of one run, new for the next) and by a digest of what the graph is made of:
``infrastructure/**``, the stack files and the runner with its mocks. The run id is
what makes the file safe: a graph is never taken from an earlier run, so nothing the
digest leaves out (``pipelines/stack_outputs.py``, which the platform reads; the
Pulumi SDK version) can make a test check a stale graph (unless a fixed
``--testrunuid`` is passed to several runs: don't). Without xdist there is one
process and no file: the session fixture alone builds each stack once. Run
directories older than a day are removed; ``pytest --cache-clear`` removes all.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
INFRA = REPO / "infrastructure"
# Besides infrastructure/**: the runner (its mocks answer with the outputs the graph records) and this file.
RUNNER_FILES = (HERE / "stack_runner.py", HERE / "graph_cache.py")
STALE_RUN_S = 24 * 3600  # a run's directory older than this is left over from a finished run

Graphs = dict[str, dict[str, Any]]
Builder = Callable[[Path], Graphs]


def source_files() -> list[Path]:
    """What the graph is made of, in a stable order: every file under infrastructure/ and the runner's."""
    infra = [
        p
        for p in INFRA.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".pyo"}
    ]
    return sorted(infra) + list(RUNNER_FILES)


def source_digest(files: list[Path] | None = None, root: Path = REPO) -> str:
    """A digest of the files' paths (relative to ``root``) and contents."""
    h = hashlib.sha256()
    for p in files if files is not None else source_files():
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:20]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``; the kernel drops it if the holder dies."""
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _prune(root: Path, keep: Path) -> None:
    """Remove run directories of runs long finished (a run's lives under root/<testrunuid>)."""
    cutoff = time.time() - STALE_RUN_S
    for d in root.iterdir():
        try:
            if d != keep and d.is_dir() and d.stat().st_mtime < cutoff:
                shutil.rmtree(d, ignore_errors=True)
        except FileNotFoundError:  # another run pruned it first
            continue


def cache_location(config: Any) -> tuple[Path | None, str | None]:
    """(cache root, run id) for a pytest config: both only in an xdist worker with the cache provider on."""
    run_id = getattr(config, "workerinput", {}).get("testrunuid")
    cache = getattr(config, "cache", None)  # absent under -p no:cacheprovider
    if run_id is None or cache is None:
        return None, None
    return cache.mkdir("aegis-infra-graphs"), str(run_id)


def shared_graphs(cache_root: Path | None, run_id: str | None, build: Builder, work_dir: Path) -> Graphs:
    """The run's graphs: read from ``cache_root`` if a worker of this run wrote them, else ``build`` them.

    ``build(dir)`` evaluates the stacks (scratch files in ``dir``) and raises if one fails;
    nothing is written then, so the next worker tries (and reports) for itself.
    Without a cache root or a run id (no cache provider, no xdist) it just builds.
    """
    if cache_root is None or run_id is None:
        return build(work_dir)
    run_dir = cache_root / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    _prune(cache_root, run_dir)
    digest = source_digest()
    target = run_dir / f"graphs-{digest}.json"
    with _locked(run_dir / f"graphs-{digest}.lock"):
        if target.is_file():
            try:
                graphs: Graphs = json.loads(target.read_text())
                return graphs
            except json.JSONDecodeError:  # cannot come from os.replace; rebuild rather than trust it
                target.unlink()
        graphs = build(work_dir)
        tmp = run_dir / f".graphs-{digest}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(graphs))
        os.replace(tmp, target)  # readers see the whole file or none
        return graphs
