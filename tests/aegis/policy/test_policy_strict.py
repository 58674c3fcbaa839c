"""Strict policies (issue section 4): unknown operation arguments, out-of-bounds parameters and
unknown targets are denied, whatever else the changeset does and however harmless it looks."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aegis.domain import (
    PARAM_BOUNDS,
    AutonomousChangeSet,
    ChangeKind,
    ExecutionPolicy,
    Operation,
    OperationKind,
    ParamChange,
    ResourceLimits,
    Verdict,
    WorldParams,
)
from aegis.policy import PolicyContext, PolicyEngine, ShardContext
from aegis.policy.engine import default_policies_dir

ENGINE = PolicyEngine()
CONFIG = json.loads((default_policies_dir() / "data.json").read_text())["aegis"]["config"]
ALLOWED_ARGS: dict[str, list[str]] = CONFIG["operations"]["allowed_args"]
BANDS: dict[str, list[float]] = CONFIG["risk"]["autonomy_bands"]
KNOWN = ["eu-west-1", "eu-west-2", "us-east-1"]
DEFAULTS = WorldParams()
ALL_TOOLS = [k.value for k in OperationKind]
ARG_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.text(max_size=20))


def _powerful_context(target: str = "eu-west-1") -> PolicyContext:
    """Everything allowed that the context can allow: only the changeset itself can be the problem."""
    return PolicyContext(
        actor=ExecutionPolicy(
            actor="aegis-proposer",
            allowed_tools=ALL_TOOLS,
            data_scope=["*"],
            limits=ResourceLimits(max_changes_per_hour=10**6, max_cost_usd=10**9),
        ),
        shard=ShardContext(shard_id=target, region="eu-west", players_online=100, players_total=1000),
        canary_players_share=0.01,
        predicted={"inflation": 0.0, "velocity": 1.0, "abandon_rate": 0.1, "deaths": 2.0},
        known_shards=KNOWN,
    )


@st.composite
def small_changes(draw: st.DrawFn) -> dict[str, ParamChange]:
    """In-band parameter changes of at most 1%: auto on their own."""
    out = {}
    for name in draw(st.lists(st.sampled_from(list(PARAM_BOUNDS)), unique=True, max_size=2)):
        before = getattr(DEFAULTS, name)
        factor = draw(st.floats(0.99, 1.01))
        after = [v * factor for v in before] if isinstance(before, list) else before * factor
        out[name] = ParamChange(before=before, after=after)
    return out


@st.composite
def ops_with_unknown_args(draw: st.DrawFn) -> tuple[list[Operation], set[str]]:
    """Operations of any kind, allowed arguments included, and at least one argument not on the list."""
    ops, unknown = [], set()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(sorted(ALLOWED_ARGS)))
        args = {
            name: draw(ARG_VALUES) for name in draw(st.lists(st.sampled_from(ALLOWED_ARGS[kind] or ["_"])))
        }
        args = {k: v for k, v in args.items() if k in ALLOWED_ARGS[kind]}
        extra = draw(
            st.lists(
                st.one_of(
                    st.sampled_from(["wipe_inventory", "delete_inventory", "drop_saves", "force", "sql"]),
                    st.text(min_size=1, max_size=12),
                ).filter(lambda n, k=kind: n not in ALLOWED_ARGS[k]),
                max_size=2,
            )
        )
        args.update({name: draw(ARG_VALUES) for name in extra})
        unknown.update(extra)
        ops.append(Operation(kind=OperationKind(kind), args=args))
    if not unknown:  # at least one: put it on a random operation
        name = draw(
            st.text(min_size=1, max_size=12).filter(lambda n: all(n not in v for v in ALLOWED_ARGS.values()))
        )
        target = draw(st.sampled_from(ops))
        target.args = {**target.args, name: draw(ARG_VALUES)}
    return ops, unknown


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=ops_with_unknown_args(), diff=small_changes(), kind=st.sampled_from(list(ChangeKind)))
def test_no_argument_outside_the_allow_list_reaches_auto(
    case: tuple[list[Operation], set[str]], diff: dict[str, ParamChange], kind: ChangeKind
) -> None:
    ops, _ = case
    changeset = AutonomousChangeSet(target="eu-west-1", kind=kind, diff=diff, operations=ops)
    decision = ENGINE.decide(changeset, _powerful_context())
    assert decision.verdict == Verdict.DENY, decision.explanation
    assert "operations.unknown_args" in {f.rule for f in decision.findings}


@settings(deadline=None)
@given(kind=st.sampled_from(["restart_shard", "scale_shard", "failover"]), reason=st.text(max_size=30))
def test_allowed_arguments_alone_still_run(kind: str, reason: str) -> None:
    """The control: a healing operation with only its listed arguments is auto (the denial above is the args)."""
    args = {name: (reason if name == "reason" else 2) for name in ALLOWED_ARGS[kind]}
    changeset = AutonomousChangeSet(
        target="eu-west-1",
        kind=ChangeKind.HEALING,
        operations=[Operation(kind=OperationKind(kind), args=args)],
    )
    decision = ENGINE.decide(changeset, _powerful_context())
    assert decision.verdict == Verdict.AUTO, decision.explanation


@st.composite
def out_of_band(draw: st.DrawFn) -> tuple[str, ParamChange]:
    name = draw(st.sampled_from(list(PARAM_BOUNDS)))
    lo_hard, hi_hard = PARAM_BOUNDS[name]
    lo, hi = BANDS[name]
    # rego-cpp compares numbers to about 15 significant digits (2.0000000000000004 == 2 there): a value
    # within that of a band edge counts as on the edge, so "outside" starts a hair (1e-9 relative) beyond it.
    edge = 1e-9
    outside = st.one_of(
        st.floats(lo_hard, lo - edge * max(abs(lo), 1.0)) if lo > lo_hard else st.nothing(),
        st.floats(hi + edge * max(abs(hi), 1.0), hi_hard),
    )
    before = getattr(DEFAULTS, name)
    if isinstance(before, list):
        after = list(before)
        after[draw(st.integers(0, len(after) - 1))] = draw(outside)
    else:
        after = draw(outside)
    return name, ParamChange(before=before, after=after)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=out_of_band())
def test_a_parameter_outside_its_band_is_denied_not_simulated(case: tuple[str, ParamChange]) -> None:
    name, change = case
    changeset = AutonomousChangeSet(target="eu-west-1", diff={name: change})
    decision = ENGINE.decide(changeset, _powerful_context())
    assert decision.verdict == Verdict.DENY, decision.explanation
    assert decision.rule == "bounds.outside_autonomy_band"


@settings(deadline=None)
@given(target=st.text(min_size=1, max_size=20).map(str.strip).filter(lambda t: t and t not in KNOWN))
def test_an_unknown_target_is_refused(target: str) -> None:
    changeset = AutonomousChangeSet(
        target=target, diff={"npc_aggression": ParamChange(before=1.0, after=1.01)}
    )
    decision = ENGINE.decide(changeset, _powerful_context(target))
    assert decision.verdict == Verdict.DENY and decision.rule == "security.unknown_target", (
        decision.explanation
    )


def test_policy_data_covers_the_domain() -> None:
    """Every world parameter has an autonomy band inside its hard bounds; every operation kind an allow-list."""
    assert set(BANDS) == set(PARAM_BOUNDS)
    for name, (lo, hi) in BANDS.items():
        lo_hard, hi_hard = PARAM_BOUNDS[name]
        assert lo_hard <= lo < hi <= hi_hard, name
    assert {k.value for k in OperationKind} <= set(ALLOWED_ARGS), "add allowed_args for every OperationKind"
