"""The fast decision path: one bundle query per decision, exact numbers, decisions pinned.

``policy_golden_decisions.json`` holds the Decision of every example as the
policies gave it before the performance rewrite (ids and timestamps left out);
a change of the policies that changes a decision must update it on purpose:

    AEGIS_UPDATE_POLICY_GOLDEN=1 .venv/bin/pytest tests/aegis/policy/test_policy_fast_path.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aegis.domain import AutonomousChangeSet, Verdict
from aegis.policy import PolicyContext, PolicyEngine
from aegis.policy.engine import default_policies_dir, input_json

EXAMPLES = sorted((default_policies_dir() / "examples").glob("*.json"))
GOLDEN = Path(__file__).with_name("policy_golden_decisions.json")
UPDATE_ENV = "AEGIS_UPDATE_POLICY_GOLDEN"
VOLATILE = {"id", "decided_at", "policy_version"}


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine()


def _load(path: Path) -> tuple[AutonomousChangeSet, PolicyContext]:
    doc = json.loads(path.read_text())
    return AutonomousChangeSet.model_validate(doc["changeset"]), PolicyContext.model_validate(doc["context"])


def _example(name: str) -> dict:
    return json.loads((default_policies_dir() / "examples" / f"{name}.json").read_text())


def test_every_example_decides_exactly_as_pinned(engine: PolicyEngine) -> None:
    got = {p.stem: engine.decide(*_load(p)).model_dump(mode="json", exclude=VOLATILE) for p in EXAMPLES}
    if os.environ.get(UPDATE_ENV) == "1":
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert set(got) == set(golden), "examples were added or removed: regenerate the golden file"
    for name, decision in got.items():
        assert decision == golden[name], name


def test_one_decision_is_one_bundle_query(engine: PolicyEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    rego = engine._rego
    real_query, real_input = rego.query_bundle, rego.set_input_term
    monkeypatch.setattr(rego, "query_bundle", lambda b: calls.append("query") or real_query(b))
    monkeypatch.setattr(rego, "set_input_term", lambda t: calls.append("input") or real_input(t))
    monkeypatch.setattr(rego, "query", lambda *a: pytest.fail("a decision must not compile a query"))
    decision = engine.decide(*_load(EXAMPLES[0]))
    assert calls == ["input", "query"]
    assert decision.changeset_id


def test_numbers_reach_the_policies_exactly(engine: PolicyEngine) -> None:
    """Values a hair outside a band are denied (regopy's object input would round them to 6 decimals)."""
    doc = _example("auto-small-aggression-tweak")
    changeset = AutonomousChangeSet.model_validate(doc["changeset"])
    limit = json.loads((default_policies_dir() / "data.json").read_text())["aegis"]["config"]["availability"][
        "max_canary_players_share"
    ]
    doc["context"]["canary_players_share"] = limit + 1e-7
    decision = engine.decide(changeset, PolicyContext.model_validate(doc["context"]))
    assert (decision.verdict, decision.rule) == (Verdict.DENY, "availability.blast_radius")
    assert decision.findings[0].numbers["canary_players_share"] == pytest.approx(limit + 1e-7, abs=1e-12)

    doc = _example("auto-small-aggression-tweak")
    doc["context"]["predicted"]["inflation"] = 0.0500001  # band high 0.05
    decision = engine.decide(changeset, PolicyContext.model_validate(doc["context"]))
    assert (decision.verdict, decision.rule) == (Verdict.DENY, "economy.inflation_band")

    doc = _example("auto-small-aggression-tweak")
    doc["context"]["predicted"]["deaths"] = 6.0000001  # band high 6.0
    decision = engine.decide(changeset, PolicyContext.model_validate(doc["context"]))
    assert (decision.verdict, decision.rule) == (Verdict.DENY, "experience.deaths_band")
    assert decision.findings[0].numbers["predicted"] == 6.0000001


def test_edge_of_range_numbers_decide_and_non_finite_is_refused(engine: PolicyEngine) -> None:
    doc = _example("auto-small-aggression-tweak")
    changeset = AutonomousChangeSet.model_validate(doc["changeset"])
    for tiny in (2.2250738585072014e-308, 5e-324, -1e-305):
        doc["context"]["predicted"]["deaths"] = tiny
        decision = engine.decide(changeset, PolicyContext.model_validate(doc["context"]))
        assert decision.verdict == Verdict.AUTO, tiny
    doc["context"]["budget"]["estimated_cost_usd"] = float("inf")
    with pytest.raises(ValueError, match=r"non-finite .* input\.context\.budget\.estimated_cost_usd"):
        engine.decide(changeset, PolicyContext.model_validate(doc["context"]))


def test_input_json_is_compact_and_exact() -> None:
    doc = {"a": [0.1, 1e-9, 12345678901234567890, 3e-320, "e-3"], "b": {"c": -0.0}}
    text = input_json(doc)
    assert json.loads(text) == {"a": [0.1, 1e-9, 12345678901234567890, 0.0, "e-3"], "b": {"c": -0.0}}
    assert " " not in text
    with pytest.raises(ValueError, match=r"input\.a\[1\]"):
        input_json({"a": [1.0, float("nan")]})
