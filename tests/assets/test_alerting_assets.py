"""The slow path: ``slo_alerts`` (materialized by Dagster) raises the pages of ``fct_slo_burn`` into
the alert inbox, keeps one alert per shard, SLI and page while it keeps firing, resolves it when
the latest bucket stops paging, and fails (to be retried) when the mart cannot be read."""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg
import duckdb

from aegis.alerts.inbox import AlertInbox
from aegis.config import AegisPaths
from assets.alerting import SLO_BURN_KEY, defs, slo_alerts
from assets.resources.lake import LakeResource

BUCKET = datetime(2026, 12, 6, 1, 0)
COLUMNS = (
    "shard_id varchar, region varchar, bucket_start timestamp, sli varchar, page_fast boolean, "
    "page_slow boolean, burn_rate_5m double, burn_rate_30m double, burn_rate_1h double, burn_rate_6h double"
)


def _write_mart(home: AegisPaths, rows: list[tuple[object, ...]]) -> None:
    con = duckdb.connect(str(home.warehouse))
    try:
        con.execute(f"create or replace table fct_slo_burn ({COLUMNS})")
        con.executemany("insert into fct_slo_burn values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    finally:
        con.close()


def _row(shard: str, bucket: datetime, sli: str, fast: bool, slow: bool, burn: float) -> tuple[object, ...]:
    return (shard, "eu", bucket, sli, fast, slow, burn, burn, burn, burn)


def _materialize(home: AegisPaths) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [slo_alerts], resources={"lake": LakeResource(home=str(home.home))}, raise_on_error=False
    )


def test_pages_become_alerts_then_resolve(aegis_home: AegisPaths) -> None:
    older = BUCKET - timedelta(minutes=5)
    _write_mart(
        aegis_home,
        [
            _row("eu-1", older, "latency", False, False, 0.5),  # an older bucket: not what counts
            _row("eu-1", BUCKET, "latency", True, True, 20.0),
            _row("eu-1", BUCKET, "availability", False, False, 0.0),
            _row("eu-2", BUCKET, "latency", False, False, 0.2),
            _row("eu-2", BUCKET, "availability", False, False, 0.0),
        ],
    )
    result = _materialize(aegis_home)
    assert result.success
    meta = result.asset_materializations_for_node("slo_alerts")[0].metadata
    assert meta["firing"].value == 2 and meta["shards"].value == 2 and meta["resolved"].value == 0
    inbox = AlertInbox(f"sqlite:///{aegis_home.alerts_db}")
    firing = inbox.firing()
    assert sorted(e.alert.name for e in firing) == ["SLOBurnRateFast", "SLOBurnRateSlow"]
    assert {(e.alert.target, e.alert.source, e.alert.labels["sli"], e.known) for e in firing} == {
        ("eu-1", "slo", "latency", True)
    }
    assert inbox.firing("eu-2") == []

    # the next bucket still pages fast: the same two alerts, seen again (no new alert per bucket)
    _write_mart(
        aegis_home,
        [
            _row("eu-1", BUCKET + timedelta(minutes=5), "latency", True, False, 16.0),
            _row("eu-2", BUCKET, "latency", False, False, 0.1),
        ],
    )
    assert _materialize(aegis_home).success
    entries = {e.alert.name: e for e in inbox.all()}
    assert len(entries) == 2
    assert (entries["SLOBurnRateFast"].status, entries["SLOBurnRateFast"].count) == ("firing", 2)
    assert entries["SLOBurnRateSlow"].status == "resolved"  # the slow page stopped: resolved, kept

    # the latency is back inside its objective: the fast page resolves too
    _write_mart(aegis_home, [_row("eu-1", BUCKET + timedelta(minutes=10), "latency", False, False, 0.3)])
    assert _materialize(aegis_home).success
    assert inbox.firing() == [] and len(inbox.all()) == 2
    inbox.close()


def test_an_unreadable_mart_fails_the_run_and_changes_nothing(aegis_home: AegisPaths) -> None:
    result = _materialize(aegis_home)  # no warehouse at all
    assert not result.success
    failure = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure and "SLO state unknown" in str(failure[0].event_specific_data)
    assert AlertInbox(f"sqlite:///{aegis_home.alerts_db}").latest_seq() == 0


def test_the_asset_follows_fct_slo_burn() -> None:
    key = dg.AssetKey("slo_alerts")
    assert SLO_BURN_KEY in {d.asset_key for d in slo_alerts.specs_by_key[key].deps}
    assert slo_alerts.automation_conditions_by_key[key] is not None
    assert [a.key for a in defs.assets] == [key]  # type: ignore[union-attr]
