"""Fixtures shared by every test area."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from aegis.config import AegisPaths
from tests.support import free_port

# Hypothesis profiles. "dev" (local runs): few examples, for a quick edit-test loop. "ci": many
# examples, and a failure prints the @reproduce_failure blob to replay it locally; built on
# Hypothesis's own "ci" profile (derandomized, no example database, too_slow not raised), which
# it names the same. CI (set by .ci/run; "", 0, false and no count as unset) selects "ci";
# HYPOTHESIS_PROFILE=dev|ci overrides either way. No deadline in either: the machines are 2
# shared cores, so a per-example time limit fails on load, not on a bug. A test's own
# @settings(max_examples=...) overrides the profile's count.
settings.register_profile("dev", settings.get_profile("default"), max_examples=20, deadline=None)
settings.register_profile("ci", settings.get_profile("ci"), max_examples=200, deadline=None, print_blob=True)
_in_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if _in_ci else "dev"))


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


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """psycopg URL of one real PostgreSQL per test session (tests/pg_support.py), started on first use."""
    from tests.pg_support import start_pg

    base_url, cleanup = start_pg()
    try:
        yield base_url
    finally:
        cleanup()
