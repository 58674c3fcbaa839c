"""The policy decision in the real lifecycle: SLO alerts from the warehouse, and no crash window to the ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from aegis.changes.slo import WarehouseSloAlerts
from aegis.changes.store import ChangeSetStore
from aegis.domain import AutonomousChangeSet, ParamChange, PromotionState, Verdict

S = PromotionState
IN_BAND = {"inflation": 0.0, "velocity": 1.0, "abandon_rate": 0.1, "deaths": 1.0}


def _change(target: str, cs_id: str) -> AutonomousChangeSet:
    return AutonomousChangeSet(
        id=cs_id, target=target, diff={"sink_multiplier": ParamChange(before=1.0, after=1.01)}, rationale="t"
    )


def _ledger_decisions(lc, cs_id: str) -> list[str]:
    return [r.payload["decision"]["id"] for r in lc.ledger.records(cs_id) if r.kind == "decision"]


def test_slo_burn_in_the_warehouse_denies_the_change(make_lifecycle, tmp_path: Path) -> None:
    from test_changes_slo import _row, make_warehouse

    wh = make_warehouse(
        tmp_path / "wh.duckdb",
        [
            _row("eu-west-2", 3, "availability", 40.0, 30.0, 25.0, 4.0),
            _row("us-east-2", 3, "latency", 0, 0, 0, 0),
        ],
    )
    lc = make_lifecycle(firing_alerts=WarehouseSloAlerts(wh), predict=lambda cs: IN_BAND)
    lc.propose(_change("eu-west-2", "cs-slo-burn"))
    decision = lc.check("cs-slo-burn")
    assert decision.verdict == Verdict.DENY and decision.rule == "availability.slo_burn_firing"
    assert decision.findings[0].numbers["alert"] == "SLOBurnRateFast"
    assert lc.get("cs-slo-burn").state == S.REJECTED
    # a shard whose latest bucket is healthy is not blocked
    lc.propose(_change("us-east-2", "cs-slo-healthy"))
    assert lc.check("cs-slo-healthy").verdict != Verdict.DENY
    reasons = [t.reason for t in lc.store.transitions("cs-slo-healthy")]
    assert reasons and "SLO state unknown" not in reasons[0]


def test_unknown_slo_state_is_logged_and_in_the_ledger_trace(
    make_lifecycle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lc = make_lifecycle(
        firing_alerts=WarehouseSloAlerts(tmp_path / "never-built.duckdb"), predict=lambda cs: IN_BAND
    )
    lc.propose(_change("ap-southeast-2", "cs-slo-unknown"))
    with caplog.at_level("WARNING", logger="aegis.changes.lifecycle"):
        decision = lc.check("cs-slo-unknown")
    assert decision.verdict != Verdict.DENY  # unknown does not block; it is said, not hidden
    assert any("SLO state unknown" in m and "never-built.duckdb" in m for m in caplog.messages)
    checked = next(r for r in lc.ledger.records("cs-slo-unknown") if r.kind == "transition")
    assert checked.payload["to"] == "policy_checked"
    assert "SLO state unknown: no warehouse at" in checked.payload["reason"]


def test_cli_and_resource_default_to_the_warehouse_provider(aegis_home, monkeypatch) -> None:
    from aegis.changes.cli import _build
    from assets.resources.changes import ChangeSetResource

    lc = _build("http://127.0.0.1:9", "http", None, None, None)
    assert lc.config.firing_alerts == WarehouseSloAlerts(aegis_home.warehouse)
    res = ChangeSetResource(backend_url="http://127.0.0.1:9", simulator="http").lifecycle()
    assert res.config.firing_alerts == WarehouseSloAlerts(aegis_home.warehouse)
    lc.store.close()
    res.store.close()


def test_decision_saved_without_its_outbox_row_still_reaches_the_ledger(make_lifecycle) -> None:
    """What a kill -9 between the two writes of an older version left behind is repaired by check()."""
    lc = make_lifecycle(predict=lambda cs: IN_BAND)
    lc.propose(_change("eu-west-3", "cs-crash-1"))
    context, _note = lc._context(lc.get("cs-crash-1").changeset)
    decision = lc.policy.decide(lc.get("cs-crash-1").changeset, context)
    lc.store.update_fields("cs-crash-1", decision=decision)  # the first write; the process dies here
    assert lc.store.unrecorded_decisions() == []  # the outbox never heard of it

    again = make_lifecycle(predict=lambda cs: IN_BAND)
    assert again.check("cs-crash-1").id == decision.id
    again.check("cs-crash-1")
    assert _ledger_decisions(again, "cs-crash-1") == [decision.id]  # exactly once
    assert again.ledger.verify().ok


def test_decision_and_outbox_row_are_written_atomically(make_lifecycle, monkeypatch) -> None:
    """A crash while queueing the decision leaves no decision on the changeset either: check() decides anew."""
    lc = make_lifecycle(predict=lambda cs: IN_BAND)
    lc.propose(_change("us-east-3", "cs-crash-2"))
    original = ChangeSetStore._queue_decision

    def die(conn, decision):  # the process is killed inside the transaction
        raise KeyboardInterrupt("kill -9")

    monkeypatch.setattr(ChangeSetStore, "_queue_decision", staticmethod(die))
    with pytest.raises(KeyboardInterrupt):
        lc.check("cs-crash-2")
    monkeypatch.setattr(ChangeSetStore, "_queue_decision", staticmethod(original))
    rec = lc.get("cs-crash-2")
    assert rec.decision is None and rec.state == S.PROPOSED  # nothing half-written
    decision = make_lifecycle(predict=lambda cs: IN_BAND).check("cs-crash-2")
    assert _ledger_decisions(lc, "cs-crash-2") == [decision.id]
