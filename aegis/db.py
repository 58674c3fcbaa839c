"""Where each Aegis store keeps its tables, and how their schema gets there.

Every durable store (the ledger, the changeset store, the alert inbox, the
incident store, the token store, the lake's catalogue) is SQLAlchemy Core over
one of two databases:

* ``local`` profile: one SQLite file per store under ``AEGIS_HOME`` (the
  layout :class:`aegis.config.AegisPaths` names), in WAL mode with
  ``synchronous=FULL``, so whatever a store acknowledged survives a kill -9 or
  a power cut.
* ``prod`` profile: the platform's PostgreSQL database (Aurora; stack output
  ``ledgerDatabase``), shared by every store. Each store keeps its tables in
  its own schema, ``aegis_<store>``: :func:`store_url` names that schema as the
  connection's ``search_path`` (libpq ``options``), so the store's unqualified
  table names, its raw DDL and anyone else holding the same URL (``aegis
  audit --url``, ``psql``) land in the same place, and two stores' ``events``
  or ``state`` tables never meet.

A store picks its URL with :func:`store_url` (``AEGIS_<STORE>_URL`` wins, then
the profile), opens it with :func:`make_engine`, runs :func:`migrate` with its
list of :class:`Migration` on open, and takes its write lock with
:func:`write_transaction` wherever it relied on SQLite's database-wide write
lock: ``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock named
after the store on PostgreSQL. docs/stores.md says which store has which tables.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError

from aegis.config import ENV_PROFILE, PROFILES, current_profile

log = logging.getLogger(__name__)

ENV_DB_HOST = "AEGIS_DB_HOST"
ENV_DB_PORT = "AEGIS_DB_PORT"
ENV_DB_USER = "AEGIS_DB_USER"
ENV_DB_PASSWORD = "AEGIS_DB_PASSWORD"
ENV_PLATFORM_DB = "AEGIS_LEDGER_DB"  # stack output ledgerDatabase: the platform database every store shares
SERVER_VARS = (ENV_DB_HOST, ENV_DB_PORT, ENV_DB_USER, ENV_DB_PASSWORD)
POSTGRES_DRIVER = "postgresql+psycopg"
SCHEMA_PREFIX = "aegis_"
SQLITE_BUSY_TIMEOUT_S = 60.0  # a writer waits this long for another's lock before it fails
WRITE_LOCK = "aegis_write_lock"  # execution option: the name of the lock a write transaction takes first
MIGRATIONS_TABLE = "aegis_schema_migrations"
MIGRATIONS_LOCK = "aegis_schema_migrations"  # one lock for every store's migrations in a database
_STORE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")

_aegis_dialects: weakref.WeakSet[Any] = weakref.WeakSet()  # engines made by make_engine (by dialect)

_migrations_metadata = sa.MetaData()
migrations_table = sa.Table(
    MIGRATIONS_TABLE,
    _migrations_metadata,
    sa.Column("store", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)


class DatabaseNotConfigured(RuntimeError):
    """The PostgreSQL connection settings are missing or unusable; the message names every one."""


class SchemaTooNew(RuntimeError):
    """The database holds migrations this code does not know: a newer Aegis migrated it."""

    def __init__(self, store: str, unknown: Sequence[int], known: int) -> None:
        self.store = store
        self.unknown = sorted(unknown)
        self.known = known
        super().__init__(
            f"the {store} store's database has schema version(s) {', '.join(map(str, self.unknown))} "
            f"that this Aegis does not know (it knows versions up to {known}): a newer Aegis migrated it; "
            "run that version (or newer) against this database, never an older one"
        )


# ----------------------------------------------------------------------------- URLs


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _require(env: Mapping[str, str], names: Sequence[str]) -> dict[str, str]:
    missing = [name for name in names if not env.get(name, "").strip()]
    if missing:
        raise DatabaseNotConfigured(
            "the PostgreSQL stores need these environment variables, which are not set: "
            + ", ".join(missing)
            + " (on EKS the platform deployment sets them from the stack outputs and the database secret)"
        )
    return {name: env[name] for name in names}


def _server_url(values: Mapping[str, str], database: str) -> str:
    host = values[ENV_DB_HOST].strip()
    port = values[ENV_DB_PORT].strip()
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise DatabaseNotConfigured(f"{ENV_DB_PORT}={port!r} is not a TCP port number")
    credentials = f"{quote(values[ENV_DB_USER].strip(), safe='')}:{quote(values[ENV_DB_PASSWORD], safe='')}"
    name = quote(database.strip(), safe="")
    if host.startswith("/"):  # a Unix-socket directory (libpq): the port names the socket file
        return f"{POSTGRES_DRIVER}://{credentials}@/{name}?host={quote(host, safe='/')}&port={port}"
    return f"{POSTGRES_DRIVER}://{credentials}@{host}:{port}/{name}"


def postgres_url(database: str, environ: Mapping[str, str] | None = None) -> str:
    """``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE`` from ``AEGIS_DB_*``.

    User and password are URL-quoted. A host that is a directory (``/run/pg``)
    is a Unix socket and goes in the query (``@/DATABASE?host=...&port=...``).
    :class:`DatabaseNotConfigured` names every missing variable at once.
    """
    env = _env(environ)
    if not database or not database.strip():
        raise DatabaseNotConfigured("postgres_url needs a database name")
    return _server_url(_require(env, SERVER_VARS), database)


def platform_database_url(environ: Mapping[str, str] | None = None) -> str:
    """The platform database every store shares in prod: ``postgres_url($AEGIS_LEDGER_DB)``."""
    env = _env(environ)
    values = _require(env, (*SERVER_VARS, ENV_PLATFORM_DB))
    return _server_url(values, values[ENV_PLATFORM_DB])


def store_schema(store: str) -> str:
    """The PostgreSQL schema of ``store`` in the shared database: ``aegis_<store>``."""
    if not _STORE_NAME.match(store):
        raise ValueError(
            f"store name {store!r}: use lower-case letters, digits and underscores (e.g. 'alerts')"
        )
    return SCHEMA_PREFIX + store


def with_schema(url: str, schema: str) -> str:
    """``url`` with ``schema`` as its connections' only ``search_path`` entry (PostgreSQL URLs only)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"only a PostgreSQL URL has schemas, not {parsed.drivername}://")
    if not _STORE_NAME.match(schema):
        raise ValueError(f"schema name {schema!r}: use lower-case letters, digits and underscores")
    option = f"-csearch_path={schema}"
    existing = parsed.query.get("options")
    if existing is None:  # append as text: the rest of the URL stays exactly as given
        return f"{url}{'&' if '?' in url else '?'}options={quote(option, safe='')}"
    joined = " ".join([existing if isinstance(existing, str) else " ".join(existing), option])
    return parsed.update_query_dict({"options": joined}).render_as_string(hide_password=False)


