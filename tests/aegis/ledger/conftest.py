"""A database per ledger test on the session's PostgreSQL (``pg_server``, tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.pg_support import fresh_database


@pytest.fixture
def pg_url(pg_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh database per test, so chains never mix."""
    return fresh_database(pg_server, "ledger_" + request.node.name)
