"""The default firing-alerts provider over a small ``fct_slo_burn`` mart in DuckDB."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from aegis.changes.slo import (
    FAST_ALERT,
    FAST_BURN_THRESHOLD,
    SLOW_ALERT,
    SLOW_BURN_THRESHOLD,
    SloStateUnknown,
    WarehouseSloAlerts,
)
from aegis.domain import AutonomousChangeSet, Severity, Verdict
from aegis.policy.context import PolicyContext
from aegis.policy.engine import PolicyEngine, default_policies_dir

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BUCKET = timedelta(minutes=5)
COLUMNS = (
    "shard_id varchar, region varchar, bucket_start timestamp, sli varchar, slo_target double, "
    "total_events bigint, good_events bigint, bad_events bigint, error_ratio double, "
    "burn_rate_5m double, burn_rate_30m double, burn_rate_1h double, burn_rate_6h double, burn_rate_3d double, "
    "page_fast boolean, page_slow boolean, ticket boolean"
)


def _row(shard: str, bucket: int, sli: str, b5: float, b30: float, b1h: float, b6h: float) -> tuple:
    """One mart row; the page columns computed as the mart computes them."""
    return (
        shard, "eu-west", (T0 + bucket * BUCKET).replace(tzinfo=None), sli, 0.999, 100, 90, 10, 0.1,
        b5, b30, b1h, b6h, 0.5,
        b1h > 14.4 and b5 > 14.4, b6h > 6 and b30 > 6, False,
    )  # fmt: skip


def make_warehouse(path: Path, rows: list[tuple]) -> Path:
    con = duckdb.connect(str(path))
    con.execute(f"create table fct_slo_burn ({COLUMNS})")
    if rows:
        con.executemany(f"insert into fct_slo_burn values ({', '.join('?' * 17)})", rows)
    con.close()
    return path


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    return make_warehouse(
        tmp_path / "warehouse.duckdb",
        [
            # eu-1 burned an hour ago, is healthy in its latest bucket: nothing fires now
            _row("eu-1", 0, "availability", 30.0, 20.0, 20.0, 8.0),
            _row("eu-1", 12, "availability", 0.0, 0.5, 1.0, 2.0),
            _row("eu-1", 12, "latency", 0.0, 0.0, 0.0, 0.0),
            # us-2 is crashing now: the availability page is fast, the latency page slow
            _row("us-2", 11, "availability", 0.0, 0.0, 0.0, 0.0),
            _row("us-2", 12, "availability", 30.0, 25.0, 20.0, 5.0),
            _row("us-2", 12, "latency", 2.0, 7.5, 5.0, 6.5),
        ],
    )


def test_latest_bucket_pages_become_alerts(warehouse: Path) -> None:
    provider = WarehouseSloAlerts(warehouse)
    assert provider("eu-1") == []  # an old page in an earlier bucket does not count
    alerts = {(a.name, a.labels["sli"]): a for a in provider("us-2")}
    assert set(alerts) == {(FAST_ALERT, "availability"), (SLOW_ALERT, "latency")}
    fast = alerts[(FAST_ALERT, "availability")]
    assert (fast.source, fast.target, fast.status.value) == ("slo", "us-2", "firing")
    assert fast.severity == Severity.CRITICAL
    assert fast.value == 20.0 and fast.threshold == FAST_BURN_THRESHOLD  # min of the 1h and 5m burn
    assert fast.starts_at == T0 + 12 * BUCKET
    slow = alerts[(SLOW_ALERT, "latency")]
    assert slow.value == 6.5 and slow.threshold == SLOW_BURN_THRESHOLD
    assert provider("us-2")[0].id == provider("us-2")[0].id  # stable ids: a decision replays exactly


def test_alert_names_are_the_policy_slo_alert_names() -> None:
    data = json.loads((default_policies_dir() / "data.json").read_text())
    names = data["aegis"]["config"]["availability"]["slo_alert_names"]
    assert FAST_ALERT in names and SLOW_ALERT in names


def test_provider_alerts_make_the_policy_deny(warehouse: Path) -> None:
    doc = json.loads((default_policies_dir() / "examples" / "auto-small-aggression-tweak.json").read_text())
    engine = PolicyEngine()
    for target, verdict in (("eu-1", Verdict.AUTO), ("us-2", Verdict.DENY)):
        cs = AutonomousChangeSet.model_validate({**doc["changeset"], "target": target})
        context = PolicyContext.model_validate(
            {
                **doc["context"],
                "shard": {**doc["context"]["shard"], "shard_id": target},
                "known_shards": ["eu-1", "us-2"],  # the warehouse fixture's shards
            }
        )
        context.firing_alerts = WarehouseSloAlerts(warehouse)(target)
        decision = engine.decide(cs, context)
        assert decision.verdict == verdict, decision.explanation
        if verdict == Verdict.DENY:
            assert decision.rule == "availability.slo_burn_firing"


def test_unknown_slo_state_is_an_error_not_silence(tmp_path: Path, warehouse: Path) -> None:
    with pytest.raises(SloStateUnknown, match="no warehouse at"):
        WarehouseSloAlerts(tmp_path / "missing.duckdb")("us-2")
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    with pytest.raises(SloStateUnknown, match="no fct_slo_burn mart"):
        WarehouseSloAlerts(empty)("us-2")
    with pytest.raises(SloStateUnknown, match="no rows for shard ap-9"):
        WarehouseSloAlerts(warehouse)("ap-9")
    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    con.execute("create table fct_slo_burn (shard_id varchar, bucket_start timestamp, sli varchar)")
    con.close()
    with pytest.raises(SloStateUnknown, match="lacks column"):
        WarehouseSloAlerts(old)("us-2")
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(b"not a duckdb file" * 100)
    with pytest.raises(SloStateUnknown, match="cannot open"):
        WarehouseSloAlerts(garbage)("us-2")


def test_the_provider_never_writes_the_warehouse(warehouse: Path) -> None:
    before = warehouse.read_bytes()
    WarehouseSloAlerts(warehouse)("us-2")
    assert warehouse.read_bytes() == before
