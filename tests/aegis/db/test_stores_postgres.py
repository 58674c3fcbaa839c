"""Every store on the path users take: no URL passed, the profile decides. ``AEGIS_PROFILE=prod`` with
the ``AEGIS_DB_*`` variables puts them in a real PostgreSQL (one database, a schema per store);
``local`` in SQLite files under ``AEGIS_HOME``. Each store's concurrency promise is checked on both:
the ledger's chain never forks, the inbox never shares a ``seq``, an incident's timeline never
loses an action, a changeset moves once."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from aegis import db
from aegis.config import AegisPaths
from aegis.domain import Alert, AlertStatus, AutonomousChangeSet, ParamChange, PromotionState, Verdict
from tests.pg_support import socket_env
from tests.support import run_together

S = PromotionState
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SCHEMAS = {
    "aegis_ledger": {"audit_records", "ledger_head"},
    "aegis_changes": {"changesets", "steps", "transitions", "decisions", "artifacts", "canary_specs",
                      "loop_events", "reflections"},
    "aegis_alerts": {"alerts", "deliveries"},
    "aegis_healing": {"incidents", "alert_links", "sensor_state"},
    "aegis_security": {"tokens", "refusals", "isolations"},
}  # fmt: skip


@pytest.fixture
def prod_env(
    aegis_home: AegisPaths, pg_server: str, pg_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> str:
    """The prod profile over a fresh database, as the platform deployment sets it; returns its URL."""
    for name, value in socket_env(pg_server, str(sa.make_url(pg_db).database)).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AEGIS_PROFILE", "prod")
    monkeypatch.setenv("AEGIS_LEDGER_WITNESS", str(tmp_path / "witness"))  # prod's is the audit bucket
    return pg_db


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, aegis_home: AegisPaths) -> str:
    """``sqlite``: the local profile (``aegis_home``). ``postgres``: :func:`prod_env`."""
    if request.param == "postgres":
        request.getfixturevalue("prod_env")
    return str(request.param)


def _on(backend: str, url: str) -> None:
    """The store went where the profile says, without the caller naming a URL."""
    parsed = sa.make_url(url)
    if backend == "postgres":
        assert parsed.get_backend_name() == "postgresql" and parsed.query["options"].startswith(
            "-csearch_path=aegis_"
        )
    else:
        assert parsed.get_backend_name() == "sqlite" and Path(str(parsed.database)).is_file()


# ----------------------------------------------------------------------------- the ledger


def test_ledger_chain_appends_concurrently_and_verifies(backend: str) -> None:
    from aegis.ledger import Ledger

    ledger = Ledger()
    _on(backend, ledger.url)
    assert ledger.dialect == ("postgresql" if backend == "postgres" else "sqlite")
    for i in range(3):
        ledger.append("note", f"cs-{i}", {"i": i}, actor="test")
    writers = [Ledger() for _ in range(3)]  # three writers, as three processes would be

    def hammer(w: Ledger, n: int) -> None:
        for i in range(8):
            w.append("note", f"w{n}", {"i": i}, actor=f"writer-{n}")

    run_together([lambda w=w, n=n: hammer(w, n) for n, w in enumerate(writers)])
    report = ledger.verify()
    assert report.ok, report.summary()
    assert report.records_checked == 1 + 3 + 3 * 8 and report.unwitnessed == 0
    records = ledger.records()
    assert [r.seq for r in records] == list(range(1, 29))
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    reader = Ledger(read_only=True)
    assert reader.verify().ok and len(reader.records("w1")) == 8
    for each in (ledger, reader, *writers):
        each.dispose()


# ----------------------------------------------------------------------------- the changeset store


def _cs(cs_id: str, after: float = 1.05) -> AutonomousChangeSet:
    return AutonomousChangeSet(
        id=cs_id, target="eu-west-1", diff={"drop_rate": ParamChange(before=1.0, after=after)}
    )


def test_changeset_store_add_transition_steps_and_outbox(backend: str) -> None:
    from aegis.changes.states import IllegalTransition
    from aegis.changes.store import ChangeSetConflict, ChangeSetStore
    from aegis.domain import Decision

    store = ChangeSetStore()
    _on(backend, store.url)
    rec, created = store.add(_cs("cs-1"))
    assert created and rec.state == S.PROPOSED
    assert store.add(_cs("cs-1"))[1] is False
    with pytest.raises(ChangeSetConflict):
        store.add(_cs("cs-1", after=1.2))
    decision = Decision(changeset_id="cs-1", verdict=Verdict.AUTO, risk_score=0.1)
    store.save_decision("cs-1", decision)
    store.save_decision("cs-1", decision)  # the outbox row is queued once
    assert [d.id for d in store.unrecorded_decisions()] == [decision.id]

    movers = [ChangeSetStore() for _ in range(3)]  # three processes racing the same move

    def move(s: ChangeSetStore) -> str:
        try:
            return "moved" if s.transition("cs-1", S.PROPOSED, S.POLICY_CHECKED, "race") else "already"
        except IllegalTransition:
            return "refused"

    outcomes = run_together([lambda s=s: move(s) for s in movers])
    assert outcomes.count("moved") == 1, outcomes
    assert store.get("cs-1").state == S.POLICY_CHECKED
    assert [(t.src, t.dst) for t in store.transitions("cs-1")] == [(S.PROPOSED, S.POLICY_CHECKED)]
    (pending,) = store.transitions(unrecorded=True)
    store.mark_transition_recorded(pending.id, 7)
    assert store.transitions(unrecorded=True) == [] and store.transitions("cs-1")[0].ledger_seq == 7

    first = store.write_intent("cs-1", "snapshot", {"shard": "eu-west-1"})
    again = store.write_intent("cs-1", "snapshot", {"shard": "eu-west-1", "try": 2})
    assert (first.attempts, again.attempts, again.status) == (1, 2, "intent")
    store.write_outcome("cs-1", "snapshot", {"snapshot_id": "snap-1"})
    done = store.step("cs-1", "snapshot")
    assert done is not None and done.status == "done" and done.outcome == {"snapshot_id": "snap-1"}
    assert done.ended_at is not None and done.ended_at.tzinfo is not None
    with pytest.raises(ValueError, match="already completed"):
        store.write_intent("cs-1", "snapshot", {})
    assert [s.step for s in store.steps(status="done")] == ["snapshot"]

    adders = [ChangeSetStore() for _ in range(3)]
    added = run_together(
        [lambda s=s: s.add_event("cs-1", "canary_started", "cs-1/canary", {"n": 1}) for s in adders]
    )
    assert sorted(added) == [False, False, True]
    assert [e.key for e in store.events("cs-1")] == ["cs-1/canary"]
    assert store.put_reflection("cs-1", {"lesson": "x"}) and not store.put_reflection("cs-1", {"lesson": "y"})
    assert store.reflections() == [{"lesson": "x"}]
    for s in (store, *movers, *adders):
        s.close()


# ----------------------------------------------------------------------------- the alert inbox


def _alert(fp: str, status: str = "firing", target: str = "eu-1") -> Alert:
    return Alert(source="alertmanager", name="ShardDown", target=target, status=AlertStatus(status),
                 labels={"alertname": "ShardDown"}, fingerprint=fp)  # fmt: skip


def test_alert_inbox_dedups_and_concurrent_receivers_never_share_a_seq(backend: str) -> None:
    from aegis.alerts.inbox import AlertInbox

    inbox = AlertInbox()
    _on(backend, inbox.url)
    (first,) = inbox.put([_alert("fp-1")], source_payload={"alerts": 1})
    (repeat,) = inbox.put([_alert("fp-1")])
    assert (first.seq, repeat.seq, repeat.count) == (1, 1, 2)  # a repeat is not a change
    (resolved,) = inbox.put([_alert("fp-1", "resolved")])
    assert (resolved.seq, resolved.status, resolved.count) == (2, "resolved", 3)
    assert resolved.received_at.tzinfo is not None and resolved.resolved_at is not None
    receivers = [AlertInbox() for _ in range(4)]
    per, batch = 6, 3

    def receive(n: int, r: AlertInbox) -> None:
        for i in range(per):
            r.put([_alert(f"r{n}-{i}-{k}", target=f"eu-{k}") for k in range(batch)])

    run_together([lambda n=n, r=r: receive(n, r) for n, r in enumerate(receivers)])
    entries = inbox.since(2, limit=1000)
    seqs = [e.seq for e in entries]
    assert seqs == list(range(3, 3 + 4 * per * batch))  # every alert, one seq each, no gaps
    stats = inbox.stats()
    assert (stats.entries, stats.firing, stats.resolved, stats.deliveries) == (
        1 + 4 * per * batch,
        4 * per * batch,
        1,
        1,
    )
    assert len(inbox.firing("eu-0")) == 4 * per and len(inbox.firing("eu-1")) == 4 * per  # fp-1 resolved
    for each in (inbox, *receivers):
        each.close()


# ----------------------------------------------------------------------------- the incident store


def test_incident_store_keeps_every_action_and_the_sensor_state(backend: str) -> None:
    from aegis.healing.models import ActionOutcome, Incident, IncidentAction, IncidentStatus
    from aegis.healing.store import IncidentStore

    store = IncidentStore()
    _on(backend, store.url)
    store.save(Incident(id="inc-1", target="eu-1", kind="shard_down"))
    workers = [IncidentStore() for _ in range(3)]

    def act(n: int, s: IncidentStore) -> None:
        for i in range(6):
            s.add_action("inc-1", IncidentAction(name=f"w{n}-{i}", outcome=ActionOutcome.APPLIED))

    run_together([lambda n=n, s=s: act(n, s) for n, s in enumerate(workers)])
    assert len(store.get("inc-1").actions) == 18  # read-modify-write of the document lost nothing
    store.update("inc-1", status=IncidentStatus.RESOLVED)
    assert [i.id for i in store.incidents(status={IncidentStatus.RESOLVED})] == ["inc-1"]
    with store.tx() as conn:
        assert store.link_alert(conn, "fp-1", "inc-1") and not store.link_alert(conn, "fp-1", "inc-1")
        assert store.linked(conn, {"fp-1", "fp-2"}) == {"fp-1"}
        store.set_state(conn, "inbox_cursor", "5")
        store.set_state(conn, "inbox_cursor", "9")
    assert store.get_state("inbox_cursor") == "9"
    for s in (store, *workers):
        s.close()


# ----------------------------------------------------------------------------- the token store


def test_token_store_issues_verifies_revokes_and_records_in_the_ledger(backend: str) -> None:
    from aegis.ledger import Ledger
    from aegis.security.tokens import AuthError, TokenStore

    store = TokenStore()
    _on(backend, store.url)
    issued = store.issue(["control"], label="ci")
    assert store.verify(issued.token, "read", "10.0.0.1").id == issued.id  # control implies read
    forged = issued.token[:-4] + ("AAAA" if not issued.token.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthError) as err:
        store.verify(forged, "control", "10.0.0.2")
    assert err.value.reason == "forged"
    store.revoke(issued.id, reason="leaked")
    with pytest.raises(AuthError) as err:
        store.verify(issued.token, "control", "10.0.0.1")
    assert (err.value.status, err.value.reason) == (403, "revoked")
    assert [r.reason for r in store.refusals()] == ["forged", "revoked"]
    assert store.refusal_counts()["revoked"] == 1
    isolators = [TokenStore() for _ in range(3)]
    run_together([lambda s=s: s.isolate("10.0.0.2", "forged tokens", "healer") for s in isolators])
    assert [i.caller for i in store.isolations()] == ["10.0.0.2"]
    ledger = Ledger(read_only=True)
    actions = [r.payload.get("action") for r in ledger.records() if r.kind in ("token", "security")]
    assert actions == ["issue", "revoke", "isolate"]  # isolating once records once
    assert ledger.verify().ok
    ledger.dispose()
    for s in (store, *isolators):
        s.close()


# ----------------------------------------------------------------------------- where the tables are


@pytest.mark.postgres
def test_each_store_has_its_own_schema_in_the_one_database(prod_env: str) -> None:
    from aegis.alerts.inbox import AlertInbox
    from aegis.changes.store import ChangeSetStore
    from aegis.healing.store import IncidentStore
    from aegis.ledger import Ledger
    from aegis.security.tokens import TokenStore

    opened: list[Any] = [Ledger(), ChangeSetStore(), AlertInbox(), IncidentStore(), TokenStore()]
    for store in opened:
        assert sa.make_url(store.url).query["options"].startswith("-csearch_path=aegis_")
    plain = sa.create_engine(prod_env)
    with plain.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).all()
        versions = {
            schema: conn.exec_driver_sql(f"SELECT store, version FROM {schema}.{db.MIGRATIONS_TABLE}").all()
            for schema in SCHEMAS
        }
    plain.dispose()
    found: dict[str, set[str]] = {}
    for schema, table in rows:
        found.setdefault(schema, set()).add(table)
    assert found == {schema: tables | {db.MIGRATIONS_TABLE} for schema, tables in SCHEMAS.items()}
    assert {schema: [tuple(v) for v in rows] for schema, rows in versions.items()} == {
        schema: [(schema.removeprefix("aegis_"), 1)] for schema in SCHEMAS
    }
    for store in opened:
        getattr(store, "close", getattr(store, "dispose", None))()


@pytest.fixture
def _no_db_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (*db.SERVER_VARS, db.ENV_PLATFORM_DB):
        monkeypatch.delenv(name, raising=False)
    yield


def test_prod_without_the_database_settings_names_them(aegis_home: AegisPaths, monkeypatch: pytest.MonkeyPatch,
                                                       _no_db_env: None) -> None:  # fmt: skip
    from aegis.alerts.inbox import AlertInbox

    monkeypatch.setenv("AEGIS_PROFILE", "prod")
    with pytest.raises(db.DatabaseNotConfigured, match="AEGIS_DB_HOST, AEGIS_DB_PORT, AEGIS_DB_USER"):
        AlertInbox()
    assert not aegis_home.alerts_db.exists()  # no silent fallback to a local file
