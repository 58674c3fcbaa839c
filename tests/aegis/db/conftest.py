"""One real PostgreSQL per session for the store tests (tests/pg_support.py), a database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg_support import fresh_database, start_pg


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """psycopg URL of the session's server (its ``postgres`` database)."""
    base_url, cleanup = start_pg()
    try:
        yield base_url
    finally:
        cleanup()


@pytest.fixture
def pg_db(pg_server: str, request: pytest.FixtureRequest) -> str:
    """URL of a fresh database for this test (named after it)."""
    return fresh_database(pg_server, "t_" + request.node.name)
