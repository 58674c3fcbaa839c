"""The slow path: SLO pages computed by dbt (``fct_slo_burn``) raised as alerts into the inbox.

Prometheus sees the live world; ``fct_slo_burn`` sees the telemetry that
reached the lake, over game time.  Both page on the same SLOs and burn rates
(``policies/data.json`` ``aegis.config.slos``; a test keeps the two in step), and
both land in one inbox, so a consumer never has to look in two places.

One inbox entry per (shard, SLI, alert): the fingerprint leaves out the bucket,
so a page that keeps firing bucket after bucket is one alert whose ``count``
grows, and a page that stops (the latest bucket no longer pages) is resolved.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from aegis import warehouse as warehouse_db
from aegis.alerts.inbox import AlertInbox, InboxEntry
from aegis.changes.slo import SLO_TABLE, SloStateUnknown, WarehouseSloAlerts
from aegis.domain import Alert, AlertStatus, utcnow

SOURCE = "slo"


@dataclass
class SloSync:
    """What one pass over ``fct_slo_burn`` did to the inbox."""

    shards: list[str] = field(default_factory=list)
    firing: list[InboxEntry] = field(default_factory=list)
    resolved: list[InboxEntry] = field(default_factory=list)
    unknown: dict[str, str] = field(default_factory=dict)  # shard -> why its SLO state is unknown


def slo_fingerprint(alert: Alert) -> str:
    key = f"{SOURCE}|{alert.target}|{alert.labels.get('sli', '')}|{alert.name}"
    return "slo-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def warehouse_shards(warehouse: Path) -> list[str]:
    import duckdb

    if not warehouse_db.available(warehouse):
        raise SloStateUnknown(f"no warehouse at {warehouse} (the dbt marts were never built)")
    try:
        con = warehouse_db.connect(warehouse)
    except duckdb.Error as exc:
        raise SloStateUnknown(f"cannot open the warehouse {warehouse} read-only: {exc}") from exc
    try:
        rows = con.execute(f"select distinct shard_id from {SLO_TABLE} order by shard_id").fetchall()
    except duckdb.Error as exc:
        raise SloStateUnknown(f"cannot read {SLO_TABLE} from {warehouse}: {exc}") from exc
    finally:
        con.close()
    return [str(r[0]) for r in rows]


def raise_slo_alerts(warehouse: Path, inbox: AlertInbox) -> SloSync:
    """Put the latest bucket's pages of every shard into ``inbox``; resolve the pages that stopped.

    Raises :class:`SloStateUnknown` when the mart cannot be read at all (the
    caller retries); a shard whose state is unknown keeps its alerts as they are.
    """
    sync = SloSync(shards=warehouse_shards(warehouse))
    provider = WarehouseSloAlerts(warehouse)
    current: list[Alert] = []
    for shard in sync.shards:
        try:
            pages = provider(shard)
        except SloStateUnknown as exc:
            sync.unknown[shard] = str(exc)
            continue
        for alert in pages:
            current.append(alert.model_copy(update={"fingerprint": slo_fingerprint(alert)}))
    if current:
        sync.firing = inbox.put(current, source_payload={"source": SOURCE, "table": SLO_TABLE})
    paging = {a.fingerprint for a in current}
    stopped = [
        e.alert.model_copy(update={"status": AlertStatus.RESOLVED, "ends_at": utcnow()})
        for e in inbox.firing()
        if e.alert.source == SOURCE and e.fingerprint not in paging and e.alert.target not in sync.unknown
    ]
    if stopped:
        sync.resolved = inbox.put(
            stopped, source_payload={"source": SOURCE, "table": SLO_TABLE, "resolved": True}
        )
    return sync