def _profile(environ: Mapping[str, str] | None) -> str:
    if environ is None:
        return current_profile()
    profile = environ.get(ENV_PROFILE, "local").strip() or "local"
    if profile not in PROFILES:
        raise ValueError(
            f"{ENV_PROFILE}={profile!r} is not a known profile; expected one of {', '.join(PROFILES)}"
        )
    return profile


def store_url(store: str, *, sqlite_path: Path, environ: Mapping[str, str] | None = None) -> str:
    """The URL of ``store``: ``$AEGIS_<STORE>_URL`` if set; in prod the platform database
    (schema ``aegis_<store>``); else ``sqlite:///<sqlite_path>``."""
    env = _env(environ)
    schema = store_schema(store)
    override = env.get(f"AEGIS_{store.upper()}_URL", "").strip()
    if override:
        return override
    if _profile(environ) == "prod":
        return with_schema(platform_database_url(env), schema)
    return f"sqlite:///{sqlite_path}"


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite URL; None for an in-memory database or another backend."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def safe_url(url: str) -> str:
    """``url`` with its password hidden, for messages and logs."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


# ----------------------------------------------------------------------------- engines


def lock_key(name: str) -> int:
    """The PostgreSQL advisory-lock key of ``name`` (a stable signed 64-bit integer)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _sqlite_engine(url: str, read_only: bool) -> Engine:
    engine = sa.create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
        # a reader closes its connection after each use: the last one out removes -wal and -shm
        **({"poolclass": sa.NullPool} if read_only else {}),
    )

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite would defer it past reads)
        cur = dbapi_conn.cursor()
        if read_only:  # leave the file's journal mode as it is; refuse writes
            cur.execute("PRAGMA query_only=ON")
            cur.close()
            return
        mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() not in ("wal", "memory"):
            raise RuntimeError(f"{url}: could not enable WAL journal mode (got {mode!r})")
        cur.execute("PRAGMA synchronous=FULL")  # a committed write survives power loss
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_LOCK)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")  # writers queue up front

    return engine


def _postgres_engine(url: sa.URL) -> Engine:
    engine = sa.create_engine(url, pool_pre_ping=True)

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        name = conn.get_execution_options().get(WRITE_LOCK)
        if name:  # what BEGIN IMMEDIATE is on SQLite: one writer of this store at a time, until commit
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({lock_key(str(name))})")

    return engine


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for a store: SQLite (WAL, ``synchronous=FULL``, foreign keys, a 60 s busy
    timeout, ``BEGIN`` issued by us) or PostgreSQL (psycopg, ``pool_pre_ping``).

    Both honour the :data:`WRITE_LOCK` execution option (see :func:`write_transaction`).
    ``postgresql://`` means psycopg 3. Anything else is a ``ValueError``. ``read_only``
    (SQLite): change nothing in the file, not even its journal mode, refuse writes
    (``query_only``), and keep no connection open between uses.
    """
    try:
        parsed = sa.make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"{url!r} is not a database URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = _sqlite_engine(url, read_only)
    elif backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername=POSTGRES_DRIVER)
        engine = _postgres_engine(parsed)
    else:
        raise ValueError(
            f"unsupported database URL {safe_url(url)!r}: Aegis stores use sqlite:///PATH or "
            f"{POSTGRES_DRIVER}://USER:PASSWORD@HOST:PORT/DATABASE"
        )
    _aegis_dialects.add(engine.dialect)
    return engine


def open_store(url: str, store: str, migrations: Sequence[Migration]) -> Engine:
    """What every store does on open: the SQLite file's directory, the engine, the migrations."""
    file = sqlite_file(url)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    migrate(engine, store, migrations)
    return engine


