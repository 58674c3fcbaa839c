"""Synthetic ``fct_shard_kpis`` rows with a known dynamic.

Tests and the benchmark need data whose answer is known: deaths rise with quest
difficulty and NPC aggression, abandonment with difficulty, currency sources
with the source multiplier, and so on, on top of a daily rhythm and noise. The
rows carry exactly the mart's contract columns, so everything downstream of
the warehouse runs unchanged on them. Parameters are explored the way the
world's exploration does: every few hours a shard moves some tunables inside a
safe band.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from aegis.domain import WorldParams
from aegis.telemetry import KPI_BUCKET_MINUTES, KPI_COLUMNS, KPI_KEY_COLUMNS, WORLD_EPOCH, config_columns

EXPLORE_EVERY_BUCKETS = 24  # two game hours
EXPLORE_BAND = 0.35  # relative move around the baseline, inside the policy bands
CAPACITY = 2000


def synthetic_kpis(
    shards: int = 6, hours: float = 48.0, seed: int = 0, noise: float = 1.0, explore: bool = True
) -> pd.DataFrame:
    """KPI rows for ``shards`` shards over ``hours`` game hours (one row per 5-minute bucket)."""
    rng = np.random.default_rng(seed)
    n = int(hours * 60 / KPI_BUCKET_MINUTES)
    names = WorldParams.vector_names()
    rows: list[dict[str, object]] = []
    for s in range(shards):
        rows += _shard_rows(s, n, names, rng, noise, explore)
    frame = pd.DataFrame(rows)
    return frame[[*KPI_KEY_COLUMNS, *KPI_COLUMNS, *config_columns()]]


def _shard_rows(
    s: int, n: int, names: list[str], rng: np.random.Generator, noise: float, explore: bool
) -> list[dict[str, object]]:
    """Shard ``s``'s ``n`` bucket rows; players, money and prices carry over from one bucket to the next."""
    shard_id = f"shard-{s:02d}"
    base_players = rng.uniform(300, 900)
    params = WorldParams()
    version = 1
    players = base_players
    money = 0.0
    price_index = 1.0
    rows: list[dict[str, object]] = []
    for t in range(n):
        if explore and t > 0 and t % EXPLORE_EVERY_BUCKETS == 0:
            params = _explore(params, rng)
            version += 1
        ts = WORLD_EPOCH + pd.Timedelta(minutes=KPI_BUCKET_MINUTES * t)
        hour = ts.hour + ts.minute / 60
        diurnal = 1.0 + 0.35 * math.sin(2 * math.pi * (hour - 8) / 24)
        difficulty = float(np.mean(params.quest_difficulty))
        harsh = (
            params.npc_aggression
            * float(np.mean(params.spawn_rate))
            * (1 + float(np.mean(params.elite_share)))
        )
        # players drift toward a level that falls when the game is harsh
        target = base_players * diurnal * (1.15 - 0.15 * difficulty)
        players = max(10.0, players + 0.25 * (target - players) + rng.normal(0, 8 * noise))
        k = players / 100.0
        row = _event_counts(params, k, difficulty, harsh, rng)
        money, price_index = _economy(row, params, k, money, price_index, rng, noise)
        _server_and_rates(row, players, harsh, rng, noise)
        row.update(
            {
                "shard_id": shard_id,
                "region": f"region-{s % 3}",
                "bucket_start": ts,
                "config_version": version,
            }
        )
        row.update({f"p_{name}": v for name, v in zip(names, params.to_vector(), strict=True)})
        rows.append(row)
    return rows


