"""Alerting in Dagster: the slow path's SLO pages into the alert inbox, visible in the UI.

``slo_alerts`` follows ``fct_slo_burn`` (eager automation: a new build of the
mart raises its pages within a sensor tick) and puts every firing multiwindow
page (``SLOBurnRateFast`` / ``SLOBurnRateSlow``) into the same durable inbox the
receiver fills from Alertmanager and CloudWatch; pages that stopped are
resolved.  Its materialization lists the firing pages, so the UI shows them.
The logic lives in :mod:`aegis.alerts.slo_path` (no Dagster there).
"""

import dagster as dg

from aegis import warehouse as warehouse_db
from aegis.alerts.inbox import AlertInbox, default_url
from aegis.alerts.slo_path import raise_slo_alerts
from aegis.changes.slo import SLO_TABLE, SloStateUnknown
from assets.resources.lake import LakeResource

GROUP = "alerting"
SLO_BURN_KEY = dg.AssetKey(SLO_TABLE)
# The warehouse file is locked while dbt builds it; try again shortly.
RETRY = dg.RetryPolicy(max_retries=3, delay=20, backoff=dg.Backoff.LINEAR)
MAX_LISTED = 50


@dg.asset(
    group_name=GROUP,
    deps=[SLO_BURN_KEY],
    automation_condition=dg.AutomationCondition.eager(),
    retry_policy=RETRY,
    kinds={"sqlite"},
    description="SLO pages of fct_slo_burn (latest bucket per shard) raised into the alert inbox; stopped pages resolved.",
)
def slo_alerts(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    home = lake.home_paths()
    if not warehouse_db.available(home.warehouse):  # nothing to retry for: the marts were never built
        raise dg.Failure(
            description=f"SLO state unknown: no warehouse at {home.warehouse} (build the marts first)",
            allow_retries=False,
        )
    inbox = AlertInbox(default_url(home))  # the platform database in prod, AEGIS_HOME/alerts.db locally
    try:
        sync = raise_slo_alerts(home.warehouse, inbox)
    except SloStateUnknown as exc:
        raise dg.Failure(description=f"SLO state unknown: {exc}") from exc
    finally:
        inbox.close()
    for shard, why in sync.unknown.items():
        context.log.warning(f"SLO state of {shard} unknown: {why}")
    rows = [
        f"| {e.alert.target} | {e.alert.labels.get('sli', '')} | {e.alert.name} | {e.alert.value or 0:.1f}x | {e.count} |"
        for e in sync.firing[:MAX_LISTED]
    ]
    table = "| shard | SLI | alert | burn | seen |\n|---|---|---|---|---|\n" + "\n".join(rows)
    return dg.MaterializeResult(
        metadata={
            "shards": len(sync.shards),
            "firing": len(sync.firing),
            "resolved": len(sync.resolved),
            "unknown_shards": len(sync.unknown),
            "pages": dg.MetadataValue.md(table if rows else "no SLO page fires"),
        }
    )


defs = dg.Definitions(assets=[slo_alerts])
