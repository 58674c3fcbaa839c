"""Tampering with the ledger by raw SQL (or on the file) is always detected and named."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aegis.cli import cli
from aegis.config import AegisPaths
from aegis.ledger import Ledger
from aegis.ledger.ledger import canonical_json, format_ts, record_hash
from aegis.ledger.signing import SigningKey, fingerprint, public_pem

N = 5


def _filled(home: AegisPaths) -> Ledger:
    ledger = Ledger()
    for i in range(N):
        ledger.append(
            "note", f"cs-{i}", {"i": i, "text": f"record {i}", "nested": {"v": [i, i + 0.5]}}, actor="t"
        )
    assert ledger.verify().ok
    return ledger


def _sql(home: AegisPaths, *statements: str, params: tuple = ()) -> None:
    """Raw SQL as an attacker with file access would run it: triggers dropped first."""
    with sqlite3.connect(home.ledger) as conn:
        conn.execute("DROP TRIGGER IF EXISTS audit_records_no_update")
        conn.execute("DROP TRIGGER IF EXISTS audit_records_no_delete")
        for statement in statements:
            conn.execute(statement, params)


def _flip_byte_in_payload(home: AegisPaths) -> None:
    with sqlite3.connect(home.ledger) as conn:
        (payload,) = conn.execute("SELECT payload FROM audit_records WHERE seq = 3").fetchone()
    _sql(
        home,
        "UPDATE audit_records SET payload = ? WHERE seq = 3",
        params=(payload.replace("record 2", "record 7"),),
    )


TAMPERS: dict[str, tuple[Callable[[AegisPaths], None], int | None, str]] = {
    "payload byte": (_flip_byte_in_payload, 3, "hash mismatch"),
    "actor": (
        lambda h: _sql(h, "UPDATE audit_records SET actor = 'mallory' WHERE seq = 2"),
        2,
        "hash mismatch",
    ),
    "timestamp": (
        lambda h: _sql(
            h, "UPDATE audit_records SET recorded_at = '2020-01-01T00:00:00.000000+00:00' WHERE seq = 4"
        ),
        4,
        "hash mismatch",
    ),
    "payload not json": (
        lambda h: _sql(h, "UPDATE audit_records SET payload = '{\"i\": 1' WHERE seq = 2"),
        2,
        "JSON",
    ),
    "deleted record": (lambda h: _sql(h, "DELETE FROM audit_records WHERE seq = 3"), 4, "sequence gap"),
    "reordered": (
        lambda h: _sql(
            h,
            "UPDATE audit_records SET seq = -2 WHERE seq = 2",
            "UPDATE audit_records SET seq = 2 WHERE seq = 3",
            "UPDATE audit_records SET seq = 3 WHERE seq = -2",
        ),
        2,
        "prev_hash",
    ),
    "signature": (
        lambda h: _sql(h, "UPDATE audit_records SET signature = substr(signature, 2) || 'A' WHERE seq = 5"),
        5,
        "signature",
    ),
    "tail removed": (
        lambda h: _sql(h, "DELETE FROM audit_records WHERE seq = 5"),
        None,
        "removed from the end",
    ),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_tampering_is_detected(aegis_home: AegisPaths, name: str) -> None:
    ledger = _filled(aegis_home)
    tamper, bad_seq, reason = TAMPERS[name]
    tamper(aegis_home)
    report = ledger.verify()
    assert not report.ok
    assert report.first_bad is not None
    assert report.first_bad.seq == bad_seq, report.summary()
    assert reason in report.first_bad.reason
    result = CliRunner().invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1 and "TAMPERED" in result.output


def test_record_resigned_with_another_key_is_detected(aegis_home: AegisPaths) -> None:
    ledger = _filled(aegis_home)
    with sqlite3.connect(aegis_home.ledger) as conn:
        conn.row_factory = sqlite3.Row
        row = dict(conn.execute("SELECT * FROM audit_records WHERE seq = 2").fetchone())
    # The attacker rewrites the record, recomputes its hash and signs it with their own key.
    mallory = Ed25519PrivateKey.generate()
    key = SigningKey(mallory, fingerprint(mallory.public_key()), public_pem(mallory.public_key()))
    import json

    payload = json.loads(row["payload"])
    payload["text"] = "forged"
    fields = {**row, "payload": payload, "key_id": key.key_id}
    digest = record_hash(fields)
    _sql(
        aegis_home,
        "UPDATE audit_records SET payload = ?, key_id = ?, hash = ?, signature = ? WHERE seq = 2",
        params=(canonical_json(payload), key.key_id, digest, key.sign(digest)),
    )
    report = ledger.verify()
    assert not report.ok and report.first_bad is not None and report.first_bad.seq == 2
    assert "not a trusted ledger key" in report.first_bad.reason
    # claiming the genuine key_id instead: the signature no longer verifies
    fields["key_id"] = ledger.key_id
    digest = record_hash(fields)
    _sql(
        aegis_home,
        "UPDATE audit_records SET key_id = ?, hash = ?, signature = ? WHERE seq = 2",
        params=(ledger.key_id, digest, key.sign(digest)),
    )
    report = ledger.verify()
    assert report.first_bad is not None and "signature does not verify" in report.first_bad.reason


def test_appending_to_a_tampered_tail_is_refused(aegis_home: AegisPaths) -> None:
    ledger = _filled(aegis_home)
    _sql(aegis_home, "DELETE FROM audit_records WHERE seq = 5")
    with pytest.raises(Exception, match="refusing to append"):
        ledger.append("note", "cs-x", {}, actor="t")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_db_file_is_a_clear_error(aegis_home: AegisPaths, damage: str) -> None:
    ledger = _filled(aegis_home)
    ledger.dispose()
    path: Path = aegis_home.ledger
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"this is not a database" * 200)
    result = CliRunner().invoke(cli, ["audit", "verify"])
    assert result.exit_code != 0
    assert (
        "corrupt" in result.output.lower()
        or "not a database" in result.output.lower()
        or "malformed" in result.output.lower()
    ), result.output


def test_format_ts_is_canonical() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    t = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert (
        format_ts(t)
        == format_ts(t.astimezone(timezone(timedelta(hours=2))))
        == "2025-01-02T03:04:05.000000+00:00"
    )
