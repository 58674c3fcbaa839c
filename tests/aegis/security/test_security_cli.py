"""``aegis token`` as the operator runs it: a subprocess on a real AEGIS_HOME."""

from __future__ import annotations

import json
import os
import subprocess

from aegis.config import AegisPaths
from aegis.security.tokens import TokenStore
from tests.support import AEGIS


def _aegis(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_TOKEN_")}
    return subprocess.run([AEGIS, "token", *args], capture_output=True, text=True, env=env, timeout=120)


def test_issue_list_rotate_revoke_round_trip(aegis_home: AegisPaths) -> None:
    issued = _aegis("issue", "--scope", "read", "--scope", "control", "--ttl", "2h", "--label", "ci")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token.startswith("aegis.tk-") and "\n" not in token  # stdout is exactly the token
    token_id = token.split(".")[1]
    assert token_id in issued.stderr and "shown once" in issued.stderr

    listed = _aegis("list", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["id"] == token_id and row["scopes"] == ["read", "control"] and row["state"] == "active"
    assert token.split(".")[2] not in listed.stdout  # never the secret

    rotated = _aegis("rotate", token_id, "--grace", "5m", "--json")
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)
    assert new["id"] != token_id and new["scopes"] == ["read", "control"]

    store = TokenStore()
    try:
        assert store.verify(token, "control", "cli").id == token_id  # grace
        assert store.verify(new["token"], "control", "cli").id == new["id"]
    finally:
        store.close()

    revoked = _aegis("revoke", new["id"], "--reason", "test over")
    assert revoked.returncode == 0 and f"revoked {new['id']}" in revoked.stdout
    states = {r["id"]: r["state"] for r in json.loads(_aegis("list", "--json").stdout)}
    assert states == {token_id: "grace", new["id"]: "revoked"}
    plain = _aegis("list")
    assert token_id in plain.stdout and "revoked" in plain.stdout


def test_release_lifts_an_isolation(aegis_home: AegisPaths) -> None:
    store = TokenStore()
    try:
        store.isolate("10.9.9.9", reason="probe", actor="healing")
    finally:
        store.close()
    assert _aegis("release", "10.9.9.9").returncode == 0
    again = _aegis("release", "10.9.9.9")
    assert again.returncode == 2 and "not isolated" in again.stderr


def test_bad_input_exits_2_with_a_readable_message(aegis_home: AegisPaths) -> None:
    for args, needle in [
        (("issue", "--scope", "admin"), "accepted: read, control, faults, alerts"),
        (("issue", "--scope", "read", "--ttl", "forever"), "not a duration"),
        (("issue", "--scope", "read", "--ttl", "400d"), "at most 365 days"),
        (("revoke", "tk-nope"), "no token 'tk-nope'"),
        (("rotate", "tk-nope"), "no token 'tk-nope'"),
    ]:
        r = _aegis(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert _aegis("issue").returncode == 2  # --scope is required


def test_issue_json_for_scripts(aegis_home: AegisPaths) -> None:
    r = _aegis("issue", "--scope", "faults", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) >= {"id", "token", "scopes", "expires_at"} and doc["scopes"] == ["faults"]
