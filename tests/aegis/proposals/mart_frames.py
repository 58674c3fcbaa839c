"""Small hand-made marts in a real DuckDB file: the shapes dbt builds, with signals planted on purpose.

Imported by the proposal tests here and by tests/assets/test_proposals_assets.py.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from aegis.worldmodel.synthetic import synthetic_kpis

REGIONS = ("eu-west", "us-east")


def kpi_rows(
    shard_regions: dict[str, str], hours: float = 14, seed: int = 0, explore: bool = False
) -> pd.DataFrame:
    """fct_shard_kpis rows (synthetic world dynamics) renamed onto the given shards and regions."""
    rows = synthetic_kpis(shards=len(shard_regions), hours=hours, seed=seed, explore=explore)
    names = {f"shard-{i:02d}": s for i, s in enumerate(shard_regions)}
    rows["shard_id"] = rows["shard_id"].map(names)
    rows["region"] = rows["shard_id"].map(shard_regions)
    return rows


def abandonment(late_region: str | None = "eu-west", regions: tuple[str, ...] = REGIONS) -> pd.DataFrame:
    """fct_quest_abandonment: every region alike, except stage 5 of ``late_region`` (30% vs 15%)."""
    rows = []
    for region in regions:
        for stage, completions, abandons in [
            (1, 900, 90),
            (2, 850, 95),
            (3, 800, 110),
            (4, 700, 120),
            (5, 600, 106),
        ]:
            if region == late_region and stage == 5:
                abandons = 257  # 257 / (257 + 600) = 30%
            rows.append(
                {
                    "stage": stage,
                    "region": region,
                    "starts": completions + abandons + 50,
                    "completions": completions,
                    "abandonments": abandons,
                }
            )
    df = pd.DataFrame(rows)
    df["abandon_rate"] = df["abandonments"] / (df["abandonments"] + df["completions"])
    df["abandon_share_of_starts"] = df["abandonments"] / df["starts"]
    return df


def death_heatmap(
    hot_region: str | None = "us-east", hot_zone: int = 4, regions: tuple[str, ...] = REGIONS
) -> pd.DataFrame:
    """fct_death_heatmap: zones die in proportion to their tier, plus a hot cell full of elites in one zone."""
    rows = []
    for region in regions:
        for zone in range(6):
            base = 40 + 10 * zone
            rows.append(
                {
                    "region": region,
                    "zone": zone,
                    "cause": "monster",
                    "cell_x": zone,
                    "cell_y": 0,
                    "deaths": base,
                }
            )
            rows.append(
                {
                    "region": region,
                    "zone": zone,
                    "cause": "elite",
                    "cell_x": zone,
                    "cell_y": 1,
                    "deaths": base // 4,
                }
            )
            if region == hot_region and zone == hot_zone:
                rows.append(
                    {
                        "region": region,
                        "zone": zone,
                        "cause": "elite",
                        "cell_x": 9,
                        "cell_y": 9,
                        "deaths": 300,
                    }
                )
    return pd.DataFrame(rows)


def economy(
    shards: dict[str, str], inflating: str | None = None, deflating: str | None = None
) -> pd.DataFrame:
    """fct_economy_daily (gold): a partial first day, then a day in band, except the named shards."""
    rows = []
    for shard, region in shards.items():
        for day, partial in (("2026-01-01", True), ("2026-01-02", False)):
            infl = 0.01
            if shard == inflating and not partial:
                infl = 0.09
            if shard == deflating and not partial:
                infl = -0.06
            rows.append(
                {
                    "event_date": pd.Timestamp(day).date(),
                    "shard_id": shard,
                    "region": region,
                    "currency": "gold",
                    "is_partial": partial,
                    "sources": 1000,
                    "sinks": 800,
                    "net_inflow": 200,
                    "opening_supply": None if partial else 10000,
                    "money_supply": 10200,
                    "net_inflation": None if partial else infl,
                    "trade_volume": 12000,
                    "trades": 100,
                    "velocity": None if partial else 1.2,
                    "avg_trade_price": 120.0,
                    "price_index": 1.0,
                    "price_inflation": None if partial else infl / 2,
                }
            )
    return pd.DataFrame(rows)


def server_health(kpis: pd.DataFrame, hot: str | None = None) -> pd.DataFrame:
    """fct_server_health from the KPI rows; ``hot`` runs at 95% of capacity with slow ticks."""
    df = kpis[
        ["shard_id", "region", "bucket_start", "config_version", "tick_p50_ms", "tick_p95_ms", "tick_p99_ms"]
    ].copy()
    df["expected_ticks"] = 5
    df["ticks"] = 5
    df["is_down"] = False
    df["players_online"] = kpis["players_online"]
    df["capacity"] = 2000
    df["saturation"] = kpis["saturation"]
    df["reconnects"] = kpis["reconnects"]
    df["reconnect_rate"] = kpis["reconnect_rate"]
    if hot is not None:
        sel = df["shard_id"] == hot
        df.loc[sel, "saturation"] = 0.95
        df.loc[sel, "tick_p95_ms"] = 600.0
    return df


def write_warehouse(path: Path, **tables: pd.DataFrame) -> Path:
    """Each frame as a real table of a DuckDB file (what dbt leaves behind)."""
    con = duckdb.connect(str(path))
    try:
        for name, frame in tables.items():
            con.register("frame", frame)
            con.execute(f"create or replace table {name} as select * from frame")
            con.unregister("frame")
    finally:
        con.close()
    return path
