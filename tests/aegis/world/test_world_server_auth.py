"""Axiom 2 on the world server over real HTTP: scoped tokens, refusals, the Host check, bounded input.

One ``aegis world serve`` subprocess on loopback; tokens are minted into its real
``security.db`` by the test (the same file the server verifies against).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aegis.config import AegisPaths
from aegis.domain import WorldParams
from aegis.security.auth import REFUSAL_METRIC
from aegis.security.tokens import SCOPES, TokenStore, expand_scopes
from aegis.world.client import Forbidden, GameBackendClient, Unauthorized
from aegis.world.server import MAX_BODY_BYTES, openapi_document
from aegis.world.simulations_api import MAX_SIMULATION_HOURS
from tests.support import WorldServer

SHARD = "eu-west-1"
OTHER = "us-east-1"
PARAMS = WorldParams().model_dump(mode="json")
# Every endpoint of the contract, the scope it needs, and a request that is harmless to repeat.
ENDPOINTS: list[tuple[str, str, dict, str]] = [
    ("GET", "/v1/shards", {}, "read"),
    ("GET", f"/v1/shards/{SHARD}", {}, "read"),
    ("GET", f"/v1/shards/{SHARD}/config", {}, "read"),
    ("GET", f"/v1/shards/{SHARD}/snapshots", {}, "read"),
    ("GET", f"/v1/shards/{SHARD}/integrity", {}, "read"),
    ("GET", "/metrics", {}, "read"),
    ("PUT", f"/v1/shards/{SHARD}/role", {"json": {"role": "control"}}, "control"),
    ("PUT", f"/v1/shards/{SHARD}/config", {"json": {"params": PARAMS}, "headers": {"If-Match": "999999"}}, "control"),
    ("POST", f"/v1/shards/{SHARD}/snapshots", {}, "control"),
    ("POST", f"/v1/shards/{SHARD}/restore", {"json": {"snapshot_id": "snap-none"}}, "control"),
    ("POST", f"/v1/shards/{SHARD}/simulations", {"json": {"snapshot_id": "snap-none", "params": PARAMS}}, "control"),
    ("POST", "/v1/faults", {"json": {"kind": "latency_spike", "shard_id": "nowhere"}}, "faults"),
]  # fmt: skip
TOKEN_KINDS = ("none", "read", "control", "faults", "alerts")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorldServer]:
    srv = WorldServer(tmp_path_factory.mktemp("world-auth") / "home", export_tokens=False).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def store(server: WorldServer) -> Iterator[TokenStore]:
    s = TokenStore(aegis_paths=AegisPaths(server.home.resolve()))
    yield s
    s.close()


@pytest.fixture(scope="module")
def tokens(store: TokenStore) -> dict[str, str]:
    """One operator token per scope ('control' carries only control: read comes with it)."""
    return {scope: store.issue([scope], label=f"test:{scope}").token for scope in TOKEN_KINDS[1:]}


def _call(server: WorldServer, method: str, path: str, kwargs: dict, token: str | None) -> httpx.Response:
    headers = dict(kwargs.get("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    rest = {k: v for k, v in kwargs.items() if k != "headers"}
    return httpx.request(method, server.url + path, headers=headers, timeout=30.0, **rest)


def _assert_refusal(r: httpx.Response, status: int, reason: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message", "details"}
    assert body["details"]["reason"] == reason, body
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_every_operation_but_health_declares_its_scope() -> None:
    """Auth is declared per router and shows in the contract: a route without a scope fails here."""
    doc = openapi_document()
    declared = {
        (method.upper(), path): op.get("security")
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
    }
    assert declared.pop(("GET", "/v1/health")) is None
    for op, security in declared.items():
        assert security and len(security) == 1 and set(security[0]) <= set(SCOPES), (op, security)
    for method, path, _kwargs, scope in ENDPOINTS:
        template = path.replace(SHARD, "{shard_id}")
        assert declared[(method, template)] == [{scope: []}], (method, path)


@pytest.mark.parametrize(("method", "path", "kwargs", "scope"), ENDPOINTS)
def test_scope_matrix(
    server: WorldServer, tokens: dict[str, str], method: str, path: str, kwargs: dict, scope: str
) -> None:
    for kind in TOKEN_KINDS:
        r = _call(server, method, path, kwargs, tokens.get(kind))
        if kind == "none":
            _assert_refusal(r, 401, "missing")
        elif scope in expand_scopes([kind]):
            assert r.status_code not in (401, 403) and r.status_code < 500, (kind, r.status_code, r.text)
        else:
            _assert_refusal(r, 403, "scope")
            assert scope in r.json()["message"]


def test_health_stays_open_for_liveness_probes(server: WorldServer) -> None:
    assert httpx.get(f"{server.url}/v1/health").status_code == 200


def test_bad_credentials_are_refused(server: WorldServer, store: TokenStore, tokens: dict[str, str]) -> None:
    path = "/v1/shards"
    good = tokens["read"]
    token_id = good.split(".")[1]
    forged = f"aegis.{token_id}.{'A' * 43}"  # right id, wrong secret
    _assert_refusal(_call(server, "GET", path, {}, forged), 401, "forged")
    _assert_refusal(_call(server, "GET", path, {}, "aegis.tk-000000000000." + "B" * 43), 401, "unknown")
    _assert_refusal(_call(server, "GET", path, {}, "not-a-token"), 401, "malformed")
    basic = httpx.get(server.url + path, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    _assert_refusal(basic, 401, "malformed")
    assert _call(server, "GET", path, {}, good).status_code == 200


def test_revoked_and_expired_tokens_are_refused(server: WorldServer, store: TokenStore) -> None:
    revoked = store.issue(["read"], label="to-revoke")
    assert _call(server, "GET", "/v1/shards", {}, revoked.token).status_code == 200
    store.revoke(revoked.id, reason="test")
    _assert_refusal(_call(server, "GET", "/v1/shards", {}, revoked.token), 403, "revoked")
    short = store.issue(["read"], ttl=timedelta(seconds=1), label="short")
    assert _call(server, "GET", "/v1/shards", {}, short.token).status_code == 200
    time.sleep(1.3)
    _assert_refusal(_call(server, "GET", "/v1/shards", {}, short.token), 403, "expired")
    revoked_uses = [r for r in store.refusals() if r.token_id == revoked.id]
    assert revoked_uses and all(r.revoked and r.path == "/v1/shards" for r in revoked_uses)


def test_rotation_keeps_the_old_token_through_the_grace_then_refuses_it(
    server: WorldServer, store: TokenStore
) -> None:
    old = store.issue(["read", "control"], label="rotating")
    new = store.rotate(old.id, grace=timedelta(seconds=2))
    assert new.scopes == old.scopes and new.id != old.id
    for token in (old.token, new.token):  # no downtime: both work during the grace
        assert _call(server, "GET", "/v1/shards", {}, token).status_code == 200
    time.sleep(2.3)
    _assert_refusal(_call(server, "GET", "/v1/shards", {}, old.token), 403, "rotated")
    assert (
        _call(server, "PUT", f"/v1/shards/{SHARD}/role", {"json": {"role": "control"}}, new.token).status_code
        == 200
    )


def test_isolated_token_is_refused_before_its_scope_is_checked(
    server: WorldServer, store: TokenStore
) -> None:
    t = store.issue(["read"], label="to-isolate")
    store.isolate(t.id, reason="test incident", actor="test")
    _assert_refusal(_call(server, "GET", "/v1/shards", {}, t.token), 403, "isolated")
    store.release(t.id)
    assert _call(server, "GET", "/v1/shards", {}, t.token).status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:80", "127.0.0.1.nip.io", "attacker.localhost.evil"]
)
def test_dns_rebinding_host_is_refused(server: WorldServer, tokens: dict[str, str], host: str) -> None:
    for path in ("/v1/health", "/v1/shards"):
        r = httpx.get(server.url + path, headers={"Host": host, "Authorization": f"Bearer {tokens['read']}"})
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "invalid_host" and "not a name of this server" in r.json()["message"]


def test_own_host_names_are_accepted(server: WorldServer) -> None:
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "LOCALHOST"):
        assert httpx.get(server.url + "/v1/health", headers={"Host": host}).status_code == 200


def test_no_permissive_cors(server: WorldServer, tokens: dict[str, str]) -> None:
    origin = {"Origin": "http://evil.example"}
    r = httpx.get(server.url + "/v1/shards", headers={**origin, "Authorization": f"Bearer {tokens['read']}"})
    assert "access-control-allow-origin" not in r.headers
    pre = httpx.options(
        server.url + f"/v1/shards/{SHARD}/config",
        headers={
            **origin,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert pre.status_code >= 400 and "access-control-allow-origin" not in pre.headers


def test_refusals_are_counted_on_metrics_and_recorded(
    server: WorldServer, store: TokenStore, tokens: dict[str, str]
) -> None:
    def counts() -> dict[str, float]:
        r = _call(server, "GET", "/metrics", {}, tokens["read"])
        assert r.status_code == 200
        fam = {f.name: f for f in text_string_to_metric_families(r.text)}[
            REFUSAL_METRIC.removesuffix("_total")
        ]
        return {s.labels["reason"]: s.value for s in fam.samples if s.name == REFUSAL_METRIC}

    before = counts()
    seq = max((r.seq for r in store.refusals()), default=0)
    _call(server, "GET", "/v1/shards", {}, None)
    _call(server, "POST", "/v1/faults", {"json": {}}, tokens["read"])
    httpx.get(server.url + "/v1/shards", headers={"Host": "evil.example"})
    after = counts()
    assert after["missing"] == before["missing"] + 1
    assert after["scope"] == before["scope"] + 1
    assert after["host"] == before["host"] + 1
    new = [r for r in store.refusals() if r.seq > seq]
    assert [(r.reason, r.status, r.path) for r in new] == [
        ("missing", 401, "/v1/shards"),
        ("scope", 403, "/v1/faults"),
        ("host", 400, "/v1/shards"),
    ]
    assert new[1].token_id == tokens["read"].split(".")[1]


def test_client_raises_clear_auth_errors(server: WorldServer, tokens: dict[str, str]) -> None:
    forged = "aegis.tk-000000000000." + "C" * 43
    with (
        GameBackendClient(server.url, token=forged, retries=0) as c,
        pytest.raises(Unauthorized, match="bearer token"),
    ):
        c.shards()
    with GameBackendClient(server.url, token=tokens["read"], retries=0) as c:
        assert c.shards()
        with pytest.raises(Forbidden, match="control"):
            c.set_role(SHARD, "control")
    with GameBackendClient(
        server.url, token=server.token("control"), faults_token=server.token("faults")
    ) as c:
        receipt = c.inject_fault({"kind": "latency_spike", "shard_id": OTHER, "duration_minutes": 1})
        assert receipt.fault.shard_id == OTHER


# ------------------------------------------------------------------ bounded input, no 500s


def test_body_over_the_limit_is_413(server: WorldServer, tokens: dict[str, str]) -> None:
    auth = {
        "Authorization": f"Bearer {tokens['control']}",
        "If-Match": "1",
        "Content-Type": "application/json",
    }
    big = b'{"params": {"x": "' + b"a" * (MAX_BODY_BYTES + 10) + b'"}}'
    r = httpx.put(f"{server.url}/v1/shards/{SHARD}/config", content=big, headers=auth)
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large", r.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off while streaming
        yield b'{"params": {"x": "'
        for _ in range(MAX_BODY_BYTES // 4096 + 2):
            yield b"a" * 4096
        yield b'"}}'

    r = httpx.put(f"{server.url}/v1/shards/{SHARD}/config", content=chunks(), headers=auth)
    assert r.status_code == 413, r.text


@pytest.mark.parametrize(
    "if_match",
    [
        "abc",
        "9" * 5000,
        "1.5",
        "-1",
        '"5',
        "*",
        "W/abc",
        "５".encode(),
        "\u00b2".encode("latin-1"),
        b"\xff\xfe",
    ],
)
def test_odd_if_match_is_4xx_never_500(
    server: WorldServer, tokens: dict[str, str], if_match: str | bytes
) -> None:
    r = httpx.put(
        f"{server.url}/v1/shards/{SHARD}/config",
        json={"params": PARAMS},
        headers={"Authorization": f"Bearer {tokens['control']}", "If-Match": if_match},
    )
    assert 400 <= r.status_code < 500, r.text
    assert set(r.json()) == {"error", "message", "details"}


def test_quoted_and_bare_if_match_are_the_same_idempotent_request(
    server: WorldServer, tokens: dict[str, str]
) -> None:
    auth = {"Authorization": f"Bearer {tokens['control']}"}
    shard = "ap-southeast-1"
    version = httpx.get(f"{server.url}/v1/shards/{shard}/config", headers=auth).json()["version"]
    body = {"params": {**PARAMS, "drop_rate": 1.1}}
    first = httpx.put(
        f"{server.url}/v1/shards/{shard}/config",
        json=body,
        headers={**auth, "If-Match": str(version), "Idempotency-Key": "retry-quoted"},
    )
    assert first.status_code == 200, first.text
    retry = httpx.put(
        f"{server.url}/v1/shards/{shard}/config",
        json=body,
        headers={**auth, "If-Match": f'"{version}"', "Idempotency-Key": "retry-quoted"},
    )
    assert retry.status_code == 200, retry.text
    assert retry.headers.get("idempotent-replayed") == "true" and retry.json() == first.json()


def test_simulation_answers_404_and_409_in_the_error_shape(
    server: WorldServer, tokens: dict[str, str]
) -> None:
    auth = {"Authorization": f"Bearer {tokens['control']}"}
    snap = httpx.post(f"{server.url}/v1/shards/{SHARD}/snapshots", headers=auth).json()["snapshot_id"]
    missing = httpx.post(
        f"{server.url}/v1/shards/{SHARD}/simulations",
        json={"snapshot_id": "snap-nope", "params": PARAMS},
        headers=auth,
    )
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert "snap-nope" in missing.text and "no such endpoint" not in missing.text
    other = httpx.post(
        f"{server.url}/v1/shards/{OTHER}/simulations",
        json={"snapshot_id": snap, "params": PARAMS},
        headers=auth,
    )
    assert other.status_code == 409 and other.json()["error"] == "conflict", other.text
    assert other.json()["details"]["snapshot_shard"] == SHARD
    unknown_shard = httpx.post(
        f"{server.url}/v1/shards/mars-1/simulations",
        json={"snapshot_id": snap, "params": PARAMS},
        headers=auth,
    )
    assert unknown_shard.status_code == 404 and "mars-1" in unknown_shard.text
    too_long = httpx.post(
        f"{server.url}/v1/shards/{SHARD}/simulations",
        json={"snapshot_id": snap, "params": PARAMS, "hours": MAX_SIMULATION_HOURS + 1},
        headers=auth,
    )
    assert too_long.status_code == 422 and "hours" in too_long.text
