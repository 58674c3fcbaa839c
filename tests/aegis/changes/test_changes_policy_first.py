"""The policy judges a changeset before its executability, and a file's stated facts reach the policy.

Against a real world server over HTTP (the module's own, from conftest): a
changeset with operations the backend cannot execute (only set_params is) is
proposed, gets its policy decision recorded in the store and the ledger, and
only then, when the verdict would let it proceed, is rejected as not
executable; nothing reaches the backend. ``LifecycleConfig.given_context``
completes the measured context with facts the world cannot measure, never
relaxing a measured one, and ``aegis changeset run`` passes a file's context.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aegis.changes.states import IllegalTransition
from aegis.domain import (
    Alert,
    AutonomousChangeSet,
    ChangeKind,
    ExecutionPolicy,
    Operation,
    OperationKind,
    ParamChange,
    PromotionState,
    ResourceLimits,
    Verdict,
)
from aegis.policy.context import BudgetContext, PolicyContext, ShardContext
from aegis.world.client import GameBackendClient

S = PromotionState
IN_BAND = {"inflation": 0.0, "velocity": 1.0, "abandon_rate": 0.1, "deaths": 1.0}
STRUCTURAL_TOOLS = ExecutionPolicy(
    actor="aegis-proposer", allowed_tools=["set_params", "restart_shard", "retire_quest"], data_scope=["*"]
)

SPENDER = ExecutionPolicy(  # may spend 50 USD a change; the default actor may spend nothing
    actor="aegis-proposer",
    allowed_tools=["set_params"],
    data_scope=["*"],
    limits=ResourceLimits(max_cost_usd=50.0),
)


def restart(target: str, cs_id: str, **update: object) -> AutonomousChangeSet:
    cs = AutonomousChangeSet(
        id=cs_id,
        target=target,
        operations=[Operation(kind=OperationKind.RESTART_SHARD)],
        rationale="test",
    )
    return cs.model_copy(update=update)


def sink_change(target: str, cs_id: str) -> AutonomousChangeSet:
    return AutonomousChangeSet(
        id=cs_id,
        target=target,
        diff={"sink_multiplier": ParamChange(before=1.0, after=1.01)},
        rationale="test",
    )


def given(**update: object) -> PolicyContext:
    """What an example file states: an actor, a shard, and the facts under test."""
    base = PolicyContext(
        actor=ExecutionPolicy(actor="aegis-proposer", allowed_tools=["set_params"], data_scope=["*"]),
        shard=ShardContext(shard_id="eu-west-1", region="eu-west"),
    )
    return base.model_copy(update=update)


def ledger_story(lc, cs_id: str) -> list[tuple[str, str]]:
    return [
        (r.kind, r.payload.get("to") or r.payload.get("decision", {}).get("verdict", ""))
        for r in lc.ledger.records(cs_id)
    ]


def test_a_denied_structural_change_gets_its_decision_and_nothing_runs(make_lifecycle, world) -> None:
    lc = make_lifecycle(predict=lambda cs: IN_BAND)  # the default actor may only set params
    client = GameBackendClient(world.url)
    before = client.get_config("eu-west-1")
    rec = lc.run(restart("eu-west-1", "cs-pf-deny"))
    assert rec.state == S.REJECTED
    assert rec.decision is not None and rec.decision.verdict == Verdict.DENY
    assert rec.reason.startswith("denied by security.tool_not_allowed"), rec.reason
    assert "not executable" not in rec.reason
    assert lc.store.steps("cs-pf-deny") == []
    assert client.get_config("eu-west-1").version == before.version
    assert ledger_story(lc, "cs-pf-deny") == [
        ("decision", "deny"),
        ("transition", "policy_checked"),
        ("transition", "rejected"),
    ]


@pytest.mark.parametrize(
    ("cs", "verdict"),
    [
        (restart("eu-west-2", "cs-pf-structural"), Verdict.SIMULATE),  # structural tuning: the gate
        (restart("eu-west-3", "cs-pf-healing", kind=ChangeKind.HEALING), Verdict.AUTO),
        (
            restart(
                "eu-west-4",
                "cs-pf-mixed",
                diff={"sink_multiplier": ParamChange(before=1.0, after=1.01)},
            ),
            Verdict.SIMULATE,
        ),
    ],
    ids=["structural", "healing", "diff-and-operation"],
)
def test_a_passing_verdict_is_recorded_then_refused_as_not_executable(
    make_lifecycle, world, cs: AutonomousChangeSet, verdict: Verdict
) -> None:
    lc = make_lifecycle(actor_policies={"aegis-proposer": STRUCTURAL_TOOLS}, predict=lambda cs: IN_BAND)
    client = GameBackendClient(world.url)
    before = client.get_config(cs.target)
    assert lc.propose(cs).state == S.PROPOSED  # stored: the policy has not judged it yet
    decision = lc.check(cs.id)
    assert decision.verdict == verdict
    rec = lc.get(cs.id)
    assert rec.state == S.REJECTED and rec.decision == decision
    assert "not executable" in rec.reason and "restart_shard" in rec.reason and verdict.value in rec.reason
    assert ledger_story(lc, cs.id) == [
        ("decision", verdict.value),
        ("transition", "policy_checked"),
        ("transition", "rejected"),
    ]
    # nothing reached the backend, and every step stays idempotent
    assert lc.store.steps(cs.id) == []
    assert client.get_config(cs.target).version == before.version
    assert lc.check(cs.id).id == decision.id
    assert lc.run(cs).state == S.REJECTED
    assert all(r.id != cs.id for r in lc.resume())  # a terminal state: nothing left to finish
    with pytest.raises(IllegalTransition, match="rejected -> simulated"):
        lc.simulate(cs.id)
    with pytest.raises(IllegalTransition, match="rejected -> canary"):
        lc.start_canary(cs.id)
    assert len(lc.ledger.records(cs.id)) == 3
    assert lc.ledger.verify().ok


def test_a_crash_between_the_decision_and_the_refusal_is_finished_on_resume(make_lifecycle, world) -> None:
    crashing = make_lifecycle(actor_policies={"aegis-proposer": STRUCTURAL_TOOLS})

    def killed(changeset_id: str) -> str | None:
        raise RuntimeError("killed after the policy_checked transition")

    crashing._refuse_unexecutable = killed  # the process dies right after the decision was stored
    with pytest.raises(RuntimeError, match="killed"):
        crashing.run(restart("us-east-1", "cs-pf-crash"))
    assert crashing.get("cs-pf-crash").state == S.POLICY_CHECKED

    healthy = make_lifecycle(actor_policies={"aegis-proposer": STRUCTURAL_TOOLS})
    [rec] = [r for r in healthy.resume() if r.id == "cs-pf-crash"]
    assert rec.state == S.REJECTED and "not executable" in rec.reason
    assert healthy.store.steps("cs-pf-crash") == []
    assert [k for k, _ in ledger_story(healthy, "cs-pf-crash")] == ["decision", "transition", "transition"]


def test_given_context_states_what_the_world_cannot_measure(make_lifecycle, world) -> None:
    burn = Alert(name="SLOBurnRateFast", target="us-east-2", severity="critical")
    cases = [
        ("cs-pf-alert", given(firing_alerts=[burn], predicted=IN_BAND), "availability.slo_burn_firing"),
        (
            "cs-pf-budget",
            given(
                predicted=IN_BAND,
                budget=BudgetContext(spent_usd=999.0, estimated_cost_usd=5.0, monthly_budget_usd=1000.0),
            ),
            "cost.over_budget",
        ),
    ]
    for cs_id, stated, rule in cases:
        lc = make_lifecycle(given_context=stated, actor_policies={"aegis-proposer": SPENDER})
        lc.propose(sink_change("us-east-2", cs_id))
        decision = lc.check(cs_id)
        assert (decision.verdict, decision.rule) == (Verdict.DENY, rule), cs_id
        assert lc.get(cs_id).state == S.REJECTED

    # the file's predictions fill the gap the world model leaves: auto instead of the gate
    blind = make_lifecycle()
    blind.propose(sink_change("us-east-3", "cs-pf-blind"))
    assert blind.check("cs-pf-blind").verdict == Verdict.SIMULATE
    told = make_lifecycle(given_context=given(predicted=IN_BAND))
    told.propose(sink_change("us-east-4", "cs-pf-told"))
    assert told.check("cs-pf-told").verdict == Verdict.AUTO


def test_given_context_never_relaxes_a_measured_fact_nor_grants_tools(make_lifecycle, world) -> None:
    measured_burn = Alert(name="SLOBurnRateFast", target="ap-southeast-1", severity="critical")
    lc = make_lifecycle(
        given_context=given(firing_alerts=[], predicted=IN_BAND, changes_in_last_hour=0),
        firing_alerts=lambda target: [measured_burn] if target == "ap-southeast-1" else [],
    )
    lc.propose(sink_change("ap-southeast-1", "cs-pf-measured"))
    decision = lc.check("cs-pf-measured")
    assert (decision.verdict, decision.rule) == (Verdict.DENY, "availability.slo_burn_firing")

    # a file cannot grant its own actor the restart tool: the configured (least-privilege) actor decides
    generous = given(actor=STRUCTURAL_TOOLS, predicted=IN_BAND)
    lc = make_lifecycle(given_context=generous)
    lc.propose(restart("ap-southeast-2", "cs-pf-grant"))
    decision = lc.check("cs-pf-grant")
    assert (decision.verdict, decision.rule) == (Verdict.DENY, "security.tool_not_allowed")


def test_cli_run_passes_the_files_context_and_reads_files_strictly(tmp_path: Path, aegis_home, world) -> None:
    from aegis.changes.cli import changeset

    runner = CliRunner()
    burn = Alert(name="SLOBurnRateFast", target="ap-southeast-3", severity="critical")
    doc = {
        "changeset": sink_change("ap-southeast-3", "cs-pf-cli").model_dump(mode="json"),
        "context": given(firing_alerts=[burn], predicted=IN_BAND).model_dump(mode="json"),
    }
    example = tmp_path / "example.json"
    example.write_text(json.dumps(doc))
    result = runner.invoke(changeset, ["run", str(example), "--url", world.url, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["verdict"], summary["state"]) == ("deny", "rejected"), summary
    assert "availability.slo_burn_firing" in summary["reason"]

    def refused(path: Path, *extra: str) -> str:
        result = runner.invoke(changeset, ["run", str(path), "--url", world.url, *extra])
        assert result.exit_code == 2, result.output
        return result.output

    dup = tmp_path / "dup.json"
    dup.write_text('{"target": "ap-southeast-4", "target": "eu-west-1"}')
    assert "duplicate key 'target'" in refused(dup)
    nan = tmp_path / "nan.json"
    nan.write_text('{"target": "ap-southeast-4", "diff": {"sink_multiplier": {"before": 1, "after": NaN}}}')
    assert "NaN" in refused(nan)
    bad_context = tmp_path / "bad-context.json"
    bad_context.write_text(json.dumps({**doc, "context": {**doc["context"], "canary_players_share": 2}}))
    assert "canary_players_share" in refused(bad_context)
    actor = tmp_path / "actor.json"
    actor.write_text('{"actor": "aegis-proposer", "allowed_tools": ["set_params"], "actor": "root"}')
    assert "duplicate key 'actor'" in refused(example, "--actor-policy", str(actor))
    assert stored_ids() == {"cs-pf-cli"}  # nothing refused was stored


def stored_ids() -> set[str]:
    from aegis.changes.store import ChangeSetStore

    store = ChangeSetStore()
    try:
        return {r.id for r in store.changesets()}
    finally:
        store.close()
