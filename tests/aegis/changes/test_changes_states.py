"""The transition table and its verdict guards."""

from __future__ import annotations

import pytest

from aegis.changes.states import TRANSITIONS, IllegalTransition, check_transition, legal_targets
from aegis.domain import TERMINAL_STATES, PromotionState, Verdict

S = PromotionState

LEGAL = [
    (S.PROPOSED, S.POLICY_CHECKED, Verdict.AUTO),
    (S.PROPOSED, S.REJECTED, None),
    (S.POLICY_CHECKED, S.CANARY, Verdict.AUTO),
    (S.POLICY_CHECKED, S.SIMULATED, Verdict.SIMULATE),
    (S.POLICY_CHECKED, S.SIMULATED, Verdict.AUTO),
    (S.POLICY_CHECKED, S.REJECTED, Verdict.DENY),
    (S.SIMULATED, S.CANARY, Verdict.SIMULATE),
    (S.SIMULATED, S.REJECTED, Verdict.SIMULATE),
    (S.CANARY, S.PROMOTED, Verdict.SIMULATE),
    (S.CANARY, S.ROLLED_BACK, Verdict.AUTO),
    (S.POLICY_CHECKED, S.ROLLED_BACK, Verdict.AUTO),
]


@pytest.mark.parametrize(("src", "dst", "verdict"), LEGAL)
def test_changes_legal_transitions_pass(src: S, dst: S, verdict: Verdict | None) -> None:
    check_transition("cs-1", src, dst, verdict)


@pytest.mark.parametrize(
    ("src", "dst", "verdict", "why"),
    [
        (S.PROPOSED, S.CANARY, Verdict.AUTO, "legal from proposed: policy_checked, rejected"),
        (S.PROPOSED, S.POLICY_CHECKED, None, "no policy decision"),
        (S.POLICY_CHECKED, S.CANARY, Verdict.SIMULATE, "must pass the simulation gate"),
        (S.POLICY_CHECKED, S.CANARY, Verdict.DENY, "deny"),
        (S.POLICY_CHECKED, S.SIMULATED, Verdict.DENY, "deny"),
        (S.SIMULATED, S.PROMOTED, Verdict.SIMULATE, "legal from simulated"),
        (S.PROMOTED, S.ROLLED_BACK, Verdict.AUTO, "terminal state"),
        (S.REJECTED, S.POLICY_CHECKED, Verdict.AUTO, "terminal state"),
        (S.ROLLED_BACK, S.CANARY, Verdict.AUTO, "terminal state"),
    ],
)
def test_changes_illegal_transitions_name_from_to_and_legal_targets(
    src: S, dst: S, verdict: Verdict | None, why: str
) -> None:
    with pytest.raises(IllegalTransition) as info:
        check_transition("cs-9", src, dst, verdict)
    message = str(info.value)
    assert f"{src.value} -> {dst.value}" in message
    assert "cs-9" in message
    assert why in message
    assert info.value.src == src and info.value.dst == dst


def test_changes_terminal_states_have_no_exit_and_every_state_is_in_the_table() -> None:
    assert set(TRANSITIONS) == set(PromotionState)
    for state in TERMINAL_STATES:
        assert legal_targets(state) == frozenset()
    # every non-terminal state can still end somewhere terminal
    for state in set(PromotionState) - TERMINAL_STATES:
        assert legal_targets(state) & (TERMINAL_STATES | {S.CANARY, S.SIMULATED, S.POLICY_CHECKED})
