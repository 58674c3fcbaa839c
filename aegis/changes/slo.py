"""Firing SLO burn alerts for a shard, read from the warehouse mart ``fct_slo_burn``.

The availability axiom denies every non-healing change to a target whose SLO
burns (``availability.slo_burn_firing``), but it can only see the alerts it is
handed. This is the default provider the lifecycle hands it: the latest 5-minute
bucket of the target in ``fct_slo_burn`` (DuckDB, opened read-only), one
:class:`~aegis.domain.Alert` per SLI whose multiwindow page fires:
``page_fast`` -> ``SLOBurnRateFast``, ``page_slow`` -> ``SLOBurnRateSlow`` (the
names in ``policies/data.json`` ``slo_alert_names``). ``ticket`` is not a page
and gives no alert.

When the SLO state cannot be read (no warehouse file, no mart, the file locked
by a dbt build, no rows for the shard) the provider raises
:class:`SloStateUnknown` instead of answering "no alerts": the caller decides
what an unknown state means and says so in its trace. The lifecycle lets the
policy decide with no SLO alerts, logs a warning and writes "SLO state unknown:
<why>" into the reason of the policy-checked transition (and so into the
ledger); it does not block, because a warehouse that was never built (a fresh
install, a test) would otherwise stop every change, healing included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aegis import warehouse as warehouse_db
from aegis.domain import Alert, AlertStatus, Severity

# A policy decision waits this long for a warehouse build to finish before the SLO state is "unknown".
SLO_READ_WAIT_S = 60.0
SLO_TABLE = "fct_slo_burn"
FAST_ALERT = "SLOBurnRateFast"
SLOW_ALERT = "SLOBurnRateSlow"
# The burn-rate thresholds of the mart's page columns (dbt/models/marts/fct_slo_burn.sql):
# page_fast = burn_rate_1h > 14.4 and burn_rate_5m > 14.4; page_slow = burn_rate_6h > 6 and burn_rate_30m > 6.
FAST_BURN_THRESHOLD = 14.4
SLOW_BURN_THRESHOLD = 6.0
REQUIRED_COLUMNS = frozenset(
    {
        "shard_id",
        "region",
        "bucket_start",
        "sli",
        "page_fast",
        "page_slow",
        "burn_rate_5m",
        "burn_rate_30m",
        "burn_rate_1h",
        "burn_rate_6h",
    }
)
LATEST_BUCKET_SQL = f"""
select sli, region, bucket_start, page_fast, page_slow,
       burn_rate_5m, burn_rate_30m, burn_rate_1h, burn_rate_6h
from {SLO_TABLE}
where shard_id = $shard
  and bucket_start = (select max(bucket_start) from {SLO_TABLE} where shard_id = $shard)
order by sli
"""


class SloStateUnknown(RuntimeError):
    """The SLO state of a target cannot be read; the message says why."""


def _aware(ts: Any) -> datetime:
    if not isinstance(ts, datetime):
        raise SloStateUnknown(f"{SLO_TABLE}.bucket_start is not a timestamp (got {type(ts).__name__})")
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


@dataclass(frozen=True)
class WarehouseSloAlerts:
    """``provider(target) -> list[Alert]`` over ``fct_slo_burn`` in the DuckDB file ``warehouse``."""

    warehouse: Path

    def __call__(self, target: str) -> list[Alert]:
        rows = self._latest_rows(target)
        alerts: list[Alert] = []
        for row in rows:
            bucket = _aware(row["bucket_start"])
            for fired, name, severity, windows, threshold in (
                (row["page_fast"], FAST_ALERT, Severity.CRITICAL, ("1h", "5m"), FAST_BURN_THRESHOLD),
                (row["page_slow"], SLOW_ALERT, Severity.WARNING, ("6h", "30m"), SLOW_BURN_THRESHOLD),
            ):
                if not fired:
                    continue
                # both windows exceed the threshold; the smaller one is the margin the page holds by
                value = min(float(row[f"burn_rate_{w}"]) for w in windows)
                alerts.append(
                    Alert(
                        id=f"alert-slo-{target}-{row['sli']}-{name}-{bucket:%Y%m%dT%H%M}",
                        source="slo",
                        name=name,
                        severity=severity,
                        status=AlertStatus.FIRING,
                        target=target,
                        labels={
                            "sli": str(row["sli"]),
                            "region": str(row["region"]),
                            "bucket_start": bucket.isoformat(),
                            "windows": "/".join(windows),
                        },
                        value=value,
                        threshold=threshold,
                        starts_at=bucket,
                        summary=(
                            f"{row['sli']} error budget of {target} burning {value:.1f}x over "
                            f"{' and '.join(windows)} (page above {threshold}x)"
                        ),
                    )
                )
        return alerts

    def _latest_rows(self, target: str) -> list[dict[str, Any]]:
        import duckdb

        if not warehouse_db.available(self.warehouse):
            raise SloStateUnknown(f"no warehouse at {self.warehouse} (the dbt marts were never built)")
        try:
            con = warehouse_db.connect(self.warehouse, wait_s=SLO_READ_WAIT_S)
        except duckdb.Error as exc:
            raise SloStateUnknown(f"cannot open the warehouse {self.warehouse} read-only: {exc}") from exc
        try:
            columns = {
                r[0]
                for r in con.execute(
                    "select column_name from information_schema.columns where table_name = ?", [SLO_TABLE]
                ).fetchall()
            }
            if not columns:
                raise SloStateUnknown(f"the warehouse {self.warehouse} has no {SLO_TABLE} mart")
            missing = sorted(REQUIRED_COLUMNS - columns)
            if missing:
                raise SloStateUnknown(f"{SLO_TABLE} in {self.warehouse} lacks column(s) {', '.join(missing)}")
            cur = con.execute(LATEST_BUCKET_SQL, {"shard": target})
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        except duckdb.Error as exc:
            raise SloStateUnknown(f"cannot read {SLO_TABLE} from {self.warehouse}: {exc}") from exc
        finally:
            con.close()
        if not rows:
            raise SloStateUnknown(f"{SLO_TABLE} has no rows for shard {target}")
        return rows