@contextmanager
def write_transaction(engine: Engine, lock: str) -> Iterator[Connection]:
    """A transaction that holds the write lock ``lock`` from its first statement to its end.

    SQLite: ``BEGIN IMMEDIATE`` (the database-wide write lock; ``lock`` is not
    needed there, each store has its own file). PostgreSQL:
    ``pg_advisory_xact_lock`` on ``lock``, which every writer of the store takes,
    so reads inside the transaction see the last writer's commit and nothing
    changes under them before this one commits.
    """
    with engine.connect().execution_options(**{WRITE_LOCK: lock}) as conn, conn.begin():
        yield conn


# ----------------------------------------------------------------------------- migrations


@dataclass(frozen=True)
class Migration:
    """One step of a store's schema: ``apply`` runs inside the transaction that records ``version``."""

    version: int
    name: str
    apply: Callable[[Connection], None]


def _plan(store: str, migrations: Sequence[Migration]) -> list[Migration]:
    versions = [m.version for m in migrations]
    if not migrations:
        raise ValueError(f"the {store} store has no migrations; its first one creates its tables")
    if any(not isinstance(v, int) or v < 1 for v in versions) or len(set(versions)) != len(versions):
        raise ValueError(
            f"the {store} store's migration versions must be distinct integers >= 1, got {versions}"
        )
    return sorted(migrations, key=lambda m: m.version)


def _search_path_schema(conn: Connection) -> str | None:
    """The schema a store's tables go in, when it does not exist yet (None: it exists, or $user/public)."""
    translated = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
    if translated:
        return str(translated)
    if conn.execute(sa.text("SELECT current_schema()")).scalar() is not None:
        return None
    path = str(conn.execute(sa.text("SELECT current_setting('search_path')")).scalar() or "")
    entries = [e.strip().strip('"') for e in path.split(",") if e.strip()]
    names = [e for e in entries if e and e != "$user"]
    return names[0] if names else None


def _ensure_schema(conn: Connection) -> None:
    if conn.dialect.name != "postgresql":
        return
    schema = _search_path_schema(conn)
    if schema is None:
        return
    exists = conn.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}).first()
    if exists is None:
        conn.exec_driver_sql(f"CREATE SCHEMA {conn.dialect.identifier_preparer.quote_schema(schema)}")
        log.info("created schema %s", schema)


def _versions(conn: Connection, store: str) -> set[int]:
    query = sa.select(migrations_table.c.version).where(migrations_table.c.store == store)
    versions: list[Any] = list(conn.execute(query).scalars())
    return {int(v) for v in versions}


def _refuse_unknown(store: str, done: set[int], known: set[int]) -> None:
    unknown = done - known
    if unknown:
        raise SchemaTooNew(store, sorted(unknown), max(known))


def schema_versions(engine: Engine, store: str) -> list[int]:
    """The migrations of ``store`` recorded in its database, oldest first ([] before the first)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(MIGRATIONS_TABLE):
            return []
        return sorted(_versions(conn, store))


def migrate(engine: Engine, store: str, migrations: Sequence[Migration]) -> list[int]:
    """Bring ``store``'s tables up to the newest of ``migrations``; return the versions applied now.

    Each migration runs in its own transaction together with its row in
    ``aegis_schema_migrations`` (``store, version, name, applied_at``; in the
    store's own schema on PostgreSQL, in the store's file on SQLite). Starters
    queue on one lock (``BEGIN IMMEDIATE``; ``pg_advisory_xact_lock``) and
    re-read the applied versions under it, so two processes opening the same
    store apply each migration once. A version in the database that
    ``migrations`` does not have raises :class:`SchemaTooNew`. Migration 1 of a
    store that predates migrations must create only what is missing, so a
    database made by older code is adopted as it is.
    """
    store_schema(store)  # the same naming rules as the schema
    plan = _plan(store, migrations)
    if engine.dialect not in _aegis_dialects:
        raise ValueError("migrate needs an engine from aegis.db.make_engine (it takes the write lock)")
    known = {m.version for m in plan}
    with write_transaction(engine, MIGRATIONS_LOCK) as conn:
        _ensure_schema(conn)
        migrations_table.create(conn, checkfirst=True)
        done = _versions(conn, store)
        _refuse_unknown(store, done, known)
    applied: list[int] = []
    for step in plan:
        if step.version in done:
            continue
        with write_transaction(engine, MIGRATIONS_LOCK) as conn:
            done = _versions(conn, store)  # another starter may have applied it while we queued
            _refuse_unknown(store, done, known)
            if step.version in done:
                continue
            step.apply(conn)
            conn.execute(
                migrations_table.insert().values(
                    store=store, version=step.version, name=step.name, applied_at=datetime.now(UTC)
                )
            )
        applied.append(step.version)
        log.info("%s store: applied migration %d (%s)", store, step.version, step.name)
    return applied
