"""``aegis policy check`` and ``aegis policy test``."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from aegis.cli import cli
from aegis.policy.engine import default_policies_dir

EXAMPLE = default_policies_dir() / "examples" / "deny-save-schema-downgrade.json"


def test_check_prints_the_decision() -> None:
    result = CliRunner().invoke(cli, ["policy", "check", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    decision = json.loads(result.output)
    assert decision["verdict"] == "deny" and decision["rule"] == "integrity.save_schema_downgrade"


def test_check_malformed_inputs_exit_2(tmp_path: Path) -> None:
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
