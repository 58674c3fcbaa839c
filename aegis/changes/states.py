"""The changeset state machine: which promotion states may follow which.

The table is the single source of truth for legality; the lifecycle adds guards
that depend on the policy verdict (an ``auto`` verdict may skip the simulation
gate, a ``simulate`` verdict may not). Keeping both in one module means a
reviewer reads every legal path in one place.
"""

from __future__ import annotations

from aegis.domain import PromotionState, Verdict

S = PromotionState

# from -> legal targets. ``policy_checked``/``simulated`` -> ``rolled_back`` covers an
# apply that was attempted, failed its integrity check and was undone before the
# canary ever started; ``canary`` -> ``rolled_back`` is the canary's own undo.
TRANSITIONS: dict[PromotionState, frozenset[PromotionState]] = {
    S.PROPOSED: frozenset({S.POLICY_CHECKED, S.REJECTED}),
    S.POLICY_CHECKED: frozenset({S.SIMULATED, S.CANARY, S.ROLLED_BACK, S.REJECTED}),
    S.SIMULATED: frozenset({S.CANARY, S.ROLLED_BACK, S.REJECTED}),
    S.CANARY: frozenset({S.PROMOTED, S.ROLLED_BACK}),
    S.PROMOTED: frozenset(),
    S.ROLLED_BACK: frozenset(),
    S.REJECTED: frozenset(),
}


class IllegalTransition(ValueError):
    """A transition the state machine (or a verdict guard) does not allow."""

    def __init__(self, changeset_id: str, src: PromotionState, dst: PromotionState, reason: str = "") -> None:
        self.changeset_id = changeset_id
        self.src = PromotionState(src)
        self.dst = PromotionState(dst)
        legal = sorted(t.value for t in TRANSITIONS[self.src])
        legal_txt = ", ".join(legal) if legal else "none (terminal state)"
        why = f": {reason}" if reason else ""
        super().__init__(
            f"changeset {changeset_id}: illegal transition {self.src.value} -> {self.dst.value}{why}; "
            f"legal from {self.src.value}: {legal_txt}"
        )


def legal_targets(src: PromotionState) -> frozenset[PromotionState]:
    return TRANSITIONS[PromotionState(src)]


def check_transition(
    changeset_id: str, src: PromotionState, dst: PromotionState, verdict: Verdict | None = None
) -> None:
    """Raise :class:`IllegalTransition` unless ``src -> dst`` is legal for this verdict.

    Verdict guards: nothing leaves ``proposed`` for anything but ``rejected`` without
    a decision; a ``deny`` leads only to ``rejected``; only ``auto`` may go straight
    from ``policy_checked`` to ``canary`` (an ``auto`` change may still be simulated).
    """
    src, dst = PromotionState(src), PromotionState(dst)
    if dst not in TRANSITIONS[src]:
        raise IllegalTransition(changeset_id, src, dst)
    if src == S.PROPOSED and dst == S.POLICY_CHECKED and verdict is None:
        raise IllegalTransition(changeset_id, src, dst, "no policy decision recorded")
    if verdict == Verdict.DENY and dst not in (S.REJECTED, S.POLICY_CHECKED):
        raise IllegalTransition(changeset_id, src, dst, "the policy verdict is deny")
    if src == S.POLICY_CHECKED and dst == S.CANARY and verdict != Verdict.AUTO:
        raise IllegalTransition(
            changeset_id,
            src,
            dst,
            f"verdict {verdict.value if verdict else None!r} must pass the simulation gate",
        )
    if dst == S.SIMULATED and verdict not in (Verdict.AUTO, Verdict.SIMULATE):
        raise IllegalTransition(changeset_id, src, dst, "no passing policy verdict to simulate under")
