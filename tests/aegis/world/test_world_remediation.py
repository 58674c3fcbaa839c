"""Remediation endpoints: each fault kind is cleared by its remediation, not by its duration.

In-process service tests (speed 0: the clock is stepped by hand, so a fault of a
game day cannot run out), then the endpoints over real HTTP with scoped tokens.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from aegis.config import AegisPaths
from aegis.domain import Fault, FaultKind
from aegis.security.tokens import TokenStore
from aegis.world.remediation import RemediationAction, RemediationRequest
from aegis.world.service import NotFoundError, ServiceOptions, WorldService
from tests.support import WorldServer

SMALL = {"speed": 0.0, "players_per_shard": 300, "shards_per_region": 1}
LONG = 24 * 60.0  # a game day: never runs out within these tests
SHARD = "eu-west-1"


def _svc(home: Path, **kw: object) -> WorldService:
    return WorldService(AegisPaths(home), ServiceOptions(**{**SMALL, **kw}))  # type: ignore[arg-type]


@pytest.fixture
def svc(tmp_path: Path) -> WorldService:
    s = _svc(tmp_path)
    s.step(30)
    yield s
    s.stop()


def _kinds(svc: WorldService, shard: str = SHARD) -> set[str]:
    return {f["kind"] for f in svc.active_faults() if f["shard_id"] == shard}


def _fix(svc: WorldService, action: RemediationAction, **kw: object) -> object:
    return svc.remediate(SHARD, RemediationRequest(action=action, **kw))  # type: ignore[arg-type]


def test_failover_ends_a_crash_and_players_come_back(svc: WorldService) -> None:
    svc.inject_fault(Fault(kind=FaultKind.SHARD_CRASH, shard_id=SHARD, duration_minutes=LONG))
    svc.step(3)
    assert svc.signals(SHARD)["status"] == "down"
    assert "shard_crash" in _kinds(svc)
    result = _fix(svc, RemediationAction.FAILOVER, reason="test")
    assert result.cleared_faults == [FaultKind.SHARD_CRASH]
    assert result.status == "up"
    assert "shard_crash" not in _kinds(svc)
    svc.step(10)
    sig = svc.signals(SHARD)
    assert sig["status"] == "up" and sig["players_online"] > 0  # reconnected from the queue


def test_restart_ends_a_latency_spike_shed_load_alone_does_not(svc: WorldService) -> None:
    svc.inject_fault(Fault(kind=FaultKind.LATENCY_SPIKE, shard_id=SHARD, duration_minutes=LONG, magnitude=30))
    svc.step(2)
    slow = svc.signals(SHARD)["tick_ms_last"]
    assert slow > 500
    shed = _fix(svc, RemediationAction.SHED_LOAD, share=0.5)
    assert shed.sessions_moved > 0 and shed.cleared_faults == []
    svc.step(2)
    assert svc.signals(SHARD)["tick_ms_last"] > 500  # 30x of even an idle tick is above the objective
    assert "latency_spike" in _kinds(svc)
    restart = _fix(svc, RemediationAction.RESTART)
    assert FaultKind.LATENCY_SPIKE in restart.cleared_faults
    svc.step(2)
    sig = svc.signals(SHARD)
    assert sig["tick_ms_last"] < 500 and "latency_spike" not in sig["active_faults"]


def test_freeze_trading_stops_the_duplication_exploit(svc: WorldService) -> None:
    svc.inject_fault(
        Fault(kind=FaultKind.DUPLICATION_EXPLOIT, shard_id=SHARD, duration_minutes=LONG, magnitude=20)
    )
    svc.step(20)
    g0 = svc.signals(SHARD)["gold_per_player"]
    svc.step(20)
    exploiting = svc.signals(SHARD)["gold_per_player"] - g0
    result = _fix(svc, RemediationAction.FREEZE_TRADING)
    assert result.cleared_faults == [FaultKind.DUPLICATION_EXPLOIT]
    g1 = svc.signals(SHARD)["gold_per_player"]
    svc.step(20)
    frozen = svc.signals(SHARD)["gold_per_player"] - g1
    assert frozen < exploiting  # the dupes stopped: gold grows at the normal pace again
    assert "duplication_exploit" not in _kinds(svc)


def test_isolate_telemetry_stops_corrupt_batches(svc: WorldService) -> None:
    svc.inject_fault(
        Fault(kind=FaultKind.CORRUPT_TELEMETRY, shard_id=SHARD, duration_minutes=LONG, magnitude=2)
    )
    sig = svc.signals(SHARD)
    assert sig["telemetry_corrupt_pending"] == 1 and "corrupt_telemetry" in sig["active_faults"]
    result = _fix(svc, RemediationAction.ISOLATE_TELEMETRY)
    assert result.cleared_faults == [FaultKind.CORRUPT_TELEMETRY]
    assert result.detail["corrupt_batches_dropped"] == 1
    before = svc.landing.stats.corrupt_batches if svc.landing else 0
    svc.step(40)
    assert svc.landing is None or svc.landing.stats.corrupt_batches == before
    assert "corrupt_telemetry" not in _kinds(svc)


def test_remediation_survives_a_restart_of_the_server(tmp_path: Path) -> None:
    svc = _svc(tmp_path)
    svc.step(5)
    svc.inject_fault(Fault(kind=FaultKind.SHARD_CRASH, shard_id=SHARD, duration_minutes=LONG))
    svc.remediate(SHARD, RemediationRequest(action=RemediationAction.FAILOVER))
    svc.stop()
    again = _svc(tmp_path)
    try:
        assert again.signals(SHARD)["status"] == "up"
        assert "shard_crash" not in {f["kind"] for f in again.active_faults()}
    finally:
        again.stop()


def test_unknown_shard_is_a_404(svc: WorldService) -> None:
    with pytest.raises(NotFoundError):
        svc.remediate("nowhere", RemediationRequest(action=RemediationAction.RESTART))
    with pytest.raises(NotFoundError):
        svc.signals("nowhere")


def test_endpoints_over_http_with_scopes(tmp_path: Path) -> None:
    srv = WorldServer(tmp_path / "home", speed="600", export_tokens=False).start()
    try:
        store = TokenStore(aegis_paths=AegisPaths(srv.home.resolve()))
        read = store.issue(["read"], label="test:read").token
        control, faults = srv.token("control"), srv.token("faults")

        def call(method: str, path: str, token: str | None, **kw: object) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return httpx.request(method, srv.url + path, headers=headers, timeout=30.0, **kw)  # type: ignore[arg-type]

        fault = {"kind": "shard_crash", "shard_id": SHARD, "duration_minutes": LONG}
        assert call("POST", "/v1/faults", faults, json=fault).status_code == 202
        listed = call("GET", "/v1/faults", read)
        assert listed.status_code == 200
        assert {"shard_id": SHARD, "kind": "shard_crash"}.items() <= listed.json()[0].items()
        assert call("GET", f"/v1/shards/{SHARD}/signals", read).json()["status"] == "down"
        body = {"action": "failover", "reason": "test"}
        assert call("POST", f"/v1/shards/{SHARD}/remediations", None, json=body).status_code == 401
        assert call("POST", f"/v1/shards/{SHARD}/remediations", read, json=body).status_code == 403
        bad = call("POST", f"/v1/shards/{SHARD}/remediations", control, json={"action": "reboot"})
        assert bad.status_code == 422 and set(bad.json()) == {"error", "message", "details"}
        assert call("POST", "/v1/shards/nowhere/remediations", control, json=body).status_code == 404
        ok = call("POST", f"/v1/shards/{SHARD}/remediations", control, json=body)
        assert ok.status_code == 200, ok.text
        assert ok.json()["cleared_faults"] == ["shard_crash"] and ok.json()["status"] == "up"
        assert call("GET", "/v1/faults", read).json() == []
        store.close()
    finally:
        srv.stop()