def _event_counts(
    params: WorldParams, k: float, difficulty: float, harsh: float, rng: np.random.Generator
) -> dict[str, Any]:
    """One bucket's event counts: Poisson draws around rates set by the players (``k`` = players/100)."""
    lam = {
        "deaths_early": k * 1.2 * harsh * params.quest_difficulty[0],
        "deaths_mid": k * 0.9 * harsh * params.quest_difficulty[2],
        "deaths_late": k * 0.6 * harsh * params.quest_difficulty[4],
        "completions_early": k * 3.0 / params.quest_pacing / params.quest_difficulty[0] ** 0.5,
        "completions_mid": k * 2.0 / params.quest_pacing / params.quest_difficulty[2] ** 0.5,
        "completions_late": k * 1.2 / params.quest_pacing / params.quest_difficulty[4] ** 0.5,
        "abandons_early": k * 0.3 * params.quest_difficulty[0] ** 2,
        "abandons_mid": k * 0.25 * params.quest_difficulty[2] ** 2,
        "abandons_late": k * 0.2 * params.quest_difficulty[4] ** 2,
        "sessions_started": k * 2.0,
        "quest_starts": k * 3.5,
        "trades": k * 1.5 * params.drop_rate,
        "reconnects": k * 0.2,
        "churned": k * 0.05 * (0.5 + difficulty**2),
    }
    row: dict[str, Any] = {key: float(rng.poisson(max(v, 0.0))) for key, v in lam.items()}
    row["quest_completions"] = float(rng.poisson(k * 1.0 / params.quest_pacing))
    return row


def _economy(
    row: dict[str, Any],
    params: WorldParams,
    k: float,
    money: float,
    price_index: float,
    rng: np.random.Generator,
    noise: float,
) -> tuple[float, float]:
    """Fill the bucket's currency and price columns; the money supply and price index after it."""
    sources = k * 900 * params.source_multiplier * (0.6 + 0.4 * params.quest_reward)
    sinks = k * 800 * params.sink_multiplier
    row["currency_sources"] = float(max(0.0, rng.normal(sources, 0.08 * sources * noise + 1)))
    row["currency_sinks"] = float(max(0.0, rng.normal(sinks, 0.08 * sinks * noise + 1)))
    row["net_inflow"] = row["currency_sources"] - row["currency_sinks"]
    money += float(row["net_inflow"])
    row["money_supply"] = max(money, 1.0) + 50_000
    new_index = price_index * (1 + 2e-6 * float(row["net_inflow"]) / max(k, 0.1)) + rng.normal(
        0, 0.002 * noise
    )
    row["inflation"] = new_index / price_index - 1
    price_index = max(new_index, 0.05)
    row["price_index"] = price_index
    row["trade_volume"] = float(row["trades"]) * 120 * price_index
    row["velocity"] = float(row["trade_volume"]) / float(row["money_supply"])
    return money, price_index


def _server_and_rates(
    row: dict[str, Any], players: float, harsh: float, rng: np.random.Generator, noise: float
) -> None:
    """Fill the bucket's tick latencies, load and per-player rates."""
    tick = 20 + 0.012 * players * harsh**0.5 + rng.gamma(2.0, 1.5 * noise + 0.01)
    row["tick_p50_ms"] = tick
    row["tick_p95_ms"] = tick * 1.8
    row["tick_p99_ms"] = tick * 2.6
    row["players_online"] = players
    row["saturation"] = players / CAPACITY
    finished = row["abandons_early"] + row["abandons_mid"] + row["abandons_late"]
    denom = finished + row["quest_completions"]
    row["abandon_rate"] = finished / denom if denom else 0.0
    row["reconnect_rate"] = float(row["reconnects"]) / players
    row["churn_rate"] = float(row["churned"]) / players


def _explore(params: WorldParams, rng: np.random.Generator) -> WorldParams:
    """Move a few tunables to a random point of a band around the baseline."""
    data = params.model_dump()
    for name in rng.choice(
        [
            "quest_difficulty",
            "npc_aggression",
            "source_multiplier",
            "sink_multiplier",
            "quest_pacing",
            "spawn_rate",
            "drop_rate",
            "quest_reward",
        ],
        size=3,
        replace=False,
    ):
        base = WorldParams().model_dump()[name]
        if isinstance(base, list):
            factor = float(rng.uniform(1 - EXPLORE_BAND, 1 + EXPLORE_BAND))
            data[name] = [round(b * factor, 4) for b in base]
        else:
            data[name] = round(base * float(rng.uniform(1 - EXPLORE_BAND, 1 + EXPLORE_BAND)), 4)
    return WorldParams.model_validate(data)
