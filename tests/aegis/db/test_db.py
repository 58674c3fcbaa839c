"""aegis.db: store URLs from the environment, engines and their write lock, per-store schemas,
migrations (order, once, concurrent starters, too-new databases) and the adoption of SQLite
files made before migrations existed. SQLite and a real PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from aegis import db
from aegis.config import AegisPaths
from aegis.db import DatabaseNotConfigured, Migration, SchemaTooNew, migrate, schema_versions
from tests.support import run_together

SERVER = {
    "AEGIS_DB_HOST": "aurora.internal",
    "AEGIS_DB_PORT": "5432",
    "AEGIS_DB_USER": "aegis",
    "AEGIS_DB_PASSWORD": "s3cret",
}
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


# ----------------------------------------------------------------------------- URLs


def test_postgres_url_quotes_the_credentials() -> None:
    env = {**SERVER, "AEGIS_DB_USER": "ops@aegis", "AEGIS_DB_PASSWORD": "p@ss:w/rd%?#&"}
    url = db.postgres_url("platform", env)
    assert url == "postgresql+psycopg://ops%40aegis:p%40ss%3Aw%2Frd%25%3F%23%26@aurora.internal:5432/platform"
    parsed = sa.make_url(url)
    assert (parsed.username, parsed.password, parsed.host, parsed.port, parsed.database) == (
        "ops@aegis", "p@ss:w/rd%?#&", "aurora.internal", 5432, "platform"
    )  # fmt: skip


def test_every_missing_variable_is_named_at_once() -> None:
    with pytest.raises(DatabaseNotConfigured) as err:
        db.postgres_url("platform", {"AEGIS_DB_HOST": "h", "AEGIS_DB_PASSWORD": "  "})
    message = str(err.value)
    assert all(v in message for v in ("AEGIS_DB_PORT", "AEGIS_DB_USER", "AEGIS_DB_PASSWORD"))
    assert "AEGIS_DB_HOST" not in message
    with pytest.raises(DatabaseNotConfigured) as err:
        db.platform_database_url({})
    assert all(v in str(err.value) for v in (*db.SERVER_VARS, "AEGIS_LEDGER_DB"))
    assert db.platform_database_url({**SERVER, "AEGIS_LEDGER_DB": "aegis"}).endswith(
        "@aurora.internal:5432/aegis"
    )
    with pytest.raises(DatabaseNotConfigured, match="AEGIS_DB_PORT='fivefour' is not a TCP port"):
        db.postgres_url("platform", {**SERVER, "AEGIS_DB_PORT": "fivefour"})


def test_a_socket_directory_host_goes_in_the_query() -> None:
    url = db.postgres_url("platform", {**SERVER, "AEGIS_DB_HOST": "/run/postgresql"})
    parsed = sa.make_url(url)
    assert parsed.host is None and parsed.query == {"host": "/run/postgresql", "port": "5432"}
    assert parsed.database == "platform" and parsed.password == "s3cret"


def test_store_url_override_then_profile_then_sqlite(tmp_path: Path) -> None:
    file = tmp_path / "alerts.db"
    assert db.store_url("alerts", sqlite_path=file, environ={}) == f"sqlite:///{file}"
    assert db.store_url("alerts", sqlite_path=file, environ={"AEGIS_PROFILE": "local", **SERVER}) == (
        f"sqlite:///{file}"
    )
    prod = {"AEGIS_PROFILE": "prod", **SERVER, "AEGIS_LEDGER_DB": "aegis"}
    url = db.store_url("alerts", sqlite_path=file, environ=prod)
    assert url.startswith(db.platform_database_url(prod))
    assert sa.make_url(url).query["options"] == "-csearch_path=aegis_alerts"
    override = "postgresql+psycopg://u:p@elsewhere:6432/alerts"
    assert (
        db.store_url("alerts", sqlite_path=file, environ={**prod, "AEGIS_ALERTS_URL": override}) == override
    )
    with pytest.raises(DatabaseNotConfigured, match="AEGIS_LEDGER_DB"):
        db.store_url("alerts", sqlite_path=file, environ={"AEGIS_PROFILE": "prod", **SERVER})
    with pytest.raises(ValueError, match="not a known profile"):
        db.store_url("alerts", sqlite_path=file, environ={"AEGIS_PROFILE": "staging"})
    with pytest.raises(ValueError, match="lower-case letters"):
        db.store_url("Alerts; drop", sqlite_path=file, environ={})


def test_store_url_reads_the_process_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**SERVER, "AEGIS_LEDGER_DB": "aegis", "AEGIS_PROFILE": "prod"}.items():
        monkeypatch.setenv(name, value)
    assert "search_path%3Daegis_ledger" in db.store_url("ledger", sqlite_path=tmp_path / "ledger.db")
    monkeypatch.setenv("AEGIS_PROFILE", "local")
    assert db.store_url("ledger", sqlite_path=tmp_path / "ledger.db") == f"sqlite:///{tmp_path / 'ledger.db'}"


def test_with_schema_keeps_existing_options() -> None:
    url = db.with_schema("postgresql+psycopg://u:p@h:5432/d?options=-cstatement_timeout%3D5000", "aegis_x")
    assert sa.make_url(url).query["options"] == "-cstatement_timeout=5000 -csearch_path=aegis_x"
    with pytest.raises(ValueError, match="only a PostgreSQL URL"):
        db.with_schema("sqlite:///x.db", "aegis_x")


def test_make_engine_refuses_other_backends() -> None:
    with pytest.raises(ValueError, match="unsupported database URL 'mysql://u:\\*\\*\\*@h/d'"):
        db.make_engine("mysql://u:secret@h/d")
    with pytest.raises(ValueError, match="not a database URL"):
        db.make_engine("not a url")
    assert db.make_engine("postgresql://u:p@h/d").url.drivername == "postgresql+psycopg"


# ----------------------------------------------------------------------------- engines


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each backend; on PostgreSQL in a store schema, as prod has it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return db.with_schema(request.getfixturevalue("pg_db"), "aegis_test")


def test_sqlite_engines_are_durable(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 's.db'}")
    with engine.connect() as conn:
        pragmas = [
            conn.exec_driver_sql(f"PRAGMA {p}").scalar()
            for p in ("journal_mode", "synchronous", "foreign_keys")
        ]
    assert pragmas == ["wal", 2, 1]  # WAL, FULL, on
    engine.dispose()


def test_a_read_only_sqlite_engine_changes_nothing(tmp_path: Path) -> None:
    file = tmp_path / "old.db"
    with sqlite3.connect(file) as raw:  # a rollback-journal file, as the ledger's used to be
        raw.execute("CREATE TABLE t (n INTEGER)")
        raw.execute("INSERT INTO t VALUES (1)")
    before = file.read_bytes()
    reader = db.make_engine(f"sqlite:///{file}", read_only=True)
    with reader.connect() as conn:
        assert conn.exec_driver_sql("SELECT n FROM t").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "delete"
        with pytest.raises(sa.exc.OperationalError, match="readonly"):
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
    reader.dispose()
    assert file.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["old.db"]


def test_write_transactions_of_a_store_never_lose_an_update(url: str) -> None:
    """Read-modify-write from two engines (two processes' worth): the write lock makes it safe."""
    engines = [db.make_engine(url) for _ in range(2)]
    migrate(engines[0], "test", [Migration(1, "counter", _counter_table)])
    rounds = 15

    def bump(engine: sa.Engine) -> None:
        for _ in range(rounds):
            with db.write_transaction(engine, "aegis_test") as conn:
                n = conn.execute(sa.text("SELECT n FROM counter")).scalar_one()
                time.sleep(0.002)  # widen the window a lost update would need
                conn.execute(sa.text("UPDATE counter SET n = :n"), {"n": n + 1})

    run_together([lambda e=e: bump(e) for e in engines])
    with engines[0].connect() as conn:
        assert conn.execute(sa.text("SELECT n FROM counter")).scalar_one() == 2 * rounds
    for engine in engines:
        engine.dispose()


def _counter_table(conn: sa.Connection) -> None:
    conn.exec_driver_sql("CREATE TABLE counter (n INTEGER NOT NULL)")
    conn.exec_driver_sql("INSERT INTO counter (n) VALUES (0)")


# ----------------------------------------------------------------------------- migrations


def _table(
    name: str, calls: list[int] | None = None, version: int = 0, pause: float = 0.0
) -> Callable[[sa.Connection], None]:
    """A migration creating ``name`` (no IF NOT EXISTS: running it twice fails loudly)."""

    def apply(conn: sa.Connection) -> None:
        if calls is not None:
            calls.append(version)
        conn.exec_driver_sql(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY)")
        time.sleep(pause)

    return apply


def _tables(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def test_migrations_apply_in_version_order_once(url: str) -> None:
    engine = db.make_engine(url)
    calls: list[int] = []
    steps = [Migration(v, f"step {v}", _table(f"t{v}", calls, v)) for v in (3, 1, 2)]
    assert migrate(engine, "test", steps) == [1, 2, 3]
    assert calls == [1, 2, 3]
    assert migrate(engine, "test", steps) == [] and calls == [1, 2, 3]
    assert schema_versions(engine, "test") == [1, 2, 3]
    assert schema_versions(engine, "other") == []
    assert {"t1", "t2", "t3", db.MIGRATIONS_TABLE} <= _tables(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.migrations_table).order_by(db.migrations_table.c.version)).all()
    assert [(r.store, r.version, r.name) for r in rows] == [("test", v, f"step {v}") for v in (1, 2, 3)]
    assert all(r.applied_at is not None for r in rows)
    more = [*steps, Migration(4, "step 4", _table("t4", calls, 4))]
    assert migrate(engine, "test", more) == [4] and calls == [1, 2, 3, 4]
    engine.dispose()


def test_a_failing_migration_leaves_the_ones_before_it_and_nothing_of_itself(url: str) -> None:
    engine = db.make_engine(url)

    def broken(conn: sa.Connection) -> None:
        conn.exec_driver_sql("CREATE TABLE half (id INTEGER)")
        raise RuntimeError("migration 2 failed halfway")

    with pytest.raises(RuntimeError, match="halfway"):
        migrate(engine, "test", [Migration(1, "one", _table("t1")), Migration(2, "two", broken)])
    assert schema_versions(engine, "test") == [1]
    assert "half" not in _tables(engine) and "t1" in _tables(engine)
    fixed = [Migration(1, "one", _table("t1")), Migration(2, "two", _table("half"))]
    assert migrate(engine, "test", fixed) == [2]
    engine.dispose()


def test_concurrent_starters_apply_each_migration_exactly_once(url: str) -> None:
    calls: list[int] = []
    steps = [Migration(v, f"step {v}", _table(f"t{v}", calls, v, pause=0.2)) for v in (1, 2, 3)]
    engines = [db.make_engine(url) for _ in range(3)]
    results = run_together([lambda e=e: migrate(e, "test", steps) for e in engines])
    assert sorted(calls) == [1, 2, 3]  # each CREATE TABLE ran once (a second would have failed)
    applied = [v for r in results for v in r]  # type: ignore[attr-defined]
    assert sorted(applied) == [1, 2, 3] and Counter(applied).most_common(1)[0][1] == 1
    assert schema_versions(engines[0], "test") == [1, 2, 3]
    for engine in engines:
        engine.dispose()


def test_a_database_migrated_by_newer_code_is_refused(url: str) -> None:
    engine = db.make_engine(url)
    migrate(engine, "test", [Migration(v, f"step {v}", _table(f"t{v}")) for v in (1, 2, 3)])
    with pytest.raises(SchemaTooNew) as err:
        migrate(engine, "test", [Migration(1, "step 1", _table("t1"))])
    assert err.value.store == "test" and err.value.unknown == [2, 3] and err.value.known == 1
    assert "test store" in str(err.value) and "version(s) 2, 3" in str(err.value)
    # another store in the same database is not affected
    assert migrate(engine, "other", [Migration(1, "o", _table("o1"))]) == [1]
    engine.dispose()


def test_migrate_checks_its_input(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    noop = _table("t")
    with pytest.raises(ValueError, match="distinct integers"):
        migrate(engine, "test", [Migration(1, "a", noop), Migration(1, "b", noop)])
    with pytest.raises(ValueError, match="distinct integers"):
        migrate(engine, "test", [Migration(0, "a", noop)])
    with pytest.raises(ValueError, match="no migrations"):
        migrate(engine, "test", [])
    with pytest.raises(ValueError, match="lower-case"):
        migrate(engine, "Test", [Migration(1, "a", noop)])
    with pytest.raises(ValueError, match=r"engine from aegis\.db\.make_engine"):
        migrate(sa.create_engine(f"sqlite:///{tmp_path / 'y.db'}"), "test", [Migration(1, "a", noop)])
    engine.dispose()


@pytest.mark.postgres
def test_stores_in_one_database_keep_to_their_own_schemas(pg_db: str) -> None:
    """Two stores with a table of the same name in the one shared database."""

    def events(column: str) -> Callable[[sa.Connection], None]:
        return lambda conn: conn.exec_driver_sql(
            f"CREATE TABLE events (id INTEGER PRIMARY KEY, {column} TEXT)"
        )

    alpha = db.make_engine(db.with_schema(pg_db, "aegis_alpha"))
    beta = db.make_engine(db.with_schema(pg_db, "aegis_beta"))
    assert migrate(alpha, "alpha", [Migration(1, "events", events("what"))]) == [1]
    assert migrate(beta, "beta", [Migration(1, "events", events("why"))]) == [1]
    with alpha.begin() as conn:
        conn.exec_driver_sql("INSERT INTO events (id, what) VALUES (1, 'a')")
    with beta.begin() as conn:
        conn.exec_driver_sql("INSERT INTO events (id, why) VALUES (1, 'b')")
    plain = sa.create_engine(pg_db)
    with plain.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).all()
        assert conn.exec_driver_sql("SELECT what FROM aegis_alpha.events").scalar() == "a"
        assert conn.exec_driver_sql("SELECT why FROM aegis_beta.events").scalar() == "b"
    assert [tuple(r) for r in rows] == [
        ("aegis_alpha", db.MIGRATIONS_TABLE), ("aegis_alpha", "events"),
        ("aegis_beta", db.MIGRATIONS_TABLE), ("aegis_beta", "events"),
    ]  # fmt: skip
    assert schema_versions(alpha, "beta") == []  # each schema's table records its own store
    for engine in (alpha, beta, plain):
        engine.dispose()


@pytest.mark.postgres
def test_schema_translate_map_engines_get_their_schema_created(pg_db: str) -> None:
    engine = db.make_engine(pg_db).execution_options(schema_translate_map={None: "aegis_mapped"})
    meta = sa.MetaData()
    table = sa.Table("items", meta, sa.Column("id", sa.Integer, primary_key=True))
    assert migrate(engine, "mapped", [Migration(1, "items", lambda conn: meta.create_all(conn))]) == [1]
    with engine.begin() as conn:
        conn.execute(table.insert().values(id=7))
    with sa.create_engine(pg_db).connect() as conn:
        assert conn.exec_driver_sql("SELECT id FROM aegis_mapped.items").scalar() == 7
        assert conn.exec_driver_sql("SELECT version FROM aegis_mapped.aegis_schema_migrations").scalar() == 1


# ----------------------------------------------------------------------------- adoption


def _open_and_fill(name: str) -> Callable[[], Callable[[], bool]]:
    """Per store: a function that opens it and writes, returning a check that the data is there."""

    def changes() -> Callable[[], bool]:
        from aegis.changes.store import ChangeSetStore
        from aegis.domain import AutonomousChangeSet, ParamChange

        store = ChangeSetStore()
        store.add(
            AutonomousChangeSet(
                id="cs-old", target="eu-1", diff={"drop_rate": ParamChange(before=1.0, after=1.1)}
            )
        )
        store.close()
        return lambda: _closing(ChangeSetStore(), lambda s: s.get("cs-old").state.value == "proposed")

    def alerts() -> Callable[[], bool]:
        from aegis.alerts.inbox import AlertInbox
        from aegis.domain import Alert

        inbox = AlertInbox()
        inbox.put([Alert(source="slo", name="ShardDown", target="eu-1", fingerprint="old")])
        inbox.close()
        return lambda: _closing(AlertInbox(), lambda s: s.get("old") is not None and s.latest_seq() == 1)

    def healing() -> Callable[[], bool]:
        from aegis.healing.models import Incident
        from aegis.healing.store import IncidentStore

        store = IncidentStore()
        store.save(Incident(id="inc-old", target="eu-1", kind="shard_down"))
        store.close()
        return lambda: _closing(IncidentStore(), lambda s: s.get("inc-old").kind == "shard_down")

    def security() -> Callable[[], bool]:
        from aegis.security.tokens import TokenStore

        store = TokenStore(ledger=False)
        issued = store.issue(["read"])
        store.close()
        return lambda: _closing(
            TokenStore(ledger=False), lambda s: s.verify(issued.token, "read", "127.0.0.1").id == issued.id
        )

    def ledger() -> Callable[[], bool]:
        from aegis.ledger import Ledger

        chain = Ledger()
        for i in range(3):
            chain.append("note", f"s-{i}", {"i": i}, actor="t")
        chain.dispose()

        def check() -> bool:
            reopened = Ledger()
            reopened.append("note", "after", {"i": 3}, actor="t")
            report = reopened.verify()
            reopened.dispose()
            return report.ok and report.records_checked == 5

        return check

    return {"changes": changes, "alerts": alerts, "healing": healing, "security": security, "ledger": ledger}[
        name
    ]


def _closing(store: object, check: Callable[[object], bool]) -> bool:
    try:
        return check(store)
    finally:
        getattr(store, "close", getattr(store, "dispose", lambda: None))()


STORE_FILES = {
    "changes": "changesets.db",
    "alerts": "alerts.db",
    "healing": "healing.db",
    "security": "security.db",
    "ledger": "ledger.db",
}


@pytest.mark.parametrize("store", sorted(STORE_FILES))
def test_a_store_file_made_before_migrations_is_adopted(aegis_home: AegisPaths, store: str) -> None:
    """A store file as the code before migrations left it (no migrations table, rollback journal)
    opens with its data, gets version 1 recorded, and takes new writes."""
    check = _open_and_fill(store)()
    file = aegis_home.home / STORE_FILES[store]
    with sqlite3.connect(file) as raw:  # make it what the old code wrote
        raw.execute(f"DROP TABLE {db.MIGRATIONS_TABLE}")
        raw.execute("PRAGMA journal_mode=DELETE")
    with sqlite3.connect(file) as raw:
        names = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert db.MIGRATIONS_TABLE not in names
    assert check()
    engine = db.make_engine(f"sqlite:///{file}")
    assert schema_versions(engine, store) == [1]
    engine.dispose()


def test_a_reader_leaves_an_old_ledger_file_as_it_was(aegis_home: AegisPaths) -> None:
    """``aegis audit verify`` on a ledger the old code wrote: it verifies, and the file is untouched
    (no migration, no journal-mode change, no -wal left behind) until a writer opens it."""
    from aegis.ledger import Ledger

    writer = Ledger()
    writer.append("note", "s", {"i": 1}, actor="t")
    writer.dispose()
    with sqlite3.connect(aegis_home.ledger) as raw:
        raw.execute(f"DROP TABLE {db.MIGRATIONS_TABLE}")
        raw.execute("PRAGMA journal_mode=DELETE")
    before = aegis_home.ledger.read_bytes()
    reader = Ledger(read_only=True)
    assert reader.verify().ok and [r.subject for r in reader.records("s")] == ["s"]
    reader.dispose()
    assert aegis_home.ledger.read_bytes() == before
    assert sorted(p.name for p in aegis_home.home.glob("ledger.db*")) == ["ledger.db"]


def test_a_changeset_store_from_plain_create_all_is_adopted(tmp_path: Path) -> None:
    """The exact way the old code made the file: ``create_all`` on a plain engine, pysqlite defaults."""
    from aegis.changes.store import ChangeSetStore, metadata

    file = tmp_path / "changesets.db"
    plain = sa.create_engine(f"sqlite:///{file}")
    metadata.create_all(plain)
    with plain.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO changesets (id, target, state, changeset_json, created_at, updated_at) VALUES "
            '(\'cs-1\', \'eu-1\', \'proposed\', \'{"id": "cs-1", "target": "eu-1", "diff": {}}\', '
            "'2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000')"
        )
    plain.dispose()
    store = ChangeSetStore(f"sqlite:///{file}")
    assert store.get("cs-1").changeset.target == "eu-1"
    assert schema_versions(store.engine, "changes") == [1]
    store.close()
