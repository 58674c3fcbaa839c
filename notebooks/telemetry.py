# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Telemetry: funnels, abandonment, deaths and the economy
#
# What the players did, read from the warehouse marts (`aegis materialize telemetry`, or the
# automation of `make up`). Everything is read through the project's own paths
# (`aegis.config.paths()`, the same as `aegis info --json`) with the same read-only connection
# the asset checks use (`aegis.quality.suites.connect_warehouse`), so a running dbt build is
# waited for, never blocked.
#
# Each section says so plainly when its mart is empty or missing; nothing is made up.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

if "AEGIS_HOME" not in os.environ:
    # The default AEGIS_HOME (./.aegis) is relative to where `make up` runs: the repository root.
    root = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "pyproject.toml").exists()), Path.cwd())
    os.chdir(root)

from aegis.config import paths
from aegis.quality.suites import connect_warehouse

P = paths()
info = P.info()
print(f"AEGIS_HOME  {info['home']}")
print(f"warehouse   {info['warehouse']}")

MARTS = [
    "fct_progression_funnel",
    "fct_quest_abandonment",
    "fct_death_heatmap",
    "fct_economy_daily",
    "fct_shard_kpis",
]


def read_marts() -> dict[str, pd.DataFrame]:
    """Every mart this notebook uses (empty frame for one not built yet); one short read-only look."""
    if not P.warehouse.exists():
        print(f"No warehouse at {P.warehouse} yet: run `aegis world run --hours 3` and "
              "`aegis materialize telemetry` (or leave `make up` running a few minutes).")
        return {m: pd.DataFrame() for m in MARTS}
    out = {}
    with connect_warehouse(P.warehouse) as con:
        tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
        for mart in MARTS:
            if mart in tables:
                out[mart] = con.execute(f"select * from main.{mart}").df()
            else:
                print(f"{mart}: not built yet")
                out[mart] = pd.DataFrame()
    return out


marts = read_marts()
for name, df in marts.items():
    print(f"{name:24} {len(df):>7,} rows")

# %% [markdown]
# ## Quest funnel
#
# Attempts entering each stage of a quest, and how many finished or abandoned it there, summed
# over quests. `reached_share` is the share of a quest's first-stage starts that reached a stage.

# %%
funnel = marts["fct_progression_funnel"]
if funnel.empty:
    print("No quest events in the warehouse yet: the funnel is empty.")
else:
    by_stage = funnel.groupby("stage")[["starts", "completions", "abandonments"]].sum().sort_index()
    reached = (
        funnel.groupby(["region", "stage"])["starts"].sum().unstack("region").sort_index()
    )
    reached = reached / reached.iloc[0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    x = np.arange(len(by_stage))
    ax1.bar(x - 0.27, by_stage["starts"], width=0.27, label="entered")
    ax1.bar(x, by_stage["completions"], width=0.27, label="finished")
    ax1.bar(x + 0.27, by_stage["abandonments"], width=0.27, label="abandoned")
    ax1.set_xticks(x, [f"stage {s}" for s in by_stage.index])
    ax1.set_ylabel("attempts")
    ax1.set_title("Quest funnel, all quests and regions")
    ax1.legend(frameon=False)
    for region in reached.columns:
        ax2.plot(reached.index, reached[region], marker="o", label=region)
    ax2.set_xlabel("stage")
    ax2.set_ylabel("share of first-stage starts")
    ax2.set_ylim(0, 1.05)
    ax2.set_title("Reached each stage, by region")
    ax2.legend(frameon=False)
    plt.tight_layout()
    plt.show()
    display(by_stage)

# %% [markdown]
# ## Abandonment by stage and region
#
# `abandon_rate` = abandonments / (abandonments + completions) at the stage. A stage that loses
# players in one region only points at that region's content or load, not the quest design.

# %%
abandonment = marts["fct_quest_abandonment"]
if abandonment.empty:
    print("No quest abandonments or completions yet: nothing to rate.")
else:
    grid = abandonment.pivot_table(index="region", columns="stage", values="abandon_rate")
    fig, ax = plt.subplots(figsize=(7, 2.8))
    image = ax.imshow(grid.to_numpy(), cmap="Reds", aspect="auto", vmin=0)
    ax.set_xticks(range(grid.shape[1]), [f"stage {s}" for s in grid.columns])
    ax.set_yticks(range(grid.shape[0]), grid.index)
    for (i, j), v in np.ndenumerate(grid.to_numpy()):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.1%}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="abandon rate")
    ax.set_title("Abandonment by stage and region")
    plt.tight_layout()
    plt.show()
    worst = abandonment.sort_values("abandon_rate", ascending=False).head(5)
    display(worst[["region", "stage", "starts", "abandonments", "abandon_rate"]])

