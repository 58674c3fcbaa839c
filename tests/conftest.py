"""Fixtures shared by every test area."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aegis.config import AegisPaths
from tests.support import free_port


@pytest.fixture
def aegis_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AegisPaths]:
    """A fresh AEGIS_HOME for one test, set in the environment for subprocesses too."""
    home = tmp_path / "aegis-home"
    monkeypatch.setenv("AEGIS_HOME", str(home))
    monkeypatch.setenv("AEGIS_PROFILE", "local")
    yield AegisPaths.from_env().ensure()


@pytest.fixture
def port() -> int:
    return free_port()
