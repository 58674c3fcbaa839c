"""The token store on real files: hashing, scopes, expiry, revocation, rotation, refusals, the ledger."""

from __future__ import annotations

import sqlite3
import stat
import time
from datetime import timedelta

import pytest

from aegis.config import AegisPaths
from aegis.ledger.ledger import Ledger
from aegis.security.secrets import SERVICE_TOKENS, ensure_service_tokens, service_token
from aegis.security.tokens import DEFAULT_TTL, SCOPES, AuthError, TokenStore, parse_token


@pytest.fixture
def store(aegis_home: AegisPaths):  # type: ignore[no-untyped-def]
    s = TokenStore()
    yield s
    s.close()


def _refused(store: TokenStore, raw: str | None, scope: str, caller: str = "10.0.0.9") -> AuthError:
    with pytest.raises(AuthError) as info:
        store.verify(raw, scope, caller, path="/v1/test")
    return info.value


def test_issue_stores_only_a_hash_and_verifies_in_scope(store: TokenStore, aegis_home: AegisPaths) -> None:
    issued = store.issue(["read", "faults"], label="ops")
    assert issued.scopes == ["read", "faults"]
    assert issued.expires_at is not None
    assert (
        timedelta(hours=11, minutes=59) < issued.expires_at - store.get(issued.id).created_at <= DEFAULT_TTL
    )
    token_id, secret = parse_token(issued.token)  # type: ignore[misc]
    assert token_id == issued.id
    raw_db = aegis_home.security_db.read_bytes() + b"".join(
        p.read_bytes() for p in aegis_home.home.glob("security.db*")
    )
    assert secret.encode() not in raw_db  # the secret is never written down
    assert stat.S_IMODE(aegis_home.security_db.stat().st_mode) == 0o600
    assert store.verify(issued.token, "read", "127.0.0.1").id == issued.id
    assert store.verify(issued.token, "faults", "127.0.0.1").id == issued.id
    err = _refused(store, issued.token, "control")
    assert (err.status, err.reason) == (403, "scope")


def test_control_includes_read_and_nothing_else(store: TokenStore) -> None:
    control = store.issue(["control"])
    assert store.verify(control.token, "read", "x").id == control.id
    for scope in ("faults", "alerts"):
        assert _refused(store, control.token, scope).status == 403


def test_bad_scopes_and_ttls_are_refused(store: TokenStore) -> None:
    with pytest.raises(ValueError, match="accepted: read, control, faults, alerts"):
        store.issue(["admin"])
    with pytest.raises(ValueError, match="at least one scope"):
        store.issue([])
    with pytest.raises(ValueError, match="ttl"):
        store.issue(["read"], ttl=timedelta(seconds=-1))
    with pytest.raises(ValueError):
        store.verify("x", "superuser", "x")


def test_missing_malformed_unknown_forged_are_401(store: TokenStore) -> None:
    good = store.issue(["read"])
    token_id = good.id
    cases = {
        None: "missing",
        "": "missing",
        "garbage": "malformed",
        "aegis." + "x" * 300: "malformed",
        f"aegis.tk-000000000000.{'A' * 43}": "unknown",
        f"aegis.{token_id}.{'A' * 43}": "forged",
    }
    for raw, reason in cases.items():
        err = _refused(store, raw, "read")
        assert (err.status, err.reason) == (401, reason), raw


def test_revoked_expired_rotated_are_403_and_recorded(store: TokenStore) -> None:
    revoked = store.issue(["read"])
    store.revoke(revoked.id, reason="leaked")
    store.revoke(revoked.id)  # idempotent
    assert _refused(store, revoked.token, "read").reason == "revoked"
    short = store.issue(["read"], ttl=timedelta(seconds=1))
    time.sleep(1.2)
    assert _refused(store, short.token, "read").reason == "expired"
    old = store.issue(["read", "control"], label="svc")
    new = store.rotate(old.id, grace=timedelta(0))
    assert new.label == "svc" and new.scopes == ["read", "control"]
    assert _refused(store, old.token, "read").reason == "rotated"
    assert store.verify(new.token, "control", "x").id == new.id
    with pytest.raises(ValueError, match="rotated"):
        store.rotate(old.id)
    with pytest.raises(KeyError):
        store.revoke("tk-doesnotexist")
    refusals = store.refusals()
    assert [r.reason for r in refusals] == ["revoked", "expired", "rotated"]
    assert [r.revoked for r in refusals] == [True, False, True]
    assert all(r.caller == "10.0.0.9" and r.path == "/v1/test" for r in refusals)
    assert store.refusal_counts()["revoked"] == 1 and store.refusal_counts()["missing"] == 0


