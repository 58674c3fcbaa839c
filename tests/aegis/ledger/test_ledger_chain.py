"""The ledger's chain, signatures, keys and CLI on the happy path (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest
from click.testing import CliRunner

from aegis.cli import cli
from aegis.config import AegisPaths
from aegis.domain import AutonomousChangeSet, ParamChange, PromotionState
from aegis.ledger import Ledger, LedgerKeyError, record_hash
from aegis.ledger.models import GENESIS_HASH
from aegis.ledger.signing import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, load_public_pem, verify_signature
from aegis.policy import PolicyContext, PolicyEngine
from aegis.policy.engine import default_policies_dir


def _decided() -> tuple:
    doc = json.loads((default_policies_dir() / "examples" / "deny-deletes-active-inventory.json").read_text())
    changeset = AutonomousChangeSet.model_validate(doc["changeset"])
    return PolicyEngine().decide(changeset, PolicyContext.model_validate(doc["context"])), changeset


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_append_chain_and_verify(
    aegis_home: AegisPaths, backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    ledger = Ledger(url)
    assert ledger.records() == []  # opening a writer writes nothing
    first = ledger.append("note", "cs-1", {"n": 1, "when": "now"}, actor="tester")
    second = ledger.record_transition(
        "cs-1", PromotionState.PROPOSED, PromotionState.POLICY_CHECKED, "lifecycle"
    )
    genesis = ledger.records()[0]
    # the first append starts the chain with a genesis record pinning the signing key
    assert (genesis.seq, genesis.kind, genesis.subject) == (1, "genesis", "ledger")
    assert genesis.prev_hash == GENESIS_HASH and genesis.payload["trusted_keys"] == {
        ledger.key_id: ledger.public_key_pem
    }
    assert (first.seq, second.seq) == (2, 3)
    assert first.prev_hash == genesis.hash and second.prev_hash == first.hash
    assert record_hash(second.model_dump()) == second.hash
    assert verify_signature(load_public_pem(ledger.public_key_pem), second.hash, second.signature)
    assert [r.model_dump() for r in ledger.records()][1:] == [first.model_dump(), second.model_dump()]
    assert ledger.records("cs-other") == []
    report = ledger.verify()
    assert report.ok and report.records_checked == 3 and report.key_ids == [ledger.key_id]
    assert report.witnessed_seq == 3 and report.unwitnessed == 0
    ledger.dispose()


def test_decision_record_is_replayable(aegis_home: AegisPaths) -> None:
    decision, changeset = _decided()
    ledger = Ledger()
    record = ledger.record_decision(decision, changeset, actor="policy-gate")
    stored = ledger.records(changeset.id)[0]
    assert stored.kind == "decision" and stored.subject == changeset.id
    assert stored.payload["decision"]["rule"] == "integrity.deletes_active_inventory"
    assert AutonomousChangeSet.model_validate(stored.payload["changeset"]) == changeset
    assert stored.hash == record.hash
    other = changeset.model_copy(update={"id": "cs-else"})
    with pytest.raises(ValueError, match="not changeset"):
        ledger.record_decision(decision, other, actor="policy-gate")


def test_bad_payloads_are_refused_and_nothing_is_written(aegis_home: AegisPaths) -> None:
    ledger = Ledger()
    with pytest.raises(ValueError, match="JSON"):
        ledger.append("note", "cs-1", {"x": float("nan")}, actor="t")
    with pytest.raises(ValueError, match="non-empty"):
        ledger.append("note", "", {}, actor="t")
    assert ledger.records() == [] and ledger.verify().ok


def test_append_only_is_enforced_by_the_database(aegis_home: AegisPaths) -> None:
    ledger = Ledger()
    ledger.append("note", "cs-1", {"n": 1}, actor="t")
    with (
        sqlite3.connect(aegis_home.ledger) as conn,
        pytest.raises(sqlite3.IntegrityError, match="append-only"),
    ):
        conn.execute("UPDATE audit_records SET actor = 'mallory'")
    with (
        sqlite3.connect(aegis_home.ledger) as conn,
        pytest.raises(sqlite3.IntegrityError, match="append-only"),
    ):
        conn.execute("DELETE FROM audit_records")


def test_key_is_private_and_exported(aegis_home: AegisPaths) -> None:
    os.chmod(aegis_home.keys, 0o755)  # as AegisPaths.ensure() makes it under a common umask
    ledger = Ledger()
    private = aegis_home.keys / PRIVATE_KEY_FILE
    assert oct(os.stat(private).st_mode & 0o777) == oct(0o600)
    assert oct(os.stat(aegis_home.keys).st_mode & 0o777) == oct(0o700)  # the writer tightens its directory
    assert (aegis_home.keys / PUBLIC_KEY_FILE).read_text() == ledger.public_key_pem
    assert Ledger().key_id == ledger.key_id  # the same key is reused
    os.chmod(private, 0o644)
    with pytest.raises(LedgerKeyError, match="chmod 600"):
        Ledger()


def test_cli_verify_show_export(aegis_home: AegisPaths) -> None:
    decision, changeset = _decided()
    ledger = Ledger()
    ledger.record_decision(decision, changeset, actor="policy-gate")
    ledger.record_transition(changeset.id, "proposed", "rejected", "lifecycle", reason="policy denied")
    runner = CliRunner()
    result = runner.invoke(cli, ["audit", "verify"])
    assert result.exit_code == 0 and "3 record(s)" in result.output  # genesis + the two
    shown = runner.invoke(cli, ["audit", "show", "--changeset", changeset.id]).output
    assert (
        "DENY" in shown
        and "integrity.deletes_active_inventory" in shown
        and "deletes_active_inventory=312" in shown
    )
    assert "proposed -> rejected because policy denied" in shown
    assert runner.invoke(cli, ["audit", "export-key"]).output == ledger.public_key_pem


def test_param_change_payloads_roundtrip(aegis_home: AegisPaths) -> None:
    ledger = Ledger()
    cs = AutonomousChangeSet(
        target="eu-1", diff={"spawn_rate": ParamChange(before=[1.0] * 6, after=[1.1] * 6)}
    )
    rec = ledger.append("proposal", cs.id, {"changeset": cs}, actor="proposer")
    assert ledger.records()[-1].payload == rec.payload
    assert ledger.verify().ok
