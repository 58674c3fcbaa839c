"""The policy engine against the documented examples, and its loading/versioning behaviour."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aegis.domain import AutonomousChangeSet, Axiom, ParamChange, Verdict
from aegis.policy import PolicyContext, PolicyEngine, PolicyError
from aegis.policy.engine import default_policies_dir

POLICIES = default_policies_dir()
EXAMPLES = sorted((POLICIES / "examples").glob("*.json"))


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine()


def _load(path: Path) -> tuple[AutonomousChangeSet, PolicyContext]:
    doc = json.loads(path.read_text())
    return AutonomousChangeSet.model_validate(doc["changeset"]), PolicyContext.model_validate(doc["context"])


def test_every_axiom_has_a_deny_example() -> None:
    engine = PolicyEngine()
    denied_axioms = {engine.decide(*_load(p)).axiom for p in EXAMPLES if p.name.startswith("deny-")}
    assert denied_axioms == set(Axiom)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_verdict_matches_its_name(engine: PolicyEngine, path: Path) -> None:
    changeset, context = _load(path)
    decision = engine.decide(changeset, context)
    expected = Verdict(path.name.split("-", 1)[0])
    assert decision.verdict == expected, decision.explanation
    assert decision.changeset_id == changeset.id
    assert decision.policy_version == engine.version
    if expected == Verdict.AUTO:
        assert decision.axiom is None and decision.findings == []
    else:
        # the decision names the highest-ranked finding of its own verdict
        same = [f for f in decision.findings if f.verdict == expected]
        assert same and decision.axiom == min(f.axiom for f in same)
        assert decision.rule in {f.rule for f in same if f.axiom == decision.axiom}
        assert decision.rule in decision.explanation


def test_deny_finding_carries_the_numbers(engine: PolicyEngine) -> None:
    decision = engine.decide(*_load(POLICIES / "examples" / "deny-over-budget.json"))
    finding = decision.findings[0]
    assert finding.rule == "cost.over_budget"
    assert finding.numbers["estimated_cost_usd"] == 40.0
    assert finding.numbers["remaining_usd"] == pytest.approx(20.0)


def test_integrity_outranks_lower_axioms(engine: PolicyEngine) -> None:
    decision = engine.decide(*_load(POLICIES / "examples" / "deny-integrity-beats-security.json"))
    assert decision.axiom == Axiom.INTEGRITY
    assert {f.axiom for f in decision.findings if f.verdict == Verdict.DENY} >= {
        Axiom.INTEGRITY,
        Axiom.SECURITY,
    }


def test_risk_grows_with_the_delta(engine: PolicyEngine) -> None:
    changeset, context = _load(POLICIES / "examples" / "auto-small-aggression-tweak.json")
    scores = []
    for after in (1.02, 1.2, 1.6, 2.5):
        cs = changeset.model_copy(update={"diff": {"npc_aggression": ParamChange(before=1.0, after=after)}})
        scores.append(engine.decide(cs, context).risk_score)
    assert scores == sorted(scores) and scores[0] < scores[-1]


def _copy_policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target, ignore=shutil.ignore_patterns("__pycache__", "examples"))
    return target


def test_thresholds_come_from_data_and_change_the_version(tmp_path: Path) -> None:
    target = _copy_policies(tmp_path)
    data = json.loads((target / "data.json").read_text())
    data["aegis"]["config"]["availability"]["max_canary_players_share"] = 0.01
    (target / "data.json").write_text(json.dumps(data))
    stricter = PolicyEngine(target)
    assert stricter.version != PolicyEngine().version
    decision = stricter.decide(*_load(POLICIES / "examples" / "auto-small-aggression-tweak.json"))
    assert decision.verdict == Verdict.DENY and decision.rule == "availability.blast_radius"


def test_env_var_selects_the_policy_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = _copy_policies(tmp_path)
    monkeypatch.setenv("AEGIS_POLICIES", str(target))
    assert PolicyEngine().policies_dir == target.resolve()


def test_broken_policies_are_a_clear_error(tmp_path: Path) -> None:
    target = _copy_policies(tmp_path)
    (target / "broken.rego").write_text("package aegis.broken\n\nallow if {\n")
    with pytest.raises(PolicyError, match="do not compile"):
        PolicyEngine(target)
    with pytest.raises(PolicyError, match="does not exist"):
        PolicyEngine(tmp_path / "nowhere")


def test_rego_tests_pass(engine: PolicyEngine) -> None:
    report = engine.test()
    assert report.error is None
    assert report.ok, [r for r in report.results if not r.passed]
    assert report.passed >= 15


def test_rego_runner_reports_failures_and_crashes(tmp_path: Path) -> None:
    target = _copy_policies(tmp_path)
    (target / "extra_test.rego").write_text(
        "package aegis.extra_test\n\nimport rego.v1\n\ntest_fails if {\n\t1 == 2\n}\n\ntest_holds if {\n\ttrue\n}\n"
    )
    # rego-cpp 1.5 segfaults on `with input as` over a computed rule: the runner survives it
    (target / "crash_test.rego").write_text(
        "package aegis.crash_test\n\nimport rego.v1\n\n"
        'test_crashes if {\n\tdata.aegis.decision.result.verdict == "auto" with input as {"changeset": {}}\n}\n'
    )
    report = PolicyEngine(target).test()
    by_name = {r.name: r for r in report.results}
    assert not report.ok
    assert by_name["test_fails"].passed is False
    assert by_name["test_crashes"].passed is False and "crashed" in by_name["test_crashes"].detail
    assert by_name["test_holds"].passed is True
    assert by_name["test_small_parameter_change_is_auto"].passed is True
