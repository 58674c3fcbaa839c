"""Every route of the world server and the scope it needs, checked over real HTTP.

The routes come from the app itself (its OpenAPI document), so a route added to a
router without an entry here fails :func:`test_every_route_is_in_the_table`. Each
route is then called on one ``aegis world serve`` subprocess without a token
(401), with each token whose scopes miss the route's (403) and with each one that
holds it: the handler answers (the status a harmless request gets, never 401/403).
Tokens are minted into the server's real ``security.db``, as in
``test_world_server_auth.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aegis.config import AegisPaths
from aegis.domain import WorldParams
from aegis.security.tokens import SCOPES, TokenStore, expand_scopes
from aegis.world.server import openapi_document
from tests.support import WorldServer

SHARD = "eu-west-1"
PARAMS = WorldParams().model_dump(mode="json")


class Route:
    """One operation: the scope it needs (None: open) and a harmless request with the status it gets."""

    def __init__(
        self, method: str, template: str, scope: str | None, status: int, path: str = "", **request: Any
    ) -> None:
        self.method = method
        self.template = template
        self.scope = scope
        self.status = status
        self.path = path or template.replace("{shard_id}", SHARD)
        self.request = request

    def __repr__(self) -> str:
        return f"{self.method} {self.template}"


# 'mars-1' is no shard: a write on it reaches the handler and changes nothing (404 from the service).
ROUTES = [
    Route("GET", "/v1/health", None, 200),
    Route("GET", "/metrics", "read", 200),
    Route("GET", "/v1/shards", "read", 200),
    Route("GET", "/v1/shards/{shard_id}", "read", 200),
    Route("PUT", "/v1/shards/{shard_id}/role", "control", 200, json={"role": "control"}),
    Route("GET", "/v1/shards/{shard_id}/config", "read", 200),
    Route("PUT", "/v1/shards/{shard_id}/config", "control", 412,
          json={"params": PARAMS}, headers={"If-Match": "999999"}),
    Route("GET", "/v1/shards/{shard_id}/snapshots", "read", 200),
    Route("POST", "/v1/shards/{shard_id}/snapshots", "control", 404, path="/v1/shards/mars-1/snapshots"),
    Route("POST", "/v1/shards/{shard_id}/restore", "control", 404, json={"snapshot_id": "snap-none"}),
    Route("GET", "/v1/shards/{shard_id}/integrity", "read", 200),
    Route("POST", "/v1/shards/{shard_id}/simulations", "control", 404,
          json={"snapshot_id": "snap-none", "params": PARAMS}),
    Route("GET", "/v1/faults", "read", 200),
    Route("POST", "/v1/faults", "faults", 404, json={"kind": "latency_spike", "shard_id": "mars-1"}),
    Route("GET", "/v1/shards/{shard_id}/signals", "read", 200),
    Route("POST", "/v1/shards/{shard_id}/remediations", "control", 404,
          path="/v1/shards/mars-1/remediations", json={"action": "restart"}),
]  # fmt: skip
SCOPED = [r for r in ROUTES if r.scope is not None]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorldServer]:
    srv = WorldServer(tmp_path_factory.mktemp("world-routes") / "home", export_tokens=False).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def tokens(server: WorldServer) -> Iterator[dict[str, str]]:
    """One token per scope, each carrying that scope alone ('control' implies 'read')."""
    store = TokenStore(aegis_paths=AegisPaths(server.home.resolve()))
    try:
        yield {scope: store.issue([scope], label=f"routes:{scope}").token for scope in SCOPES}
    finally:
        store.close()


def _call(server: WorldServer, route: Route, token: str | None) -> httpx.Response:
    headers = dict(route.request.get("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    rest = {k: v for k, v in route.request.items() if k != "headers"}
    return httpx.request(route.method, server.url + route.path, headers=headers, timeout=60.0, **rest)


def test_every_route_is_in_the_table() -> None:
    """The table is the app's route list, and each route declares (in OpenAPI) the scope tested here."""
    doc = openapi_document()
    declared = {
        (method.upper(), path): op.get("security")
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
    }
    assert sorted(declared) == sorted((r.method, r.template) for r in ROUTES)
    for r in ROUTES:
        assert declared[(r.method, r.template)] == ([{r.scope: []}] if r.scope else None), r


@pytest.mark.parametrize("route", SCOPED, ids=repr)
def test_route_without_a_token_is_401(server: WorldServer, route: Route) -> None:
    r = _call(server, route, None)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized" and r.json()["details"]["reason"] == "missing"
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("route", SCOPED, ids=repr)
def test_route_with_a_token_of_another_scope_is_403(
    server: WorldServer, tokens: dict[str, str], route: Route
) -> None:
    wrong = [s for s in SCOPES if route.scope not in expand_scopes([s])]
    assert wrong, route
    for scope in wrong:
        r = _call(server, route, tokens[scope])
        assert r.status_code == 403, (scope, r.text)
        body = r.json()
        assert body["error"] == "forbidden" and body["details"]["reason"] == "scope", (scope, body)
        assert route.scope in body["message"], (scope, body)
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]


@pytest.mark.parametrize("route", ROUTES, ids=repr)
def test_route_with_its_scope_reaches_the_handler(
    server: WorldServer, tokens: dict[str, str], route: Route
) -> None:
    holders = [s for s in SCOPES if route.scope is None or route.scope in expand_scopes([s])]
    for scope in holders:
        r = _call(server, route, tokens[scope])
        assert r.status_code not in (401, 403), (scope, r.text)
        assert r.status_code == route.status, (scope, r.status_code, r.text)
        if r.status_code == 404:  # the service's answer about the shard or snapshot, not the router's
            assert r.json()["error"] == "not_found" and "no such endpoint" not in r.text, r.text
    if route.scope is None:
        assert _call(server, route, None).status_code == route.status
