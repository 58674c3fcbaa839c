"""The healing run against a real world server (``aegis world serve`` on loopback, real HTTP,
real policy engine, real signed ledger): a crash healed and verified, a playbook that
fails escalating to a webhook received by a local HTTP server, and a security
incident contained (credential rotated, caller isolated) and verified by a real call.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from aegis.config import AegisPaths
from aegis.domain import Fault, FaultKind
from aegis.healing.backend import RemediationBackend
from aegis.healing.engine import Healer
from aegis.healing.models import ActionOutcome, Incident, IncidentStatus
from aegis.healing.playbooks import load_playbooks
from aegis.healing.runner import decide
from aegis.healing.security import REFUSAL_THRESHOLD
from aegis.healing.store import IncidentStore
from aegis.ledger.ledger import Ledger
from aegis.security.tokens import TokenStore
from aegis.world.client import GameBackendClient
from tests.support import WorldServer

SHARD = "eu-west-1"
LONG = 24 * 60.0


@pytest.fixture
def world(aegis_home: AegisPaths) -> Iterator[WorldServer]:
    srv = WorldServer(aegis_home.home, speed="600").start()
    try:
        yield srv
    finally:
        srv.stop()


class _Pager:
    """A local HTTP server standing in for a pager's webhook: records every POST body."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.append(json.loads(body))
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pager"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pager() -> Iterator[_Pager]:
    p = _Pager()
    try:
        yield p
    finally:
        p.close()


def _inject(world: WorldServer, kind: FaultKind, magnitude: float = 1.0) -> None:
    with GameBackendClient(world.url, token=world.token("faults")) as c:
        c.inject_fault(Fault(kind=kind, shard_id=SHARD, duration_minutes=LONG, magnitude=magnitude))


def _healing_records(ledger: Ledger, incident_id: str) -> list[Any]:
    return [r for r in ledger.records(subject=incident_id)]


def test_a_crash_is_healed_verified_and_recorded(world: WorldServer) -> None:
    _inject(world, FaultKind.SHARD_CRASH)
    store = IncidentStore()
    inc = store.save(Incident(target=SHARD, kind="shard_down", alerts=["ShardDown"], alert_count=1))
    with RemediationBackend(world.url) as backend:
        assert backend.signals(SHARD)["status"] == "down"
        done = Healer(backend, store=store).heal(inc.id)
        assert done.status == IncidentStatus.RESOLVED
        assert done.contained_at is not None and done.resolved_at is not None
        assert done.diagnosis is not None and done.diagnosis.probable_cause == "fault:shard_crash"
        assert [(a.name, a.outcome) for a in done.actions] == [
            ("failover", ActionOutcome.APPLIED),
            ("verify:failover", ActionOutcome.VERIFIED),
        ]
        sig = backend.signals(SHARD)
        assert sig["status"] == "up" and "shard_crash" not in sig["active_faults"]  # cleared, not expired
    ledger = Ledger()
    steps = [r.payload.get("step") for r in _healing_records(ledger, inc.id) if r.kind == "healing"]
    assert steps == ["opened", "diagnosis", "action", "verification", "resolved"]
    assert all(r.payload.get("summary") for r in _healing_records(ledger, inc.id))
    assert any(r.kind == "reflection" for r in _healing_records(ledger, inc.id))
    assert any(r.kind == "decision" for r in ledger.records())  # every action passed the policy first
    assert ledger.verify().ok


def test_a_failing_playbook_escalates_to_the_webhook(world: WorldServer, pager: _Pager) -> None:
    """Latency 30x: shedding load cannot bring ticks under 500 ms; with restart removed, it escalates."""
    raw = load_playbooks().model_dump(mode="json")
    latency = next(p for p in raw["playbooks"] if p["problem"] == "latency")
    latency["actions"] = [a for a in latency["actions"] if a["name"] == "shed_load"]
    latency["actions"][0]["on_failure"] = "escalate"
    latency["actions"][0]["verify"]["timeout_s"] = 4
    book = type(load_playbooks()).model_validate(raw)
    _inject(world, FaultKind.LATENCY_SPIKE, magnitude=30)
    store = IncidentStore()
    inc = store.save(Incident(target=SHARD, kind="latency", alerts=["TickLatencyHigh"], alert_count=1))
    with RemediationBackend(world.url) as backend:
        done = Healer(backend, store=store, book=book, escalation_url=pager.url).heal(inc.id)
    assert done.status == IncidentStatus.ESCALATED
    assert [(a.name, a.outcome) for a in done.actions] == [
        ("shed_load", ActionOutcome.APPLIED),
        ("verify:shed_load", ActionOutcome.UNVERIFIED),
        ("escalate", ActionOutcome.ESCALATED),
    ]
    assert done.actions[-1].detail["delivered"] is True
    assert len(pager.received) == 1
    page = pager.received[0]
    assert page["dedup_key"] == inc.id and page["incident"]["status"] == "escalated"
    assert page["incident"]["actions"][0]["name"] == "shed_load"
    steps = [r.payload.get("step") for r in Ledger().records(subject=inc.id) if r.kind == "healing"]
    assert steps[-1] == "escalation"


