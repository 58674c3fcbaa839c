"""Progression integrity checks: exact after a restore, drift-aware after a live apply."""

from __future__ import annotations

from aegis.changes.integrity import Observation, check_exact, check_live
from aegis.domain import AutonomousChangeSet, Integrity, Operation, OperationKind, ParamChange


def integ(
    players: int = 300, items: int = 5000, quests: int = 150, schema: int = 3, ck: str = "a"
) -> Integrity:
    return Integrity(
        shard_id="eu-west-1",
        players=players,
        active_inventory_items=items,
        active_inventory_checksum=f"inv-{ck}",
        active_quests=quests,
        active_quest_checksum=f"q-{ck}",
        save_schema_version=schema,
    )


CS = AutonomousChangeSet(target="eu-west-1", diff={"drop_rate": ParamChange(before=1.0, after=1.05)})


def test_changes_exact_check_passes_only_on_identical_integrity() -> None:
    assert check_exact(integ(), integ()).ok
    report = check_exact(integ(), integ(ck="b"))
    assert not report.ok
    assert any("active_inventory_checksum" in v for v in report.violations)
    assert not check_exact(integ(), integ(items=4999)).ok


def test_changes_live_check_is_exact_when_no_tick_ran() -> None:
    before = Observation(integ(), 100.0, tick=0)
    assert check_live(CS, None, before, Observation(integ(), 100.0, tick=0)).ok
    report = check_live(CS, None, before, Observation(integ(ck="z"), 100.0, tick=0))
    assert not report.ok and report.mode == "exact"


def test_changes_live_check_tolerates_natural_drift_but_not_a_loss() -> None:
    baseline = Observation(integ(items=5010, quests=152), 98.0)
    before = Observation(integ(), 100.0, tick=0)
    # play moved things a little: checksums differ, counts drift within the calibrated rate
    ok = check_live(CS, baseline, before, Observation(integ(items=4990, quests=149, ck="p"), 102.0, tick=1))
    assert ok.ok, ok.violations
    # 600 items gone in two minutes is no natural drift (turnover 3%/min * 2 min = 300)
    lost = check_live(CS, baseline, before, Observation(integ(items=4400, ck="p"), 102.0, tick=1))
    assert not lost.ok
    assert "active_inventory_items dropped by 600" in lost.violations[0]
    assert lost.allowed_drop["active_inventory_items"] == 300
    # the allowance grows with elapsed game time, never beyond the whole count
    late = check_live(CS, baseline, before, Observation(integ(items=4400, ck="p"), 110.0, tick=1))
    assert late.ok and late.allowed_drop["active_inventory_items"] == 1500
    assert (
        check_live(CS, None, before, Observation(integ(items=0, ck="p"), 1000.0, tick=1)).allowed_drop[
            "active_inventory_items"
        ]
        == 5000
    )


def test_changes_live_check_counts_declared_removals_and_save_schema() -> None:
    structural = CS.model_copy(
        update={"operations": [Operation(kind=OperationKind.REMOVE_ITEM, deletes_active_inventory=500)]}
    )
    before = Observation(integ(), 100.0, tick=0)
    after = Observation(integ(items=4450, ck="p"), 101.0, tick=1)
    assert check_live(structural, None, before, after).ok
    assert not check_live(CS, None, before, after).ok
    downgraded = check_live(CS, None, before, Observation(integ(schema=2, ck="p"), 101.0, tick=1))
    assert any("save schema went down" in v for v in downgraded.violations)
    migrated = CS.model_copy(
        update={"operations": [Operation(kind=OperationKind.MIGRATE_SAVE_SCHEMA, save_schema_to=4)]}
    )
    assert check_live(migrated, None, before, Observation(integ(schema=4, ck="p"), 101.0, tick=1)).ok
    assert not check_live(CS, None, before, Observation(integ(schema=4, ck="p"), 101.0, tick=1)).ok