def test_rotation_grace_keeps_the_old_token_then_ends(store: TokenStore) -> None:
    old = store.issue(["faults"])
    new = store.rotate(old.id, grace=timedelta(seconds=1))
    assert store.verify(old.token, "faults", "x").id == old.id
    assert store.verify(new.token, "faults", "x").id == new.id
    assert store.get(old.id).state() == "grace"  # type: ignore[union-attr]
    time.sleep(1.2)
    assert _refused(store, old.token, "faults").reason == "rotated"


def test_isolation_refuses_a_caller_or_a_token_before_anything_else(store: TokenStore) -> None:
    t = store.issue(["read"])
    store.isolate("10.0.0.66", reason="brute force", actor="healing")
    assert store.is_isolated("10.0.0.66")
    err = _refused(store, t.token, "read", caller="10.0.0.66")
    assert (err.status, err.reason) == (403, "isolated")
    assert store.verify(t.token, "read", "10.0.0.7").id == t.id
    store.isolate(t.id, reason="token leaked", actor="healing")
    assert _refused(store, t.token, "read", caller="10.0.0.7").reason == "isolated"
    store.release(t.id)
    store.release("10.0.0.66")
    assert not store.isolations()
    assert store.verify(t.token, "read", "10.0.0.66").id == t.id


def test_every_decision_is_in_the_ledger_without_a_secret(store: TokenStore, aegis_home: AegisPaths) -> None:
    t = store.issue(["alerts"], label="receiver")
    n = store.rotate(t.id)
    store.revoke(n.id, reason="test")
    store.isolate("10.1.1.1", reason="probe", actor="healing")
    ledger = Ledger()
    try:
        records = [r for r in ledger.records() if r.kind in ("token", "security")]
        assert ledger.verify().ok
    finally:
        ledger.dispose()
    actions = [(r.kind, r.subject, r.payload["action"]) for r in records]
    assert actions == [
        ("token", t.id, "issue"),
        ("token", n.id, "issue"),
        ("token", t.id, "rotate"),
        ("token", n.id, "revoke"),
        ("security", "10.1.1.1", "isolate"),
    ]
    assert all(r.payload.get("summary") for r in records)
    dumped = " ".join(str(r.payload) for r in records)
    for secret in (t.token, n.token):
        assert secret.split(".")[2] not in dumped


def test_ensure_service_tokens_mints_private_files_once_and_renews(aegis_home: AegisPaths) -> None:
    files = ensure_service_tokens()
    assert set(files) == set(SERVICE_TOKENS) and set(SERVICE_TOKENS) <= set(SCOPES)
    assert stat.S_IMODE(aegis_home.secrets.stat().st_mode) == 0o700
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = {name: service_token(name) for name in files}
    assert ensure_service_tokens() == files
    assert {name: service_token(name) for name in files} == first  # valid tokens are kept
    store = TokenStore()
    try:
        assert store.verify(first["control"], "control", "x").scopes == ["read", "control"]
        # a revoked one is replaced; one near expiry is rotated (the old one keeps working)
        store.revoke(parse_token(first["read"])[0])  # type: ignore[index]
        db = sqlite3.connect(aegis_home.security_db)
        db.execute(
            "UPDATE tokens SET expires_at = datetime('now', '+1 hour') WHERE token_id = ?",
            (parse_token(first["faults"])[0],),  # type: ignore[index]
        )
        db.commit()
        db.close()
        ensure_service_tokens()
        assert service_token("read") != first["read"]
        assert service_token("faults") != first["faults"]
        assert store.verify(first["faults"], "faults", "x")  # grace: no downtime
        assert store.verify(service_token("faults"), "faults", "x")
    finally:
        store.close()


def test_service_token_prefers_the_environment(
    aegis_home: AegisPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert service_token("control") is None
    ensure_service_tokens()
    from_file = service_token("control")
    assert from_file and from_file.startswith("aegis.tk-")
    monkeypatch.setenv("AEGIS_TOKEN_CONTROL", "aegis.tk-123456789abc.from-env-secret-xxxxxx")
    assert service_token("control") == "aegis.tk-123456789abc.from-env-secret-xxxxxx"


def test_refusal_records_are_bounded(store: TokenStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import aegis.security.tokens as tokens

    monkeypatch.setattr(tokens, "REFUSALS_KEPT", 5)
    monkeypatch.setattr(tokens, "REFUSALS_PRUNE_EVERY", 10)
    for i in range(20):
        store.record_refusal(f"10.0.0.{i}", "/v1/shards", "missing", None, 401)
    kept = store.refusals()
    assert [r.seq for r in kept] == list(range(16, 21))  # pruned at seq 20: the newest 5 stay
