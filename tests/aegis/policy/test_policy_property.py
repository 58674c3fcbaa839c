"""Property: nothing that deletes or invalidates active player data, or breaks save compatibility,
is ever allowed, whatever else the changeset does and whoever proposes it."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aegis.domain import (
    PARAM_BOUNDS,
    SAVE_SCHEMA_VERSION,
    Alert,
    AutonomousChangeSet,
    Axiom,
    ChangeKind,
    ExecutionPolicy,
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


@st.composite
def harmful_op(draw: st.DrawFn) -> Operation:
    kind = draw(st.sampled_from(list(OperationKind)))
    harm = draw(st.sampled_from(["inventory", "quests", "downgrade", "jump"]))
    if harm == "inventory":
        return Operation(kind=kind, deletes_active_inventory=draw(st.integers(1, 10**6)))
    if harm == "quests":
        return Operation(kind=kind, invalidates_active_quests=draw(st.integers(1, 10**6)))
    if harm == "downgrade":
        return Operation(kind=kind, save_schema_to=draw(st.integers(1, SAVE_SCHEMA_VERSION - 1)))
    return Operation(kind=kind, save_schema_to=draw(st.integers(SAVE_SCHEMA_VERSION + 2, 100)))


@st.composite
def harmful_changesets(draw: st.DrawFn) -> tuple[AutonomousChangeSet, PolicyContext]:
    ops = draw(st.lists(benign_ops, max_size=3))
    ops.insert(draw(st.integers(0, len(ops))), draw(harmful_op()))
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
    )
    return changeset, context


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(harmful_changesets())
def test_player_data_loss_is_always_denied_by_integrity(
    case: tuple[AutonomousChangeSet, PolicyContext],
) -> None:
    changeset, context = case
    decision = ENGINE.decide(changeset, context)
    assert decision.verdict == Verdict.DENY
    assert decision.axiom == Axiom.INTEGRITY
    assert decision.rule is not None and decision.rule.startswith("integrity.")
