"""Fixtures shared by every test area."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from aegis.config import AegisPaths


@pytest.fixture
def aegis_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AegisPaths]:
    """A fresh AEGIS_HOME for one test, set in the environment for subprocesses too."""
    home = tmp_path / "aegis-home"
    monkeypatch.setenv("AEGIS_HOME", str(home))
    monkeypatch.setenv("AEGIS_PROFILE", "local")
    yield AegisPaths.from_env().ensure()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def port() -> int:
    return free_port()
