"""A database per store test on the session's PostgreSQL (``pg_server``, tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.pg_support import fresh_database


@pytest.fixture
def pg_db(pg_server: str, request: pytest.FixtureRequest) -> str:
    """URL of a fresh database for this test (named after it)."""
    return fresh_database(pg_server, "t_" + request.node.name)
