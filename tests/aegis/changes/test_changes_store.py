"""The changeset store: idempotent proposals, compare-and-set transitions, the journal, the outbox."""

from __future__ import annotations

import pytest

from aegis.changes.states import IllegalTransition
from aegis.changes.store import ChangeSetConflict, ChangeSetNotFound, ChangeSetStore
from aegis.domain import AutonomousChangeSet, Decision, ParamChange, PromotionState, Verdict

S = PromotionState


def cs(cs_id: str = "cs-store-1", after: float = 1.05) -> AutonomousChangeSet:
    return AutonomousChangeSet(
        id=cs_id, target="eu-west-1", diff={"drop_rate": ParamChange(before=1.0, after=after)}
    )


def decision(cs_id: str, verdict: Verdict = Verdict.AUTO) -> Decision:
    return Decision(changeset_id=cs_id, verdict=verdict, risk_score=0.1)


@pytest.fixture
def store(aegis_home) -> ChangeSetStore:
    s = ChangeSetStore()
    yield s
    s.close()


def test_changes_store_proposal_is_idempotent_and_conflicts_are_refused(store: ChangeSetStore) -> None:
    rec, created = store.add(cs())
    assert created and rec.state == S.PROPOSED
    again, created = store.add(cs())
    assert not created and again.id == rec.id
    with pytest.raises(ChangeSetConflict, match="different content"):
        store.add(cs(after=1.1))
    with pytest.raises(ChangeSetNotFound, match="cs-missing"):
        store.get("cs-missing")


def test_changes_store_transitions_are_compare_and_set(store: ChangeSetStore) -> None:
    store.add(cs())
    with pytest.raises(IllegalTransition, match="no policy decision"):
        store.transition("cs-store-1", S.PROPOSED, S.POLICY_CHECKED, "no decision yet")
    d = decision("cs-store-1")
    store.update_fields("cs-store-1", decision=d)
    t = store.transition("cs-store-1", S.PROPOSED, S.POLICY_CHECKED, "checked")
    assert t is not None and t.dst == S.POLICY_CHECKED
    # the same transition again is a no-op, not a second row
    assert store.transition("cs-store-1", S.PROPOSED, S.POLICY_CHECKED, "checked") is None
    assert len(store.transitions("cs-store-1")) == 1
    # from a state it is not in: refused, naming where it is
    with pytest.raises(IllegalTransition, match="it is policy_checked"):
        store.transition("cs-store-1", S.SIMULATED, S.CANARY, "wrong source")
    rec = store.get("cs-store-1")
    assert rec.state == S.POLICY_CHECKED and rec.decision == d and rec.reason == "checked"
    # the outbox: unrecorded until marked
    assert [x.id for x in store.transitions(unrecorded=True)] == [t.id]
    store.mark_transition_recorded(t.id, 7)
    assert store.transitions(unrecorded=True) == []


def test_changes_store_journal_records_intent_then_outcome(store: ChangeSetStore) -> None:
    store.add(cs())
    step = store.write_intent("cs-store-1", "apply", {"if_match": 3})
    assert step.status == "intent" and step.attempts == 1
    assert [s.step for s in store.steps(status="intent")] == ["apply"]
    again = store.write_intent("cs-store-1", "apply", {"if_match": 3})
    assert again.attempts == 2
    store.write_outcome("cs-store-1", "apply", {"config_after": {"version": 4}})
    done = store.step("cs-store-1", "apply")
    assert (
        done.status == "done"
        and done.outcome == {"config_after": {"version": 4}}
        and done.intent == {"if_match": 3}
    )
    with pytest.raises(ValueError, match="already completed"):
        store.write_intent("cs-store-1", "apply", {"if_match": 4})
    with pytest.raises(ValueError, match="no intent"):
        store.write_outcome("cs-store-1", "restore", {})


def test_changes_store_decisions_outbox(store: ChangeSetStore) -> None:
    store.add(cs())
    d = decision("cs-store-1", Verdict.SIMULATE)
    store.add_decision(d)
    store.add_decision(d)  # idempotent
    assert [x.id for x in store.unrecorded_decisions()] == [d.id]
    store.mark_decision_recorded(d.id, 1)
    assert store.unrecorded_decisions() == []
