"""The game backend contract over real HTTP: ``aegis world serve`` as a subprocess."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aegis.config import AegisPaths
from aegis.domain import WorldParams
from aegis.world.client import GameBackendClient, IdempotencyConflict, StaleConfigVersion
from aegis.world.store import WorldStore
from tests.support import WorldServer as Server
from tests.support import free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("world-http"), free_port()).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    """A raw client with the control token (read + control); fault calls pass the faults token."""
    auth = {"Authorization": f"Bearer {server.token('control')}"}
    with httpx.Client(base_url=server.url, timeout=30.0, headers=auth) as c:
        yield c


def _faults(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token('faults')}"}


def _wait_ticks(http: httpx.Client, n: int) -> None:
    start = http.get("/v1/health").json()["tick"]
    deadline = time.monotonic() + 30
    while http.get("/v1/health").json()["tick"] < start + n:
        assert time.monotonic() < deadline, "the world clock does not advance"
        time.sleep(0.1)


def test_health_and_shards(http: httpx.Client) -> None:
    health = http.get("/v1/health").json()
    assert health["status"] == "ok" and health["shards_up"] == 9 and health["shards_down"] == 0
    _wait_ticks(http, 3)
    assert datetime.fromisoformat(http.get("/v1/health").json()["game_time"]) > datetime.fromisoformat(
        health["game_time"]
    )
    shards = http.get("/v1/shards").json()
    assert len({s["region"] for s in shards}) >= 3
    assert {s["role"] for s in shards} == {"control"} or "canary" in {s["role"] for s in shards}
    one = http.get(f"/v1/shards/{shards[0]['id']}").json()
    assert one["id"] == shards[0]["id"] and one["capacity"] >= 1


def test_config_concurrency_and_idempotency(http: httpx.Client) -> None:
    r = http.get("/v1/shards/eu-west-2/config")
    assert r.status_code == 200
    version = r.json()["version"]
    assert r.headers["ETag"] == f'"{version}"'
    body = {"params": WorldParams(drop_rate=1.7).model_dump()}

    missing = http.put("/v1/shards/eu-west-2/config", json=body)
    assert missing.status_code == 428 and "If-Match" in missing.json()["message"]
    stale = http.put("/v1/shards/eu-west-2/config", json=body, headers={"If-Match": str(version - 1 or 99)})
    assert stale.status_code == 412
    assert stale.json()["details"]["current_version"] == version

    headers = {"If-Match": r.headers["ETag"], "Idempotency-Key": "change-42"}
    first = http.put("/v1/shards/eu-west-2/config", json=body, headers=headers)
    assert first.status_code == 200 and first.json()["version"] == version + 1
    retry = http.put("/v1/shards/eu-west-2/config", json=body, headers=headers)
    assert retry.status_code == 200 and retry.json() == first.json()
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert http.get("/v1/shards/eu-west-2/config").json()["version"] == version + 1  # applied once
    other = {"params": WorldParams(drop_rate=1.9).model_dump()}
    conflict = http.put("/v1/shards/eu-west-2/config", json=other, headers=headers)
    assert conflict.status_code == 409 and "change-42" in conflict.json()["message"]


def test_snapshot_change_restore_with_client(server: Server) -> None:
    with GameBackendClient(server.url) as client:
        client.set_role("ap-southeast-3", "canary")  # no exploration under our feet
        snap = client.snapshot("ap-southeast-3")
        assert snap.integrity == client.snapshots("ap-southeast-3")[-1].integrity
        cfg = client.get_config("ap-southeast-3")
        client.put_config("ap-southeast-3", WorldParams(npc_aggression=2.5), if_match=cfg.version)
        with pytest.raises(StaleConfigVersion) as stale:
            client.put_config("ap-southeast-3", WorldParams(), if_match=cfg.version)
        assert stale.value.current_version == cfg.version + 1
        deadline = time.monotonic() + 30
        while client.integrity("ap-southeast-3") == snap.integrity:  # players played on
            assert time.monotonic() < deadline
            time.sleep(0.2)
        restored = client.restore("ap-southeast-3", snap.snapshot_id)
        assert restored.integrity == snap.integrity
        assert restored.config_version == cfg.version + 2
        assert client.get_config("ap-southeast-3").params == cfg.params
        with pytest.raises(IdempotencyConflict):
            client.put_config(
                "ap-southeast-3", WorldParams(drop_rate=2.0), if_match=cfg.version + 2, idempotency_key="k"
            )
            client.put_config(
                "ap-southeast-3", WorldParams(drop_rate=3.0), if_match=cfg.version + 3, idempotency_key="k"
            )


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "needles"),
    [
        ("put", "/v1/shards/eu-west-1/config", {"json": {"params": {"npc_aggression": 9.0}}, "headers": {"If-Match": "1"}},
         422, ["npc_aggression", "outside [0.1, 3.0]"]),
        ("put", "/v1/shards/eu-west-1/config", {"json": {"params": {"drop_rate": "lots"}}, "headers": {"If-Match": "1"}},
         422, ["params.drop_rate", "valid number"]),
        ("put", "/v1/shards/eu-west-1/config", {"json": {"params": {"dorp_rate": 1.0}}, "headers": {"If-Match": "1"}},
         422, ["params.dorp_rate", "unknown field"]),
        ("get", "/v1/shards/mars-1/config", {}, 404, ["mars-1", "eu-west-1", "known shards"]),
        ("put", "/v1/shards/eu-west-1/config",
         {"content": b'{"params": {', "headers": {"If-Match": "1", "Content-Type": "application/json"}},
         400, ["not valid JSON"]),
        ("post", "/v1/faults", {"json": {"kind": "meteor", "shard_id": "eu-west-1"}}, 422,
         ["kind", "latency_spike", "shard_crash", "duplication_exploit", "corrupt_telemetry"]),
        ("post", "/v1/faults", {"json": {"kind": "shard_crash", "shard_id": "nowhere"}}, 404, ["nowhere"]),
        ("put", "/v1/shards/eu-west-1/role", {"json": {"role": "boss"}}, 422, ["role", "canary"]),
        ("post", "/v1/shards/eu-west-1/restore", {"json": {"snapshot_id": "snap-none"}}, 404, ["snap-none"]),
        ("get", "/v1/nothing-here", {}, 404, ["no such endpoint"]),
    ],
)  # fmt: skip
def test_bad_input_is_a_helpful_4xx(
    http: httpx.Client, server: Server, method: str, path: str, kwargs: dict, status: int, needles: list[str]
) -> None:
    before = http.get("/v1/shards/eu-west-1/config").json()["version"]
    if path == "/v1/faults":
        kwargs = {**kwargs, "headers": _faults(server)}
    r = http.request(method.upper(), path, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message", "details"}
    text = r.text
    for needle in needles:
        assert needle in text, f"{needle!r} missing from {text}"
    assert http.get("/v1/shards/eu-west-1/config").json()["version"] == before  # nothing applied


def test_fault_injection_is_accepted(http: httpx.Client, server: Server) -> None:
    r = http.post(
        "/v1/faults",
        json={"kind": "latency_spike", "shard_id": "us-east-3", "duration_minutes": 5},
        headers=_faults(server),
    )
    assert r.status_code == 202
    assert r.json()["fault"]["kind"] == "latency_spike"


def test_metrics_parse_as_prometheus_text(http: httpx.Client) -> None:
    _wait_ticks(http, 2)
    r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in ("aegis_world_ticks", "aegis_world_shard_tick_ms", "aegis_world_players_online",
                 "aegis_world_events", "aegis_world_config_puts", "aegis_world_idempotent_replays",
                 "aegis_world_faults_active", "aegis_world_snapshots"):  # fmt: skip
        assert name in families, f"{name} missing; have {sorted(families)}"
    ticks = next(
        s.value for s in families["aegis_world_ticks"].samples if s.name == "aegis_world_ticks_total"
    )
    assert ticks >= 2
    online = {s.labels["shard"] for s in families["aegis_world_players_online"].samples}
    assert len(online) == 9


@pytest.mark.slow  # two server starts and a wait for ticks: ~10-15 s on the shared machine
def test_kill_9_then_restart_loses_nothing_acknowledged(tmp_path: Path) -> None:
    srv = Server(tmp_path / "home", free_port()).start()
    try:
        with GameBackendClient(srv.url) as client:
            client.set_role("us-east-2", "canary")
            cfg = client.get_config("us-east-2")
            applied = client.put_config("us-east-2", WorldParams(sink_multiplier=1.3), if_match=cfg.version)
            snap = client.snapshot("us-east-2")
            _wait_ticks(client._http, 5)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(timeout=10)
        srv.proc = None

        store = WorldStore(AegisPaths(srv.home).world_db)
        assert store.integrity_check() == "ok"
        persisted = store.load_world()  # raises on a torn world
        assert persisted is not None and persisted.tick >= 5
        store.close()
        persisted_time = datetime.fromisoformat(persisted.world_state["game_time"])

        srv.start()
        with GameBackendClient(srv.url) as client:
            health = client.health()
            assert health.game_time >= persisted_time and health.tick >= persisted.tick
            assert client.get_config("us-east-2").version == applied.version
            assert client.shard("us-east-2").role == "canary"
            assert [s.snapshot_id for s in client.snapshots("us-east-2")] == [snap.snapshot_id]
            restored = client.restore("us-east-2", snap.snapshot_id)
            assert restored.integrity == snap.integrity
            _wait_ticks(client._http, 2)
    finally:
        code = srv.stop()
    assert code == 0  # SIGTERM: clean shutdown
    assert not list((srv.home / "lake").rglob("*.tmp"))
