"""Key handling: keys are pinned in the chain, verification is read-only, rotation is a signed record."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from aegis.cli import cli
from aegis.config import AegisPaths
from aegis.ledger import Ledger, LedgerError
from aegis.ledger.ledger import ROTATION_KIND
from aegis.ledger.signing import (
    NEXT_KEY_FILE,
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    Ed25519PrivateKey,
    signing_key,
    write_private,
)


def _filled(n: int = 3) -> Ledger:
    ledger = Ledger()
    for i in range(n):
        ledger.append("note", f"cs-{i}", {"i": i}, actor="tester")
    return ledger


def _tree(home: AegisPaths) -> dict[str, bytes]:
    """Every file under AEGIS_HOME (keys, witness, ledger) with its bytes."""
    return {
        str(p.relative_to(home.home)): p.read_bytes() for p in sorted(home.home.rglob("*")) if p.is_file()
    }


def test_verify_without_private_key_is_read_only_and_passes(aegis_home: AegisPaths) -> None:
    ledger = _filled()
    ledger.dispose()
    (aegis_home.keys / PRIVATE_KEY_FILE).unlink()
    before = _tree(aegis_home)
    result = CliRunner().invoke(cli, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "ledger OK: 4 record(s)" in result.output  # genesis + 3
    shown = CliRunner().invoke(cli, ["audit", "show"])
    assert shown.exit_code == 0 and "note on cs-2 by tester" in shown.output
    # nothing was created, replaced or archived by verifying or showing: keys, witness and database alike
    assert _tree(aegis_home) == before
    assert not (aegis_home.keys / PRIVATE_KEY_FILE).exists()


def test_verify_needs_no_key_files_the_chain_pins_them(aegis_home: AegisPaths) -> None:
    ledger = _filled()
    key_id = str(ledger.key_id)
    ledger.dispose()
    shutil.rmtree(aegis_home.keys)
    result = CliRunner().invoke(cli, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert not aegis_home.keys.exists()  # verifying did not make a key directory either
    export = CliRunner().invoke(cli, ["audit", "export-key"])  # the trusted key comes from the chain
    assert export.exit_code == 0 and export.output == Ledger(read_only=True).pinned_keys()[key_id]


def test_export_key_prints_the_trusted_key_not_a_planted_file(aegis_home: AegisPaths) -> None:
    ledger = _filled(1)
    planted = signing_key(Ed25519PrivateKey.generate())
    (aegis_home.keys / PUBLIC_KEY_FILE).write_text(planted.public_key_pem)
    export = CliRunner().invoke(cli, ["audit", "export-key"])
    assert export.exit_code == 0 and export.stdout == ledger.public_key_pem
    assert f"{planted.key_id}, which the ledger does not trust" in export.stderr


def test_verify_of_a_missing_ledger_does_not_create_it(aegis_home: AegisPaths) -> None:
    result = CliRunner().invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1 and "no audit ledger at" in result.output
    assert not aegis_home.ledger.exists()
    assert not (aegis_home.keys / PRIVATE_KEY_FILE).exists()
    assert not any(aegis_home.witness.iterdir())


def test_read_only_ledger_refuses_to_append(aegis_home: AegisPaths) -> None:
    _filled(1).dispose()
    reader = Ledger(read_only=True)
    with pytest.raises(LedgerError, match="read-only"):
        reader.append("note", "cs-x", {}, actor="tester")
    assert reader.key_id is not None and reader.verify().ok


def test_rotation_is_a_record_signed_by_the_old_key(aegis_home: AegisPaths) -> None:
    first = _filled(2)
    old_id = first.key_id
    rotation = first.rotate_key(actor="operator", reason="yearly rotation")
    new_id = first.key_id
    assert new_id != old_id
    assert rotation.kind == ROTATION_KIND and rotation.key_id == old_id  # signed with the key it retires
    assert rotation.payload["old_key"] == old_id and rotation.payload["new_key"] == new_id
    assert (aegis_home.keys / PUBLIC_KEY_FILE).read_text() == first.public_key_pem
    assert not (aegis_home.keys / NEXT_KEY_FILE).exists()
    after = first.append("note", "cs-after", {"rotated": True}, actor="tester")
    assert after.key_id == new_id
    report = Ledger(read_only=True).verify()
    assert report.ok, report.summary()
    assert report.records_checked == 5 and set(report.key_ids) == {old_id, new_id}
    assert report.trusted_keys == [new_id]
    first.dispose()
    shown = CliRunner().invoke(cli, ["audit", "show"]).output
    assert f"key {old_id} retired, key {new_id} signs from here on because yearly rotation" in shown


def test_a_writer_holding_the_retired_key_switches_to_the_new_one(aegis_home: AegisPaths) -> None:
    stale = _filled(1)
    rotator = Ledger()
    rotator.rotate_key(reason="test")
    record = stale.append("note", "cs-stale", {}, actor="tester")  # stale still has the old key in memory
    assert record.key_id == rotator.key_id
    assert Ledger(read_only=True).verify().ok


def test_cli_rotate_key(aegis_home: AegisPaths) -> None:
    old = _filled(1).key_id
    result = CliRunner().invoke(cli, ["audit", "rotate-key", "--reason", "drill"])
    assert result.exit_code == 0, result.output
    assert f"rotated the ledger signing key {old} -> " in result.output
    assert CliRunner().invoke(cli, ["audit", "verify"]).exit_code == 0


def test_a_lost_private_key_is_not_replaced_by_a_trusted_one(aegis_home: AegisPaths) -> None:
    """The old behaviour (a new key made and trusted because its public half sits in keys/) is gone."""
    ledger = _filled(2)
    ledger.dispose()
    (aegis_home.keys / PRIVATE_KEY_FILE).unlink()
    again = Ledger()  # makes a fresh key on disk...
    with pytest.raises(LedgerError, match="is not a key the ledger trusts"):
        again.append("note", "cs-after", {}, actor="tester")  # ...which may not extend the chain
    report = Ledger(read_only=True).verify()
    assert report.ok and report.records_checked == 3  # nothing was written


def test_a_rotation_interrupted_before_the_key_swap_is_finished(aegis_home: AegisPaths) -> None:
    ledger = _filled(1)
    new = signing_key(Ed25519PrivateKey.generate())
    write_private(aegis_home.keys / NEXT_KEY_FILE, new.private_key)
    # the rotation record commits, then the process dies before installing the new key
    ledger._append_checked(ROTATION_KIND, "ledger", {"reason": "crash drill"}, "operator", rotate_to=new)
    ledger.dispose()
    resumed = Ledger()  # loads the (now retired) key from keys/
    record = resumed.append("note", "cs-resume", {}, actor="tester")
    assert record.key_id == new.key_id and resumed.key_id == new.key_id
    assert not (aegis_home.keys / NEXT_KEY_FILE).exists()
    assert Ledger(read_only=True).verify().ok


def test_reserved_kinds_cannot_be_appended(aegis_home: AegisPaths) -> None:
    ledger = Ledger()
    for kind in ("genesis", "key_rotation"):
        with pytest.raises(ValueError, match="the ledger's own"):
            ledger.append(kind, "ledger", {}, actor="mallory")


def test_hand_replaced_public_key_is_archived_not_lost(aegis_home: AegisPaths) -> None:
    ledger = _filled(1)
    ledger.dispose()
    pub = aegis_home.keys / PUBLIC_KEY_FILE
    pub.write_text("garbage that is not a key")
    again = Ledger()  # the writer rewrites the public key from the private one
    assert pub.read_text() == again.public_key_pem
    aside = aegis_home.keys / (PUBLIC_KEY_FILE + ".unreadable")
    assert aside.read_text() == "garbage that is not a key"
    assert Ledger(read_only=True).verify().ok
