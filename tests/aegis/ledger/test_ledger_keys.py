"""Key handling: verification is read-only, and key rotation keeps old records verifiable."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from aegis.cli import cli
from aegis.config import AegisPaths
from aegis.ledger import Ledger, LedgerError, LedgerKeyError
from aegis.ledger.signing import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, archive_name


def _filled(n: int = 3) -> Ledger:
    ledger = Ledger()
    for i in range(n):
        ledger.append("note", f"cs-{i}", {"i": i}, actor="tester")
    return ledger


def _key_files(home: AegisPaths) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(home.keys.iterdir())}


def test_verify_without_private_key_is_read_only_and_passes(aegis_home: AegisPaths) -> None:
    ledger = _filled()
    ledger.dispose()
    (aegis_home.keys / PRIVATE_KEY_FILE).unlink()
    before = _key_files(aegis_home)
    result = CliRunner().invoke(cli, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "ledger OK: 3 record(s)" in result.output
    # nothing was created, replaced or archived by verifying
    assert _key_files(aegis_home) == before
    assert not (aegis_home.keys / PRIVATE_KEY_FILE).exists()
    shown = CliRunner().invoke(cli, ["audit", "show"])
    assert shown.exit_code == 0 and "note on cs-2 by tester" in shown.output
    assert _key_files(aegis_home) == before


def test_verify_with_no_key_material_says_so_and_fails(aegis_home: AegisPaths) -> None:
    _filled().dispose()
    shutil.rmtree(aegis_home.keys)
    result = CliRunner().invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1
    assert "no ledger public key" in result.output and "TAMPERED" not in result.output
    assert not aegis_home.keys.exists()  # verifying did not make a key directory either
    with pytest.raises(LedgerKeyError, match="no ledger public key"):
        Ledger(read_only=True).verify()
    export = CliRunner().invoke(cli, ["audit", "export-key"])
    assert export.exit_code == 1 and "no ledger public key" in export.output


def test_verify_of_a_missing_ledger_does_not_create_it(aegis_home: AegisPaths) -> None:
    result = CliRunner().invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1 and "no audit ledger at" in result.output
    assert not aegis_home.ledger.exists()
    assert not (aegis_home.keys / PRIVATE_KEY_FILE).exists()


def test_read_only_ledger_refuses_to_append(aegis_home: AegisPaths) -> None:
    _filled(1).dispose()
    reader = Ledger(read_only=True)
    with pytest.raises(LedgerError, match="read-only"):
        reader.append("note", "cs-x", {}, actor="tester")
    assert reader.key_id is not None and reader.verify().ok


def test_rotation_archives_the_old_public_key_and_both_keys_verify(aegis_home: AegisPaths) -> None:
    first = _filled(2)
    old_id, old_pem = first.key_id, first.public_key_pem
    first.dispose()
    (aegis_home.keys / PRIVATE_KEY_FILE).unlink()  # rotate: the next writer makes a new key

    second = Ledger()
    assert second.key_id != old_id
    archived = aegis_home.keys / archive_name(str(old_id))
    assert archived.read_text() == old_pem
    assert (aegis_home.keys / PUBLIC_KEY_FILE).read_text() == second.public_key_pem
    second.append("note", "cs-after", {"rotated": True}, actor="tester")

    report = Ledger(read_only=True).verify()
    assert report.ok, report.summary()
    assert report.records_checked == 3 and set(report.key_ids) == {old_id, second.key_id}
    result = CliRunner().invoke(cli, ["audit", "verify"])
    assert result.exit_code == 0 and "3 record(s)" in result.output

    # without the archived key the old records are no longer trusted: the archive is what makes it work
    archived.unlink()
    report = Ledger(read_only=True).verify()
    assert not report.ok and report.first_bad is not None and report.first_bad.seq == 1
    assert "not a trusted ledger key" in report.first_bad.reason
    second.dispose()


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
