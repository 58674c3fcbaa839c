"""``aegis policy check`` and ``aegis policy test``."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from aegis.cli import cli
from aegis.config import AegisPaths
from aegis.ledger import Ledger
from aegis.policy.engine import default_policies_dir

EXAMPLE = default_policies_dir() / "examples" / "deny-save-schema-downgrade.json"


EXAMPLES = sorted((default_policies_dir() / "examples").glob("*.json"))
VERDICT_PREFIXES = ("auto", "simulate", "deny")


def test_check_prints_the_decision(aegis_home: AegisPaths) -> None:
    result = CliRunner().invoke(cli, ["policy", "check", "--no-record", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout)
    assert decision["verdict"] == "deny" and decision["rule"] == "integrity.save_schema_downgrade"
    assert result.stderr == ""  # --no-record: nothing recorded, nothing said about it
    assert not aegis_home.ledger.exists()


def test_check_records_every_example_in_the_ledger(aegis_home: AegisPaths) -> None:
    """The issue's "done when": every example gets its verdict, and each decision is in the ledger."""
    runner = CliRunner()
    expected: list[tuple[str, dict]] = []
    for path in EXAMPLES:
        verdict = path.stem.split("-", 1)[0]
        assert verdict in VERDICT_PREFIXES, f"{path.name} does not name its expected verdict"
        result = runner.invoke(cli, ["policy", "check", str(path)])
        assert result.exit_code == 0, result.output
        decision = json.loads(result.stdout)  # stdout is the Decision JSON only
        assert decision["verdict"] == verdict, path.name
        seq = len(expected) + 2  # seq 1 is the ledger's genesis record
        assert f"as seq={seq}" in result.stderr and decision["id"] in result.stderr, result.stderr
        expected.append((json.loads(path.read_text())["changeset"]["actor"], decision))

    verified = runner.invoke(cli, ["audit", "verify"])
    assert verified.exit_code == 0 and f"ledger OK: {len(EXAMPLES) + 1} record(s)" in verified.output

    records = [r for r in Ledger(read_only=True).records() if r.kind == "decision"]
    assert [r.payload["decision"]["id"] for r in records] == [d["id"] for _, d in expected]
    assert [r.actor for r in records] == [actor for actor, _ in expected]
    assert len({r.subject for r in records}) == len(EXAMPLES)  # every example has its own changeset id
    for record, (actor, decision) in zip(records, expected, strict=True):
        shown = runner.invoke(cli, ["audit", "show", "--changeset", record.subject])
        assert shown.exit_code == 0, shown.output
        block = shown.output
        assert block.count("\n#") == 0 and f"decision on {record.subject} by {actor}" in block
        assert f"verdict {decision['verdict'].upper()}" in block
        if decision["rule"]:
            assert f"rule {decision['rule']}" in block
        for finding in decision["findings"]:
            assert finding["rule"] in block and finding["message"] in block


def test_check_fails_clearly_when_the_ledger_cannot_record(aegis_home: AegisPaths) -> None:
    aegis_home.ledger.parent.mkdir(parents=True, exist_ok=True)
    aegis_home.ledger.write_bytes(b"this is not a database" * 200)
    result = CliRunner().invoke(cli, ["policy", "check", str(EXAMPLE)])
    assert result.exit_code == 1 and "not recorded in the audit ledger" in result.stderr
    assert result.stdout == ""  # no Decision printed as if it had been recorded
    ok = CliRunner().invoke(cli, ["policy", "check", "--no-record", str(EXAMPLE)])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["verdict"] == "deny"


def test_check_malformed_inputs_exit_2(tmp_path: Path, aegis_home: AegisPaths) -> None:
    runner = CliRunner()
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    result = runner.invoke(cli, ["policy", "check", str(bad_json)])
    assert result.exit_code == 2 and "not valid JSON" in result.output

    doc = json.loads(EXAMPLE.read_text())
    doc["changeset"]["diff"] = {"npc_agression": {"before": 1, "after": 2}}
    doc["context"]["canary_players_share"] = 3
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps(doc))
    result = runner.invoke(cli, ["policy", "check", str(typo)])
    assert result.exit_code == 2 and "invalid changeset" in result.output and "npc_agression" in result.output

    doc = json.loads(EXAMPLE.read_text())
    doc["context"]["canary_players_share"] = 3
    typo.write_text(json.dumps(doc))
    result = runner.invoke(cli, ["policy", "check", str(typo)])
    assert result.exit_code == 2 and "canary_players_share" in result.output

    result = runner.invoke(cli, ["policy", "check", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "cannot read" in result.output


def test_policy_test_command_passes() -> None:
    result = CliRunner().invoke(cli, ["policy", "test"])
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output and "PASS  data.aegis.axioms_test." in result.output