# %% [markdown]
# ## Death heatmap
#
# Deaths per 32 x 32 cell of the world map, per region (all zones and causes summed), and the
# causes overall.

# %%
deaths = marts["fct_death_heatmap"]
if deaths.empty:
    print("No combat deaths in the warehouse yet: no heatmap.")
else:
    regions = sorted(deaths["region"].unique())
    fig, axes = plt.subplots(1, len(regions) + 1, figsize=(4 * (len(regions) + 1), 3.6))
    axes = np.atleast_1d(axes)
    vmax = deaths.groupby(["region", "cell_y", "cell_x"])["deaths"].sum().max()
    for ax, region in zip(axes, regions):
        grid = np.zeros((32, 32))
        cells = deaths[deaths["region"] == region].groupby(["cell_y", "cell_x"])["deaths"].sum()
        for (cy, cx), n in cells.items():
            grid[int(cy), int(cx)] = n
        image = ax.imshow(grid, origin="lower", cmap="inferno", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{region}: {int(grid.sum()):,} deaths")
        ax.set_xlabel("cell x")
        ax.set_ylabel("cell y")
    fig.colorbar(image, ax=list(axes[:-1]), label="deaths per cell")
    causes = deaths.groupby("cause")["deaths"].sum().sort_values()
    axes[-1].barh(causes.index.astype(str), causes.to_numpy())
    axes[-1].set_title("Deaths by cause")
    plt.show()

# %% [markdown]
# ## Economy: inflation and velocity
#
# Per day (`fct_economy_daily`): net inflation = net inflow / opening supply and velocity =
# trade volume / average supply. A shard's first day in the lake is partial (its opening supply
# is unknown), so its rates are null, not zero. Within a day the KPI mart (`fct_shard_kpis`,
# 5-minute buckets) shows gold created and destroyed, the money supply, and the trade price
# index; a short run is read there.

# %%
economy = marts["fct_economy_daily"]
if economy.empty:
    print("No economy rows yet.")
else:
    full_days = economy[~economy["is_partial"]]
    if full_days.empty:
        days = economy["event_date"].nunique()
        print(f"{days} day(s) in the lake, each the first (partial) day of its shard: daily inflation and "
              "velocity need a full day after the first; see the 5-minute view below.")
    else:
        daily = full_days.groupby(["event_date", "region"])[["net_inflation", "velocity"]].mean().reset_index()
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
        for region, rows in daily.groupby("region"):
            ax1.plot(rows["event_date"], rows["net_inflation"], marker="o", label=region)
            ax2.plot(rows["event_date"], rows["velocity"], marker="o", label=region)
        ax1.set_title("Daily net inflation (mean over shards)")
        ax1.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.1%}"))
        ax2.set_title("Daily velocity (turnover of the supply)")
        for ax in (ax1, ax2):
            ax.legend(frameon=False)
            ax.tick_params(axis="x", rotation=30)
        plt.tight_layout()
        plt.show()

kpis = marts["fct_shard_kpis"]
if kpis.empty:
    print("No KPI buckets yet (fct_shard_kpis is empty).")
else:
    kpis = kpis.assign(bucket_start=pd.to_datetime(kpis["bucket_start"], utc=True))
    per_region = kpis.groupby(["bucket_start", "region"]).agg(
        sources=("currency_sources", "sum"),
        sinks=("currency_sinks", "sum"),
        supply=("money_supply", "sum"),
        trade_volume=("trade_volume", "sum"),
        price_index=("price_index", "mean"),
        players=("players_online", "sum"),
    ).reset_index()
    per_region["created_per_player"] = per_region["sources"] / per_region["players"].where(per_region["players"] > 0)
    per_region["velocity"] = per_region["trade_volume"] / per_region["supply"].where(per_region["supply"] > 0)
    fig, axes = plt.subplots(2, 2, figsize=(11, 6), sharex=True)
    panels = [
        ("created_per_player", "gold created per player online (per 5 min)"),
        ("supply", "money supply (cumulative net inflow)"),
        ("velocity", "velocity (trade volume / supply, per 5 min)"),
        ("price_index", "trade price index (1 = first hour)"),
    ]
    for ax, (col, title) in zip(axes.flat, panels):
        for region, rows in per_region.groupby("region"):
            ax.plot(rows["bucket_start"], rows[col], label=region)
        ax.set_title(title)
    axes[0, 0].legend(frameon=False)
    axes[1, 0].set_yscale("log")  # early buckets divide by a small supply: a log axis keeps both readable
    for ax in axes[1]:
        ax.tick_params(axis="x", rotation=30)
    plt.tight_layout()
    plt.show()
    span = kpis["bucket_start"].max() - kpis["bucket_start"].min()
    print(f"{kpis['shard_id'].nunique()} shards, {span} of game time in 5-minute buckets")
