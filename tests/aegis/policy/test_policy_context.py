"""PolicyContext.merged_with: a file's stated facts complete the measured context, never relax it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aegis.domain import Alert, AutonomousChangeSet, ExecutionPolicy, Verdict
from aegis.policy import BudgetContext, PolicyContext, PolicyEngine, ShardContext
from aegis.policy.context import load_given_context
from aegis.policy.engine import default_policies_dir
from aegis.policy.strict_json import StrictJsonError

EXAMPLES = default_policies_dir() / "examples"


def _given(name: str) -> PolicyContext:
    return PolicyContext.model_validate(json.loads((EXAMPLES / f"{name}.json").read_text())["context"])


def _measured(**update: object) -> PolicyContext:
    base = PolicyContext(
        actor=ExecutionPolicy(actor="aegis-proposer", allowed_tools=["set_params"], data_scope=["*"]),
        shard=ShardContext(shard_id="eu-west-1", region="eu-west", players_online=290, players_total=300),
        canary_players_share=0.08,
        known_shards=["eu-west-1", "eu-west-2"],
    )
    return base.model_copy(update=update)


def test_measured_facts_are_never_relaxed() -> None:
    alert = Alert(name="SLOBurnRateFast", target="eu-west-1")
    measured = _measured(
        firing_alerts=[alert],
        changes_in_last_hour=3,
        canary_players_share=0.2,
        predicted={"deaths": 9.0},
        budget=BudgetContext(spent_usd=900, estimated_cost_usd=1, monthly_budget_usd=1000),
    )
    given = _given("auto-small-aggression-tweak")  # says: no alerts, 1 change, share 0.05, deaths 3.1
    merged = measured.merged_with(given)
    assert merged.firing_alerts == [alert]
    assert merged.changes_in_last_hour == 3 and merged.canary_players_share == 0.2
    assert merged.predicted["deaths"] == 9.0 and merged.predicted["inflation"] == given.predicted["inflation"]
    assert merged.budget.spent_usd == 900 and merged.budget.estimated_cost_usd == 2.5
    assert merged.budget.monthly_budget_usd == 1000
    assert merged.shard == measured.shard and merged.known_shards == measured.known_shards
    assert merged.actor == given.actor


def test_the_files_facts_decide_what_the_world_cannot_measure() -> None:
    engine = PolicyEngine()
    for name, rule in [
        ("deny-over-budget", "cost.over_budget"),
        ("deny-slo-burn-firing", "availability.slo_burn_firing"),
        ("deny-rate-limit", "security.rate_limit"),
        ("deny-economy-inflation-band", "economy.inflation_band"),
    ]:
        doc = json.loads((EXAMPLES / f"{name}.json").read_text())
        cs = AutonomousChangeSet.model_validate(doc["changeset"])
        decision = engine.decide(cs, _measured().merged_with(_given(name)))
        assert (decision.verdict, decision.rule) == (Verdict.DENY, rule), name


def test_load_given_context_reads_example_files_strictly(tmp_path: Path) -> None:
    assert load_given_context(EXAMPLES / "deny-over-budget.json") == _given("deny-over-budget")
    bare = tmp_path / "bare.json"
    bare.write_text('{"target": "eu-west-1"}')
    assert load_given_context(bare) is None
    dup = tmp_path / "dup.json"
    dup.write_text('{"context": {"changes_in_last_hour": 9, "changes_in_last_hour": 0}}')
    with pytest.raises(StrictJsonError, match="duplicate key"):
        load_given_context(dup)
