"""A fuzz pass over every endpoint of the world server: odd headers and bodies never get a 5xx.

Real HTTP against ``aegis world serve``; Hypothesis draws the method and path,
the credential (valid tokens of each scope, garbage, none), ``If-Match``,
``Idempotency-Key``, ``Content-Type``, ``Host`` and the body (random bytes,
random JSON, or a well-formed request with one field replaced).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aegis.domain import WorldParams
from tests.support import WorldServer

SHARD = "eu-west-1"
ROUTES = [
    ("GET", "/v1/health"),
    ("GET", "/v1/shards"),
    ("GET", "/v1/shards/{shard}"),
    ("GET", "/v1/shards/{shard}/config"),
    ("PUT", "/v1/shards/{shard}/config"),
    ("PUT", "/v1/shards/{shard}/role"),
    ("GET", "/v1/shards/{shard}/snapshots"),
    ("POST", "/v1/shards/{shard}/snapshots"),
    ("POST", "/v1/shards/{shard}/restore"),
    ("GET", "/v1/shards/{shard}/integrity"),
    ("POST", "/v1/shards/{shard}/simulations"),
    ("POST", "/v1/faults"),
    ("GET", "/metrics"),
]
PARAMS = WorldParams().model_dump(mode="json")
TEMPLATES = [
    {"params": PARAMS},
    {"role": "canary"},
    {"snapshot_id": "snap-x"},
    {"snapshot_id": "snap-x", "params": PARAMS, "hours": 0.1},
    {"kind": "latency_spike", "shard_id": SHARD, "duration_minutes": 1},
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)


def _header_value(raw: bytes) -> bytes:
    """What HTTP/1.1 lets a header value carry (no CR/LF/NUL, no edge whitespace): the rest is fuzz."""
    return bytes(b for b in raw if b >= 0x21 and b != 0x7F) or b"x"


header_values = st.binary(min_size=1, max_size=200).map(_header_value) | st.sampled_from(
    [b"1", b'"1"', b'W/"1"', b"9" * 400, "５".encode(), b"-1", b"*", b"1.0"]
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["none", "bytes", "json", "mutated"]))
    if kind == "none":
        return None
    if kind == "bytes":
        return draw(st.binary(max_size=2000))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    doc = dict(draw(st.sampled_from(TEMPLATES)))
    key = draw(st.sampled_from([*sorted(doc), "extra"]))
    doc[key] = draw(json_values)
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorldServer]:
    srv = WorldServer(tmp_path_factory.mktemp("world-fuzz") / "home", export_tokens=False).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def http(server: WorldServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        yield c


@settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_endpoint_answers_5xx_to_odd_headers_or_bodies(
    server: WorldServer, http: httpx.Client, data: st.DataObject
) -> None:
    method, template = data.draw(st.sampled_from(ROUTES), label="route")
    shard = data.draw(st.sampled_from([SHARD, "us-east-1"]) | st.text(min_size=1, max_size=30), label="shard")
    path = template.format(shard=quote(shard, safe=""))
    auth = data.draw(
        st.sampled_from(["control", "faults", "read", "alerts", "none"]) | header_values, label="auth"
    )
    headers: dict[str, bytes | str] = {}
    if isinstance(auth, bytes):
        headers["Authorization"] = b"Bearer " + auth
    elif auth != "none":
        headers["Authorization"] = f"Bearer {server.token(auth)}"
    for name in ("If-Match", "Idempotency-Key", "Content-Type", "Accept", "X-Fuzz"):
        if data.draw(st.booleans(), label=f"has {name}"):
            headers[name] = data.draw(header_values, label=name)
    if data.draw(st.integers(0, 9), label="odd host") == 0:
        headers["Host"] = data.draw(header_values, label="host")
    body = data.draw(bodies(), label="body")
    if body is not None and "Content-Type" not in headers:
        headers["Content-Type"] = "application/json"
    r = http.request(method, path, headers=headers, content=body)
    assert r.status_code < 500, f"{method} {path} -> {r.status_code}: {r.text[:500]}"
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
        assert {"error", "message"} <= set(r.json())
