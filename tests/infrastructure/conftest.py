"""Fixtures for the infrastructure tests: each stack evaluated once, under mocks, in its own process.

Pulumi keeps runtime state in module globals, so each stack runs in a fresh
interpreter (``python -m aegis_infra.offline <stack>``) and the tests read the
recorded resource graph.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infrastructure"
PACK = REPO / "policies" / "infrastructure"
for _p in (INFRA, PACK):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


def evaluate_stack(stack: str, out: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "aegis_infra.offline", stack, "--out", str(out)],
        cwd=INFRA,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"stack {stack} failed under mocks:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(out.read_text())


@pytest.fixture(scope="session")
def dev_graph(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return evaluate_stack("dev", tmp_path_factory.mktemp("dev") / "graph.json")


@pytest.fixture(scope="session")
def prod_graph(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return evaluate_stack("prod", tmp_path_factory.mktemp("prod") / "graph.json")


@pytest.fixture(scope="session", params=["dev", "prod"])
def graph(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.getfixturevalue(f"{request.param}_graph")
