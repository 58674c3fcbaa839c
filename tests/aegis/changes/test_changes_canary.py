"""Lifecycle and store additions for the canary loop: the canary spec (migration-safe), the loop-event
outbox to the ledger (exactly once across crashes), and ``aegis changeset promote``."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from aegis.changes.cli import changeset as changeset_cli
from aegis.changes.lifecycle import bucket_ceil
from aegis.changes.store import ChangeSetStore, changesets_t, metadata
from aegis.domain import AutonomousChangeSet, ParamChange, PromotionState
from aegis.world.client import GameBackendClient

S = PromotionState
IN_BAND = {"inflation": 0.0, "velocity": 1.0, "abandon_rate": 0.1, "deaths": 1.0}
NEW_TABLES = {"canary_specs", "loop_events", "reflections"}


def _cs(target: str, cs_id: str, after: float = 1.01) -> AutonomousChangeSet:
    return AutonomousChangeSet(
        id=cs_id,
        target=target,
        diff={"sink_multiplier": ParamChange(before=1.0, after=after)},
        rationale="test",
    )


def test_changes_bucket_ceil_is_the_first_whole_bucket_under_the_change() -> None:
    t = datetime(2026, 1, 1, 10, 7, 30, tzinfo=UTC)
    assert bucket_ceil(t) == datetime(2026, 1, 1, 10, 10, tzinfo=UTC)
    on = datetime(2026, 1, 1, 10, 10, tzinfo=UTC)
    assert bucket_ceil(on) == on


def test_changes_store_created_before_the_loop_opens_and_gains_the_new_tables(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    old = [t for name, t in metadata.tables.items() if name not in NEW_TABLES]
    metadata.create_all(engine, tables=old)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            changesets_t.insert().values(
                id="cs-old", target="eu-west-1", state="canary", changeset_json=_cs("eu-west-1", "cs-old").model_dump_json(),
                created_at=now, updated_at=now,
            )
        )  # fmt: skip
    assert NEW_TABLES.isdisjoint(sa.inspect(engine).get_table_names())
    engine.dispose()
    store = ChangeSetStore(url)
    assert set(sa.inspect(store.engine).get_table_names()) >= NEW_TABLES
    assert store.get("cs-old").state == S.CANARY
    assert store.canary_spec("cs-old") is None
    spec = store.put_canary_spec("cs-old", "eu-west-1", ["eu-west-2", "eu-west-3"], 24, {"hypothesis": "h"})
    assert spec.controls == ["eu-west-2", "eu-west-3"] and spec.start is None and spec.max_buckets == 24
    # a second put returns the first (a retried launch never rewrites the controls)
    assert store.put_canary_spec("cs-old", "eu-west-1", ["us-east-1"], 3).controls == [
        "eu-west-2",
        "eu-west-3",
    ]
    store.update_canary_spec("cs-old", start=now, judgement={"verdict": "continue"}, judged_at=now)
    got = store.canary_spec("cs-old")
    assert got.start == now and got.judgement == {"verdict": "continue"}
    with pytest.raises(ValueError, match="own control"):
        store.put_canary_spec("cs-x", "a", ["a"], 3)
    with pytest.raises(ValueError, match="max_buckets"):
        store.put_canary_spec("cs-x", "a", ["b"], 0)
    with pytest.raises(ValueError, match="unknown canary spec field"):
        store.update_canary_spec("cs-old", controls=["x"])
    store.close()


def test_changes_loop_events_reach_the_ledger_exactly_once_across_crashes(make_lifecycle) -> None:
    lc = make_lifecycle()
    assert lc.record_event("cs-ev", "canary", "k1", "Canary cs-ev judged promote.", verdict="promote")
    assert not lc.record_event("cs-ev", "canary", "k1", "Canary cs-ev judged promote.", verdict="promote")
    # a crash after the store queued an event and before the ledger got it
    lc.store.add_event("cs-ev", "canary", "k2", {"summary": "Promotion wave 1 applied."})
    # a crash after the ledger got an event and before the store marked it
    lc.ledger.append("canary", "cs-ev", {"summary": "Wave 2.", "event_key": "k3"}, "aegis-lifecycle")
    lc.store.add_event("cs-ev", "canary", "k3", {"summary": "Wave 2."})
    lc.resume()
    records = lc.ledger.records("cs-ev")
    assert sorted(r.payload["event_key"] for r in records) == ["k1", "k2", "k3"]
    assert all(r.payload["summary"] for r in records)
    assert not lc.store.events(unrecorded=True)
    assert lc.ledger.verify().ok


def test_changes_launch_canary_records_spec_start_and_start_event(make_lifecycle, world) -> None:
    lc = make_lifecycle(predict=lambda cs: IN_BAND)
    rec = lc.launch_canary(
        _cs("us-east-4", "cs-launch-1"), ["us-east-3", "us-east-2"], 12, {"hypothesis": "sink more"}
    )
    assert rec.state == S.CANARY, rec.reason
    spec = lc.store.canary_spec("cs-launch-1")
    applied = datetime.fromisoformat(rec.config_after["updated_at"])
    assert spec.start == bucket_ceil(applied)
    started = [r for r in lc.ledger.records("cs-launch-1") if r.payload.get("event") == "canary_started"]
    assert len(started) == 1 and "hypothesis: sink more" in started[0].payload["summary"]
    lc.launch_canary(_cs("us-east-4", "cs-launch-1"), ["eu-west-1"], 3)  # idempotent
    assert lc.store.canary_spec("cs-launch-1").controls == ["us-east-3", "us-east-2"]
    assert (
        len([r for r in lc.ledger.records("cs-launch-1") if r.payload.get("event") == "canary_started"]) == 1
    )
    lc.roll_back("cs-launch-1", "test cleanup")


def test_changes_cli_promote_by_hand(make_lifecycle, world) -> None:
    lc = make_lifecycle(predict=lambda cs: IN_BAND)
    rec = lc.run(_cs("eu-west-4", "cs-hand-1", after=1.02))
    assert rec.state == S.CANARY, rec.reason
    runner = CliRunner()
    out = runner.invoke(
        changeset_cli,
        ["promote", "cs-hand-1", "--url", world.url, "--no-rollout", "--json"],
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["state"] == "promoted"
    assert GameBackendClient(world.url).get_config("eu-west-4").params.sink_multiplier == 1.02
    assert lc.store.get("cs-hand-1").state == S.PROMOTED
    assert [r["changeset_id"] for r in lc.store.reflections()] == ["cs-hand-1"]
    # promoting again is a no-op; an unknown id or a changeset that is not a canary is bad input
    again = runner.invoke(changeset_cli, ["promote", "cs-hand-1", "--url", world.url, "--no-rollout"])
    assert again.exit_code == 0, again.output
    missing = runner.invoke(changeset_cli, ["promote", "cs-nope", "--url", world.url])
    assert missing.exit_code == 2 and "no changeset with id 'cs-nope'" in missing.output
    lc.propose(
        _cs("eu-west-4", "cs-hand-2", after=1.03).model_copy(
            update={"diff": {"sink_multiplier": ParamChange(before=1.02, after=1.03)}}
        )
    )
    not_canary = runner.invoke(changeset_cli, ["promote", "cs-hand-2", "--url", world.url])
    assert not_canary.exit_code == 2 and "proposed" in not_canary.output
