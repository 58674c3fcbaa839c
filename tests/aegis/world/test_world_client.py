"""GameBackendClient: typed answers, exceptions with the server's message, safe retries."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from aegis.domain import ShardRole, WorldParams
from aegis.world.client import (
    BackendUnavailable,
    BadRequest,
    GameBackendClient,
    GameBackendError,
    IdempotencyConflict,
    IntegrityMismatch,
    NotFound,
    StaleConfigVersion,
)

SHARD = {
    "id": "eu-west-1",
    "region": "eu-west",
    "role": "control",
    "status": "up",
    "players_online": 10,
    "players_total": 100,
    "capacity": 40,
    "config_version": 3,
}
CONFIG = {
    "shard_id": "eu-west-1",
    "version": 4,
    "params": WorldParams().model_dump(),
    "updated_at": "2026-01-02T00:00:00Z",
}

Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler, retries: int = 2) -> GameBackendClient:
    return GameBackendClient("http://game.test", transport=httpx.MockTransport(handler), retries=retries)


def _err(status: int, code: str, message: str, **details: object) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "message": message, "details": details})


def test_typed_answers_and_request_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/shards":
            return httpx.Response(200, json=[SHARD])
        if request.method == "PUT" and request.url.path.endswith("/config"):
            return httpx.Response(200, json=CONFIG)
        if request.method == "PUT" and request.url.path.endswith("/role"):
            return httpx.Response(200, json={**SHARD, "role": "canary"})
        return httpx.Response(500)

    with _client(handler) as client:
        shards = client.shards()
        assert shards[0].id == "eu-west-1" and shards[0].config_version == 3
        cfg = client.put_config("eu-west-1", WorldParams(drop_rate=1.2), if_match=3)
        assert cfg.version == 4
        assert client.set_role("eu-west-1", "canary").role == ShardRole.CANARY
    put = seen[1]
    assert put.headers["If-Match"] == "3"
    assert put.headers["Idempotency-Key"].startswith("aegis-")  # always sent: retries are safe
    assert json.loads(put.content)["params"]["drop_rate"] == 1.2


@pytest.mark.parametrize(
    ("response", "exc", "text"),
    [
        (
            _err(404, "not_found", "unknown shard 'x'; known shards: a, b", known_shards=["a", "b"]),
            NotFound,
            "known",
        ),
        (
            _err(412, "stale_config_version", "at version 9, not 3", current_version=9),
            StaleConfigVersion,
            "version 9",
        ),
        (_err(428, "precondition_required", "PUT /config requires an If-Match"), BadRequest, "If-Match"),
        (_err(422, "invalid_request", "npc_aggression=9 is outside [0.1, 3.0]"), BadRequest, "outside"),
        (_err(409, "idempotency_conflict", "key reused"), IdempotencyConflict, "key reused"),
        (_err(409, "integrity_mismatch", "would not reproduce"), IntegrityMismatch, "reproduce"),
        (_err(500, "internal_error", "boom"), BackendUnavailable, "boom"),
    ],
)
def test_errors_map_to_exceptions_with_the_server_message(
    response: httpx.Response, exc: type[GameBackendError], text: str
) -> None:
    with _client(lambda r: response, retries=0) as client, pytest.raises(exc) as err:
        client.put_config("eu-west-1", WorldParams(), if_match=3)
    assert text in err.value.message
    assert err.value.status_code == response.status_code
    if isinstance(err.value, StaleConfigVersion):
        assert err.value.current_version == 9


def test_retries_reads_and_keyed_puts_but_not_snapshots() -> None:
    calls: dict[str, int] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        key = f"{request.method} {request.url.path}"
        calls[key] = calls.get(key, 0) + 1
        if calls[key] < 3:
            return _err(503, "unavailable", "warming up")
        if request.method == "PUT":
            return httpx.Response(200, json=CONFIG)
        return httpx.Response(200, json=SHARD)

    with _client(handler, retries=2) as client:
        assert client.shard("eu-west-1").id == "eu-west-1"
        client.put_config("eu-west-1", WorldParams(), if_match=3, idempotency_key="cs-1:apply")
        with pytest.raises(BackendUnavailable, match="warming up"):
            client.snapshot("eu-west-1")
    assert calls == {"GET /v1/shards/eu-west-1": 3, "PUT /v1/shards/eu-west-1/config": 3,
                     "POST /v1/shards/eu-west-1/snapshots": 1}  # fmt: skip


def test_same_idempotency_key_on_every_retry() -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        if len(keys) == 1:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(200, json=CONFIG)

    with _client(handler) as client:
        client.put_config("eu-west-1", WorldParams(), if_match=3)
    assert len(keys) == 2 and keys[0] == keys[1]


def test_unreachable_backend_is_backend_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with _client(handler, retries=1) as client, pytest.raises(BackendUnavailable, match="connection refused"):
        client.health()


def test_a_wrong_body_is_an_error_not_a_dict() -> None:
    with (
        _client(lambda r: httpx.Response(200, json={"id": "x"})) as client,
        pytest.raises(GameBackendError, match="not a ShardInfo"),
    ):
        client.shard("x")


def test_invalid_arguments_fail_before_sending() -> None:
    with _client(lambda r: httpx.Response(200, json=SHARD)) as client:
        with pytest.raises(ValueError, match="invalid shard id"):
            client.shard("a/b")
        with pytest.raises(ValueError):
            client.set_role("eu-west-1", "boss")
