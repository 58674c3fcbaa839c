"""Fixtures for the infrastructure tests: each stack evaluated once per session, through the real entry.

``stack_runner.py`` runs ``infrastructure/__main__.py`` under Pulumi mocks with the
stack file's config in ``PULUMI_CONFIG``, as the language host passes it. Pulumi
keeps runtime state in module globals, so each stack runs in its own interpreter;
both stacks start together on first use (the machine's cores work in parallel)
and every test reads the recorded graphs. Under pytest-xdist the first worker to
need them builds them and the others read its file (``graph_cache.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infrastructure"
PACK = REPO / "policies" / "infrastructure"
HERE = Path(__file__).resolve().parent
for _p in (INFRA, PACK, HERE):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from graph_cache import cache_location, shared_graphs  # noqa: E402
from stack_runner import STACKS, finish, start_stack  # noqa: E402


def build_graphs(base: Path) -> dict[str, dict[str, Any]]:
    """Evaluate every stack through the real entry, one interpreter each, all at once."""
    procs = {s: start_stack(s, base / f"{s}.json") for s in STACKS}
    result: dict[str, dict[str, Any]] = {}
    for stack, proc in procs.items():
        code, err, graph = finish(proc, base / f"{stack}.json")
        assert code == 0 and graph is not None, f"stack {stack} failed under mocks:\n{err}"
        result[stack] = graph
    return result


@pytest.fixture(scope="session")
def graphs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """Both stacks' graphs: built once per run, shared by the xdist workers through pytest's cache dir."""
    cache_root, run_id = cache_location(request.config)
    return shared_graphs(cache_root, run_id, build_graphs, tmp_path_factory.mktemp("graphs"))


@pytest.fixture(scope="session")
def dev_graph(graphs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return graphs["dev"]


@pytest.fixture(scope="session")
def prod_graph(graphs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return graphs["prod"]


@pytest.fixture(scope="session", params=STACKS)
def graph(request: pytest.FixtureRequest, graphs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return graphs[request.param]
