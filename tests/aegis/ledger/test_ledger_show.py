"""``aegis audit show`` explains every record kind in plain words; model promotions are recorded."""

from __future__ import annotations

from click.testing import CliRunner

from aegis.cli import cli
from aegis.config import AegisPaths
from aegis.ledger import Ledger
from aegis.ledger.cli import KIND_WORDS
from aegis.ledger.events import record_model_promotion

SUMMARIES = {
    "token": "issued token tok-1 with scopes read, control for 8h",
    "security": "caller 10.0.0.9 isolated after 40 refused calls",
    "canary": "canary eu-west-2 promoted: deaths non-inferior, abandonment improved",
    "proposal": "proposed cs-9: lower npc_aggression 5% on eu-west-1",
    "reflection": "cs-9 did what the world model predicted (deaths -4%, in its interval)",
    "healing": "incident inc-3: restarted us-east-1 after ShardDown; verified healthy",
}


def _blocks(output: str) -> list[str]:
    return ["#" + b for b in output.lstrip("#").split("\n#")]


def test_every_kind_is_explained(aegis_home: AegisPaths) -> None:
    ledger = Ledger()
    for kind, summary in SUMMARIES.items():
        ledger.append(kind, f"subj-{kind}", {"summary": summary, "detail": {"n": 1}}, actor=f"{kind}-actor")
    ledger.record_transition("cs-9", "proposed", "policy_checked", "lifecycle", reason="policy said auto")
    record_model_promotion(
        "aegis-world-model", "7", "5", "beats champion by 12% MAE", {"mae": 0.1}, ledger=ledger
    )
    ledger.append("custom_kind", "subj-x", {"summary": "something new happened"}, actor="someone")
    ledger.append("note", "subj-y", {"a": 1, "b": "two"}, actor="someone")
    ledger.rotate_key(reason="drill")
    result = CliRunner().invoke(cli, ["audit", "show"])
    assert result.exit_code == 0, result.output
    blocks = _blocks(result.output)
    assert len(blocks) == len(ledger.records()) == 12
    assert (
        blocks[0].startswith("#1 ")
        and "genesis on ledger by aegis-ledger: ledger started: trusts only signing key" in blocks[0]
    )
    for kind, summary in SUMMARIES.items():
        assert any(
            f"{kind} on subj-{kind} by {kind}-actor: {KIND_WORDS[kind]}: {summary}" in b for b in blocks
        ), kind
    assert any(
        "transition on cs-9 by lifecycle: proposed -> policy_checked because policy said auto" in b
        for b in blocks
    )
    assert any(
        "model on aegis-world-model@champion by model-evaluation: world model: aegis-world-model version 7 promoted "
        "to champion (was 5) because beats champion by 12% MAE" in b
        for b in blocks
    )
    assert any("custom_kind on subj-x by someone: something new happened" in b for b in blocks)
    assert any("note on subj-y by someone: a=1, b=two" in b for b in blocks)
    assert "signing key rotated: key " in blocks[-1] and "because drill" in blocks[-1]
    assert set(KIND_WORDS) >= {*SUMMARIES, "decision", "transition", "model", "genesis", "key_rotation"}


def test_model_promotion_record(aegis_home: AegisPaths) -> None:
    record = record_model_promotion("aegis-world-model", "3", None, "first model beats persistence and ridge")
    assert record.kind == "model" and record.subject == "aegis-world-model@champion"
    assert record.payload["previous_version"] is None and record.payload["version"] == "3"
    assert "became the champion (before: none)" in record.payload["summary"]
    shown = CliRunner().invoke(cli, ["audit", "show", "--changeset", "aegis-world-model@champion"])
    assert shown.exit_code == 0 and "version 3 promoted to champion (was none)" in shown.output
    assert Ledger(read_only=True).verify().ok
