"""Property: nothing that deletes or invalidates active player data, or breaks save compatibility,
is ever allowed, whatever else the changeset does and whoever proposes it."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from aegis.domain import (
    PARAM_BOUNDS,
    SAVE_SCHEMA_VERSION,
    Alert,
    AutonomousChangeSet,
    Axiom,
    ChangeKind,
    ExecutionPolicy,
    Integrity,
    Operation,
    OperationKind,
    ParamChange,
    ResourceLimits,
    Verdict,
    WorldParams,
)
from aegis.policy import BudgetContext, PolicyContext, PolicyEngine, ShardContext

ENGINE = PolicyEngine()
DEFAULTS = WorldParams()
ALL_TOOLS = [k.value for k in OperationKind]


@st.composite
def param_changes(draw: st.DrawFn) -> dict[str, ParamChange]:
    out = {}
    for name in draw(st.lists(st.sampled_from(list(PARAM_BOUNDS)), unique=True, max_size=4)):
        lo, hi = PARAM_BOUNDS[name]
        before = getattr(DEFAULTS, name)
        value = st.floats(lo, hi, allow_nan=False)
        after = [draw(value) for _ in before] if isinstance(before, list) else draw(value)
        out[name] = ParamChange(before=before, after=after)
    return out


benign_ops = st.builds(
    Operation,
    kind=st.sampled_from(list(OperationKind)),
    save_schema_to=st.sampled_from([None, SAVE_SCHEMA_VERSION]),
)


INTEGRITY_FIELDS = ("players", "active_inventory_items", "active_quests", "save_schema_version")
NON_MIGRATION_KINDS = [k for k in OperationKind if k != OperationKind.MIGRATE_SAVE_SCHEMA]


@st.composite
def harmful_op(draw: st.DrawFn) -> tuple[Operation, str]:
    """One operation that harms player data, and the integrity rule that must catch it."""
    kind = draw(st.sampled_from(list(OperationKind)))
    harm = draw(st.sampled_from(["inventory", "quests", "downgrade", "jump", "unmigrated"]))
    if harm == "inventory":
        op = Operation(kind=kind, deletes_active_inventory=draw(st.integers(1, 10**6)))
        return op, "integrity.deletes_active_inventory"
    if harm == "quests":
        op = Operation(kind=kind, invalidates_active_quests=draw(st.integers(1, 10**6)))
        return op, "integrity.invalidates_active_quests"
    if harm == "downgrade":
        op = Operation(kind=kind, save_schema_to=draw(st.integers(1, SAVE_SCHEMA_VERSION - 1)))
        return op, "integrity.save_schema_downgrade"
    if harm == "jump":
        op = Operation(kind=kind, save_schema_to=draw(st.integers(SAVE_SCHEMA_VERSION + 2, 100)))
        return op, "integrity.save_schema_jump"
    # a compatible one-step schema move, but not through the migration operation
    op = Operation(kind=draw(st.sampled_from(NON_MIGRATION_KINDS)), save_schema_to=SAVE_SCHEMA_VERSION + 1)
    return op, "integrity.schema_change_without_migration"


@st.composite
def integrity_pair(draw: st.DrawFn, lose: bool) -> tuple[Integrity, Integrity, str | None]:
    """Integrity of a snapshot before and after the change; with ``lose``, some count drops."""
    before = {
        "players": draw(st.integers(1, 10**5)),
        "active_inventory_items": draw(st.integers(1, 10**6)),
        "active_quests": draw(st.integers(1, 10**5)),
        "save_schema_version": SAVE_SCHEMA_VERSION,
    }
    after = {k: v + draw(st.integers(0, 3)) for k, v in before.items()}  # never less: no loss
    lost = None
    if lose:
        lost = draw(st.sampled_from(INTEGRITY_FIELDS))
        after[lost] = draw(st.integers(1 if lost == "save_schema_version" else 0, before[lost] - 1))
    sums = {"active_inventory_checksum": "a" * 16, "active_quest_checksum": "b" * 16}
    return (
        Integrity(shard_id="eu-1", **before, **sums),
        Integrity(shard_id="eu-1", **after, **sums),
        f"integrity.{lost}_lost" if lost else None,
    )


@st.composite
def harmful_changesets(draw: st.DrawFn) -> tuple[AutonomousChangeSet, PolicyContext, set[str]]:
    """A changeset and context holding at least one harm, and the rules that must name each harm."""
    ops = draw(st.lists(benign_ops, max_size=3))
    expected: set[str] = set()
    observed_loss = draw(st.booleans())
    if not observed_loss or draw(st.booleans()):
        op, rule = draw(harmful_op())
        ops.insert(draw(st.integers(0, len(ops))), op)
        expected.add(rule)
    integrity: dict[str, Integrity] = {}
    if observed_loss or draw(st.booleans()):
        before, after, lost_rule = draw(integrity_pair(lose=observed_loss))
        integrity = {"integrity_before": before, "integrity_after": after}
        if lost_rule:
            expected.add(lost_rule)
    powerful = draw(st.booleans())
    actor = ExecutionPolicy(
        actor="aegis-proposer",
        allowed_tools=ALL_TOOLS if powerful else draw(st.lists(st.sampled_from(ALL_TOOLS), unique=True)),
        data_scope=["*"]
        if powerful
        else draw(st.lists(st.sampled_from(["eu-1", "eu-west", "us-east"]), max_size=2)),
        limits=ResourceLimits(max_changes_per_hour=10**6, max_cost_usd=10**9)
        if powerful
        else ResourceLimits(),
    )
    changeset = AutonomousChangeSet(
        target="eu-1",
        kind=draw(st.sampled_from(list(ChangeKind))),
        diff=draw(param_changes()),
        operations=ops,
    )
    alerts = [Alert(name="SLOBurnRateFast", target="eu-1")] if draw(st.booleans()) else []
    context = PolicyContext(
        actor=actor,
        shard=ShardContext(region="eu-west", players_online=draw(st.integers(0, 10**5))),
        canary_players_share=draw(st.floats(0, 1)),
        firing_alerts=alerts,
        predicted=draw(
            st.dictionaries(
                st.sampled_from(["inflation", "velocity", "abandon_rate", "deaths"]), st.floats(-1, 10)
            )
        ),
        budget=BudgetContext(
            monthly_budget_usd=draw(st.floats(0, 1e6)), estimated_cost_usd=draw(st.floats(0, 100))
        ),
        changes_in_last_hour=draw(st.integers(0, 10)),
        **integrity,
    )
    return changeset, context, expected


@settings(
    max_examples=10 * settings().max_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(harmful_changesets())
def test_player_data_loss_is_always_denied_by_integrity(
    case: tuple[AutonomousChangeSet, PolicyContext, set[str]],
) -> None:
    changeset, context, expected = case
    decision = ENGINE.decide(changeset, context)
    assert decision.verdict == Verdict.DENY
    assert decision.axiom == Axiom.INTEGRITY
    assert decision.rule is not None and decision.rule.startswith("integrity.")
    # each injected harm is named by its own rule, not merely denied for another reason
    assert expected <= {f.rule for f in decision.findings}, decision.explanation
    for rule in expected:
        event(rule)  # `pytest --hypothesis-show-statistics` shows every integrity rule is exercised


@pytest.mark.parametrize(
    ("case", "rule"),
    [
        ("unmigrated", "integrity.schema_change_without_migration"),
        ("loss", "integrity.active_quests_lost"),
    ],
)
def test_the_new_strategies_reach_their_rules(case: str, rule: str) -> None:
    """The two harms the strategies were missing, each on an otherwise harmless change."""
    ops, integrity = [], {}
    if case == "unmigrated":
        ops = [Operation(kind=OperationKind.RESTART_SHARD, save_schema_to=SAVE_SCHEMA_VERSION + 1)]
    else:
        sums = {"active_inventory_checksum": "a", "active_quest_checksum": "b"}
        base = {"shard_id": "eu-1", "players": 10, "active_inventory_items": 5, "save_schema_version": 3}
        integrity = {
            "integrity_before": Integrity(**base, active_quests=4, **sums),
            "integrity_after": Integrity(**base, active_quests=3, **sums),
        }
    changeset = AutonomousChangeSet(target="eu-1", diff={}, operations=ops)
    context = PolicyContext(
        actor=ExecutionPolicy(actor="aegis-proposer", allowed_tools=ALL_TOOLS, data_scope=["*"]),
        shard=ShardContext(region="eu-west"),
        **integrity,
    )
    decision = ENGINE.decide(changeset, context)
    assert (decision.verdict, decision.axiom, decision.rule) == (Verdict.DENY, Axiom.INTEGRITY, rule)