def test_a_security_incident_is_contained_and_verified(world: WorldServer, aegis_home: AegisPaths) -> None:
    tokens = TokenStore()
    stolen = tokens.issue(["read"], label="leaked")
    headers = {"Authorization": f"Bearer {stolen.token}"}
    body = {"action": "restart"}
    for _ in range(REFUSAL_THRESHOLD):  # a read credential trying control calls
        r = httpx.post(f"{world.url}/v1/shards/{SHARD}/remediations", json=body, headers=headers, timeout=10)
        assert r.status_code == 403
    store = IncidentStore()
    book = load_playbooks()
    _, launch = decide(store, book, inbox=_EmptyInbox(), tokens=tokens, ledger=Ledger())
    assert [(i.kind, i.target) for i in launch] == [("security", f"token:{stolen.id}")]
    with RemediationBackend(world.url) as backend:
        done = Healer(backend, store=store, book=book, tokens=tokens).heal(launch[0].id)
    assert done.status == IncidentStatus.RESOLVED, done.actions
    names = [(a.name, a.outcome) for a in done.actions]
    assert ("rotate_credential", ActionOutcome.APPLIED) in names
    assert ("isolate_caller", ActionOutcome.APPLIED) in names
    assert tokens.get(stolen.id).state() in ("rotated", "revoked")
    assert tokens.is_isolated(stolen.id)
    again = httpx.get(f"{world.url}/v1/shards", headers=headers, timeout=10)
    assert again.status_code in (401, 403)  # verified from outside: the credential no longer works
    # The same refusals do not open a second incident.
    assert decide(store, book, inbox=_EmptyInbox(), tokens=tokens)[1] == []
    assert any(r.kind == "security" for r in Ledger().records(subject=launch[0].id))


class _EmptyInbox:
    """An inbox with no alerts (this test is about refusals only)."""

    def since(self, seq: int, limit: int = 500) -> list[Any]:
        return []


def test_a_suspect_changeset_is_rolled_back_first(aegis_home: AegisPaths) -> None:
    """A change in canary minutes before a latency incident is the first suspect: the playbook rolls it
    back through the lifecycle (config restored, state rolled_back), then goes on when that is not it."""
    from aegis.changes.lifecycle import Lifecycle, LifecycleConfig
    from aegis.changes.store import ChangeSetStore
    from aegis.domain import AutonomousChangeSet, ParamChange, PromotionState
    from tests.support import CANARY_WORLD_ARGS

    world = WorldServer(aegis_home.home, speed="600", args=CANARY_WORLD_ARGS).start()
    try:
        client = GameBackendClient(world.url)
        before = client.get_config(SHARD)
        in_band = {"inflation": 0.0, "velocity": 1.0, "abandon_rate": 0.1, "deaths": 1.0}
        lc = Lifecycle(client, store=ChangeSetStore(), config=LifecycleConfig(predict=lambda cs: in_band))
        cs = AutonomousChangeSet(
            target=SHARD,
            diff={"sink_multiplier": ParamChange(before=before.params.sink_multiplier, after=1.01)},
            rationale="test: the change right before the incident",
        )
        assert lc.run(cs).state == PromotionState.CANARY
        _inject(world, FaultKind.LATENCY_SPIKE, magnitude=30)
        store = IncidentStore()
        inc = store.save(Incident(target=SHARD, kind="latency", alerts=["TickLatencyHigh"], alert_count=1))
        with RemediationBackend(world.url) as backend:
            done = Healer(backend, store=store, changes_store=lc.store, lifecycle_factory=lambda: lc).heal(
                inc.id
            )
        assert done.diagnosis is not None and done.diagnosis.suspect_changeset == cs.id
        assert done.diagnosis.probable_cause == "changeset"
        applied = [a.name for a in done.actions if a.outcome == ActionOutcome.APPLIED]
        assert applied[0] == "rollback" and applied[-1] == "restart"
        assert done.status == IncidentStatus.RESOLVED
        assert lc.get(cs.id).state == PromotionState.ROLLED_BACK
        assert client.get_config(SHARD).params.sink_multiplier == before.params.sink_multiplier
        client.close()
    finally:
        world.stop()


def test_an_unreachable_backend_escalates_instead_of_crashing(aegis_home: AegisPaths, pager: _Pager) -> None:
    store = IncidentStore()
    inc = store.save(Incident(target=SHARD, kind="shard_down", alerts=["ShardDown"], alert_count=1))
    with RemediationBackend("http://127.0.0.1:9", token="none") as backend:  # nothing listens there
        done = Healer(backend, store=store, escalation_url=pager.url).heal(inc.id)
    assert done.status == IncidentStatus.ESCALATED
    assert [a.outcome for a in done.actions] == [
        ActionOutcome.FAILED,
        ActionOutcome.FAILED,
        ActionOutcome.ESCALATED,
    ]
    assert done.diagnosis is not None and "faults_error" in done.diagnosis.evidence
    assert len(pager.received) == 1
