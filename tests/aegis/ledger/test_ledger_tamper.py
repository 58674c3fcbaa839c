"""Tampering with the ledger by raw SQL (or on the file) is always detected and named.

Layout of the filled ledger: seq 1 is the genesis record, seq 2..6 five notes
("record 0" .. "record 4"); the witness holds a checkpoint for seq 2..6.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aegis.cli import cli
from aegis.config import AegisPaths
from aegis.ledger import Ledger, LedgerError
from aegis.ledger import witness as witness_module
from aegis.ledger.ledger import canonical_json, format_ts, record_hash
from aegis.ledger.models import GENESIS_HASH
from aegis.ledger.signing import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    SigningKey,
    archive_name,
    fingerprint,
    public_pem,
)
from aegis.ledger.witness import Checkpoint, LocalWitness, WitnessError, checkpoint_name

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


def _truncate_to(home: AegisPaths, seq: int) -> None:
    """Cut the chain after ``seq`` and make the head row agree: a shorter chain that is valid in itself."""
    with sqlite3.connect(home.ledger) as conn:
        row = conn.execute("SELECT hash FROM audit_records WHERE seq = ?", (seq,)).fetchone()
    head_hash = row[0] if row else GENESIS_HASH
    _sql(home, f"DELETE FROM audit_records WHERE seq > {seq}")
    _sql(home, "UPDATE ledger_head SET seq = ?, hash = ?", params=(seq, head_hash))


def _flip_byte_in_payload(home: AegisPaths) -> None:
    with sqlite3.connect(home.ledger) as conn:
        (payload,) = conn.execute("SELECT payload FROM audit_records WHERE seq = 4").fetchone()
    _sql(
        home,
        "UPDATE audit_records SET payload = ? WHERE seq = 4",
        params=(payload.replace("record 2", "record 7"),),
    )


TAMPERS: dict[str, tuple[Callable[[AegisPaths], None], int | None, str]] = {
    "payload byte": (_flip_byte_in_payload, 4, "hash mismatch"),
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
        lambda h: _sql(h, "DELETE FROM audit_records WHERE seq = 6"),
        None,
        "removed from the end",
    ),
    "tail removed and head reset": (lambda h: _truncate_to(h, 4), 5, "truncation"),
    "everything removed and head reset": (lambda h: _truncate_to(h, 0), 1, "truncation"),
    "genesis replaced by a note": (
        lambda h: _sql(h, "UPDATE audit_records SET kind = 'note' WHERE seq = 1"),
        1,
        "hash mismatch",
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
    key = _mallory()
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


@pytest.mark.parametrize(
    ("keep", "reason"),
    [
        (5, "chain head .* disagrees"),
        (4, "saw seq 6 but the ledger ends at seq 4"),
        (0, "saw seq 6 but the ledger ends at seq 0"),
    ],
)
def test_appending_to_a_cut_tail_is_refused(aegis_home: AegisPaths, keep: int, reason: str) -> None:
    """Cut with or without a reset head row: no writer may bury the cut under new records (or a new genesis)."""
    ledger = _filled(aegis_home)
    if keep == 5:
        _sql(aegis_home, "DELETE FROM audit_records WHERE seq = 6")  # head row left alone
    else:
        _truncate_to(aegis_home, keep)
    for writer in (ledger, Ledger()):
        with pytest.raises(LedgerError, match=f"refusing to append: .*{reason}"):
            writer.append("note", "cs-x", {}, actor="t")
    with sqlite3.connect(aegis_home.ledger) as conn:
        assert conn.execute("SELECT count(*) FROM audit_records").fetchone()[0] == keep


def test_full_truncation_names_what_the_witness_saw(aegis_home: AegisPaths) -> None:
    _filled(aegis_home).dispose()
    _truncate_to(aegis_home, 0)
    report = Ledger(read_only=True).verify()
    assert not report.ok and report.first_bad is not None
    assert (
        "saw the ledger at seq 6" in report.first_bad.reason
        and "6 record(s) were removed" in report.first_bad.reason
    )
    result = CliRunner().invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1 and "truncation" in result.output


def _mallory() -> SigningKey:
    key = Ed25519PrivateKey.generate()
    return SigningKey(key, fingerprint(key.public_key()), public_pem(key.public_key()))


def _resign_from(home: AegisPaths, start: int, key: SigningKey) -> None:
    """Rewrite records ``start``.. with ``key``: new text, hashes re-chained, signatures valid for ``key``."""
    with sqlite3.connect(home.ledger) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM audit_records ORDER BY seq")]
    prev = rows[start - 2]["hash"]
    for row in rows[start - 1 :]:
        payload = json.loads(row["payload"])
        payload["text"] = "forged"
        fields = {**row, "payload": payload, "key_id": key.key_id, "prev_hash": prev}
        digest = record_hash(fields)
        _sql(
            home,
            "UPDATE audit_records SET payload = ?, key_id = ?, prev_hash = ?, hash = ?, signature = ? WHERE seq = ?",
            params=(canonical_json(payload), key.key_id, prev, digest, key.sign(digest), row["seq"]),
        )
        prev = digest
    _sql(home, "UPDATE ledger_head SET hash = ?", params=(prev,))


def test_a_planted_key_is_not_trusted(aegis_home: AegisPaths) -> None:
    """Mallory drops her public key into keys/ (as the current key and as an archived one) and re-signs."""
    ledger = _filled(aegis_home)
    mallory = _mallory()
    (aegis_home.keys / PUBLIC_KEY_FILE).write_text(mallory.public_key_pem)
    (aegis_home.keys / archive_name(mallory.key_id)).write_text(mallory.public_key_pem)
    _resign_from(
        aegis_home, 3, mallory
    )  # a consistent chain from seq 3 on, every signature valid for her key
    report = Ledger(read_only=True).verify()
    assert not report.ok and report.first_bad is not None and report.first_bad.seq == 3, report.summary()
    assert "not a trusted ledger key" in report.first_bad.reason and mallory.key_id in report.first_bad.reason
    result = CliRunner().invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1 and "planted key" in result.output
    assert ledger.key_id in result.output  # it names the key that is trusted


def test_a_ledger_remade_with_another_key_disagrees_with_the_witness(
    aegis_home: AegisPaths, tmp_path: Path
) -> None:
    """Mallory re-signs everything, genesis included, with her key: a valid chain that the witness never saw."""
    original = _filled(aegis_home)
    original_key = str(original.key_id)
    original.dispose()
    forged_home = tmp_path / "forged"
    forged = Ledger(
        f"sqlite:///{forged_home / 'ledger.db'}",
        forged_home / "keys",
        witness=LocalWitness(forged_home / "w"),
    )
    for i in range(N):
        forged.append("note", f"cs-{i}", {"i": i, "text": "forged"}, actor="t")
    forged.dispose()
    shutil.copyfile(forged_home / "ledger.db", aegis_home.ledger)
    report = Ledger(read_only=True).verify()
    assert not report.ok and report.first_bad is not None and report.first_bad.seq == 2
    assert "about another chain" in report.first_bad.reason

    # She replaces the local witness too: only an out-of-band pin of the genesis key can tell (the S3 witness,
    # under Object Lock, cannot be replaced).
    shutil.rmtree(aegis_home.witness / "ledger")
    shutil.copytree(forged_home / "w", aegis_home.witness / "ledger")
    assert CliRunner().invoke(cli, ["audit", "verify"]).exit_code == 0
    pinned = CliRunner().invoke(cli, ["audit", "verify", "--pin", original_key])
    assert pinned.exit_code == 1 and "re-made with another key" in pinned.output


def test_a_deleted_witness_is_noticed(aegis_home: AegisPaths) -> None:
    _filled(aegis_home).dispose()
    shutil.rmtree(aegis_home.witness / "ledger")
    result = CliRunner().invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1 and "holds no checkpoint" in result.output


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("head_hash", "f" * 64, "history was rewritten"),
        ("trusted_keys", ["ed25519:" + "0" * 32], "key set was changed"),
        ("at", "2020-01-01T00:00:00.000000+00:00", "forged"),
    ],
)
def test_an_altered_checkpoint_is_noticed(
    aegis_home: AegisPaths, field: str, value: object, reason: str
) -> None:
    _filled(aegis_home).dispose()
    path = aegis_home.witness / "ledger" / checkpoint_name(4)
    doc = json.loads(path.read_text())
    doc[field] = value
    path.write_text(json.dumps(doc))
    report = Ledger(read_only=True).verify()
    assert not report.ok and report.first_bad is not None and report.first_bad.seq == 4
    assert reason in report.first_bad.reason, report.summary()


@pytest.mark.parametrize("target", ["private key", "key directory"])
def test_loose_key_permissions_fail_verification(aegis_home: AegisPaths, target: str) -> None:
    _filled(aegis_home).dispose()
    path = aegis_home.keys / PRIVATE_KEY_FILE if target == "private key" else aegis_home.keys
    mode = 0o640 if target == "private key" else 0o755
    os.chmod(path, mode)
    result = CliRunner().invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1, result.output
    assert f"{mode:04o}" in result.output and ("chmod 600" in result.output or "chmod 700" in result.output)
    assert stat.S_IMODE(path.stat().st_mode) == mode  # verify reports, it does not "fix" anything
    os.chmod(path, 0o600 if target == "private key" else 0o700)
    assert CliRunner().invoke(cli, ["audit", "verify"]).exit_code == 0


def test_a_failed_checkpoint_is_bounded_and_caught_up(
    aegis_home: AegisPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound: only appends whose checkpoint failed are unwitnessed, and the next append covers them."""
    ledger = _filled(aegis_home)

    def disk_full(self: LocalWitness, cp: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(LocalWitness, "put", disk_full)
        ledger.append("note", "cs-late", {"i": 99}, actor="t")  # committed; its checkpoint failed (logged)
    assert ledger.last_witness_error and "No space left" in ledger.last_witness_error
    report = Ledger(read_only=True).verify()
    assert report.ok and (report.witnessed_seq, report.unwitnessed) == (6, 1)
    assert "1 record(s) after it not yet witnessed" in report.summary()
    ledger.append("note", "cs-next", {"i": 100}, actor="t")
    report = Ledger(read_only=True).verify()
    assert report.ok and (report.witnessed_seq, report.unwitnessed) == (8, 0)


def test_checkpoints_are_never_overwritten(aegis_home: AegisPaths) -> None:
    _filled(aegis_home).dispose()
    witness = LocalWitness(aegis_home.witness / "ledger")
    cp = witness.latest()
    assert cp is not None and cp.seq == 6
    before = (aegis_home.witness / "ledger" / checkpoint_name(6)).read_bytes()
    witness.put(cp.model_copy(update={"at": "2030-01-01T00:00:00.000000+00:00"}))  # same head: kept as it was
    assert (aegis_home.witness / "ledger" / checkpoint_name(6)).read_bytes() == before
    with pytest.raises(WitnessError, match="already holds seq 6"):
        witness.put(cp.model_copy(update={"head_hash": "e" * 64}))


def test_latest_checkpoint_spans_buckets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(witness_module, "BUCKET_SIZE", 3)
    witness = LocalWitness(tmp_path / "w")
    for seq in (2, 3, 7, 5, 11):
        witness.put(
            Checkpoint(
                ledger="a" * 64, seq=seq, head_hash=f"{seq:064d}", key_id="k", trusted_keys=["k"], at="t"
            )
        )
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["000000", "000001", "000002", "000003"]
    latest = witness.latest()
    assert latest is not None and latest.seq == 11
    assert [c.seq for c in witness.checkpoints()] == [2, 3, 5, 7, 11]


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


@pytest.mark.postgres
@pytest.mark.parametrize("keep", [3, 0])
def test_truncation_with_reset_head_on_postgres(aegis_home: AegisPaths, pg_url: str, keep: int) -> None:
    """The same cut on PostgreSQL, by an attacker who can disable the append-only triggers."""
    import sqlalchemy as sa

    ledger = Ledger(pg_url)
    for i in range(N):
        ledger.append("note", f"cs-{i}", {"i": i}, actor="t")
    ledger.dispose()
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE audit_records DISABLE TRIGGER ALL")
        head = conn.exec_driver_sql(f"SELECT hash FROM audit_records WHERE seq = {keep}").scalar()
        if keep:
            conn.exec_driver_sql(f"DELETE FROM audit_records WHERE seq > {keep}")
        else:
            conn.exec_driver_sql("TRUNCATE audit_records")
        conn.execute(
            sa.text("UPDATE ledger_head SET seq = :s, hash = :h"), {"s": keep, "h": head or GENESIS_HASH}
        )
    engine.dispose()
    reader = Ledger(pg_url, read_only=True)
    report = reader.verify()
    reader.dispose()
    assert not report.ok and report.first_bad is not None and report.first_bad.seq == keep + 1
    assert f"{N + 1 - keep} record(s) were removed from the end (truncation)" in report.first_bad.reason
