"""Offline paired simulation: what a change would do to one shard, before it touches players.

The simulation gate restores two copies of one shard from a snapshot's state,
applies the proposed parameters to one copy (the treatment) and runs both for
the same number of game hours with COMMON RANDOM NUMBERS: both copies start
from the identical generator state, and the simulator draws fixed-shape
uniforms regardless of the parameters, so the only difference between the arms
is the change itself. The deltas are then the change's effect on this shard's
population, not noise: an unchanged pair gives zero deltas exactly.

The KPIs are the ``fct_shard_kpis`` columns (``aegis.telemetry.KPI_COLUMNS``)
that can be computed from the event tables of one run, aggregated over the
whole horizon instead of per bucket. Pure code: no HTTP, no files.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from aegis.domain import Integrity, WorldParams
from aegis.telemetry import KPI_COLUMNS, STAGE_BANDS, ZONE_BANDS

TICK_MINUTES = 1.0
MAX_HOURS = 24.0 * 7
# The price index's base: the mean gold trade price in the first hour of the control arm.
PRICE_BASE_MINUTES = 60.0
BASE_CURRENCY = "gold"


class SimulationReport(BaseModel):
    """Predicted KPI deltas of a change on one shard (treatment minus control)."""

    model_config = ConfigDict(extra="forbid")

    shard_id: str
    snapshot_id: str | None = None
    hours: float
    seed: int | None = None
    ticks: int
    start: datetime
    params_before: WorldParams
    params_after: WorldParams
    integrity_before: Integrity = Field(description="the snapshot's state before the change")
    integrity_after: Integrity = Field(
        description="the same state right after the change, no game time between"
    )
    control: dict[str, float]
    treatment: dict[str, float]
    delta: dict[str, float] = Field(description="treatment - control, per KPI")
    relative_delta: dict[str, float | None] = Field(
        description="(treatment - control) / |control|; 0 when both are 0, null when only control is 0"
    )
    events: dict[str, int] = Field(description="events per arm")
    wall_seconds: float

    def predicted(self) -> dict[str, float]:
        """The treatment's KPIs: what the policy engine's ``predicted`` expects."""
        return dict(self.treatment)


def _band_of(values: np.ndarray, bands: dict[str, tuple[int, ...]]) -> dict[str, int]:
    return {name: int(np.isin(values, np.asarray(members)).sum()) for name, members in bands.items()}


def _col(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False)


def kpis(
    table: pa.Table,
    capacity: int,
    price_base: float | None = None,
    money_supply: float | None = None,
    price_levels: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Aggregate one run's events into the computable ``fct_shard_kpis`` KPIs over the horizon.

    Definitions follow ``aegis.telemetry.KPI_COLUMNS`` with the horizon as the bucket:
    ``money_supply`` is the gold held by active players at the end when the caller
    knows it (the simulator does), else the net gold inflow of the run; ``price_index`` is the horizon's mean
    gold trade price over ``price_base`` (default: the run's own first-hour mean), and
    ``inflation`` is the price index of the last hour against the first hour. When
    ``price_levels`` (start, end) are given (the simulator's own price level), the
    index is end / start and inflation its change over the horizon.
    """
    kinds = _col(table, "kind").astype(str) if table.num_rows else np.asarray([], dtype=str)
    ticks = _rows(table, "server_tick")
    online = _col(ticks, "players_online").astype(float) if ticks.num_rows else np.zeros(0)
    tick_ms = _col(ticks, "tick_ms").astype(float) if ticks.num_rows else np.zeros(0)
    mean_online = float(online.mean()) if online.size else 0.0
    out: dict[str, float] = {}
    out["players_online"] = mean_online
    out["sessions_started"] = float((kinds == "session_start").sum())
    out.update(_quest_kpis(table, kinds))
    out.update(_economy_kpis(table, price_base, money_supply, price_levels))
    out.update(_server_kpis(table, kinds, tick_ms, mean_online, capacity))
    return {k: out[k] for k in KPI_COLUMNS if k in out}


def _rows(table: pa.Table, kind: str) -> pa.Table:
    """The events of one kind (the empty table stays itself)."""
    return table.filter(pc.equal(table.column("kind"), kind)) if table.num_rows else table


def _quest_kpis(table: pa.Table, kinds: np.ndarray) -> dict[str, float]:
    """Deaths per zone band; quest starts, completions (per stage band and in all) and abandons."""
    out: dict[str, float] = {}
    deaths = _rows(table, "combat_death")
    for band, n in _band_of(_col(deaths, "zone") if deaths.num_rows else np.zeros(0), ZONE_BANDS).items():
        out[f"deaths_{band}"] = float(n)
    out["quest_starts"] = float((kinds == "quest_start").sum())
    stages = _rows(table, "quest_stage")
    for band, n in _band_of(_col(stages, "stage") if stages.num_rows else np.zeros(0), STAGE_BANDS).items():
        out[f"completions_{band}"] = float(n)
    completions = float((kinds == "quest_complete").sum())
    out["quest_completions"] = completions
    abandons = _rows(table, "quest_abandon")
    for band, n in _band_of(
        _col(abandons, "stage") if abandons.num_rows else np.zeros(0), STAGE_BANDS
    ).items():
        out[f"abandons_{band}"] = float(n)
    n_abandons = float(abandons.num_rows)
    out["abandon_rate"] = n_abandons / (n_abandons + completions) if n_abandons + completions else 0.0
    return out


def _gold_sum(table: pa.Table, kind: str, column: str) -> float:
    """The sum of ``column`` over the gold events of one kind."""
    t = _rows(table, kind)
    if not t.num_rows:
        return 0.0
    t = t.filter(pc.equal(t.column("currency"), BASE_CURRENCY))
    return float(pc.sum(t.column(column)).as_py() or 0) if t.num_rows else 0.0


def _economy_kpis(
    table: pa.Table,
    price_base: float | None,
    money_supply: float | None,
    price_levels: tuple[float, float] | None,
) -> dict[str, float]:
    """Gold flows, money supply, trades, price index, inflation and velocity (see :func:`kpis`)."""
    out: dict[str, float] = {}
    sources, sinks = (
        _gold_sum(table, "currency_source", "amount"),
        _gold_sum(table, "currency_sink", "amount"),
    )
    out["currency_sources"], out["currency_sinks"] = sources, sinks
    out["net_inflow"] = sources - sinks
    out["money_supply"] = float(money_supply) if money_supply is not None else sources - sinks

    trades = _rows(table, "trade")
    if trades.num_rows:
        trades = trades.filter(pc.equal(trades.column("currency"), BASE_CURRENCY))
    prices = _col(trades, "price").astype(float) if trades.num_rows else np.zeros(0)
    out["trade_volume"] = float(prices.sum())
    out["trades"] = float(prices.size)
    first_hour, last_hour = _first_last_hour_prices(trades)
    base = price_base if price_base else (float(first_hour.mean()) if first_hour.size else 0.0)
    out["price_index"] = float(prices.mean()) / base if prices.size and base else 0.0
    if price_levels is not None and price_levels[0] > 0:
        # The simulator knows its price level: a truer index than a few noisy trades.
        out["price_index"] = price_levels[1] / price_levels[0]
        out["inflation"] = out["price_index"] - 1.0
    elif first_hour.size and last_hour.size and base:
        out["inflation"] = float(last_hour.mean() / base) / float(first_hour.mean() / base) - 1.0
    else:
        out["inflation"] = 0.0
    out["velocity"] = out["trade_volume"] / out["money_supply"] if out["money_supply"] > 0 else 0.0
    return out


def _server_kpis(
    table: pa.Table, kinds: np.ndarray, tick_ms: np.ndarray, mean_online: float, capacity: int
) -> dict[str, float]:
    """Tick latency percentiles, saturation, reconnects and churn (rates per mean online player)."""
    out: dict[str, float] = {}
    for q, name in ((50, "tick_p50_ms"), (95, "tick_p95_ms"), (99, "tick_p99_ms")):
        out[name] = float(np.percentile(tick_ms, q)) if tick_ms.size else 0.0
    out["saturation"] = mean_online / capacity if capacity else 0.0
    out["reconnects"] = float((kinds == "reconnect").sum())
    out["reconnect_rate"] = out["reconnects"] / mean_online if mean_online else 0.0
    ends = _rows(table, "session_end")
    churned = float(pc.sum(pc.equal(ends.column("cause"), "churn")).as_py() or 0) if ends.num_rows else 0.0
    out["churned"] = churned
    out["churn_rate"] = churned / mean_online if mean_online else 0.0
    return out


def _first_last_hour_prices(trades: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    if not trades.num_rows:
        return np.zeros(0), np.zeros(0)
    ts = _col(trades, "ts").astype("datetime64[us]").astype(np.int64)
    prices = _col(trades, "price").astype(float)
    window = int(PRICE_BASE_MINUTES * 60 * 1_000_000)
    return prices[ts < ts.min() + window], prices[ts >= ts.max() - window]


def first_hour_price(table: pa.Table) -> float | None:
    trades = table.filter(pc.equal(table.column("kind"), "trade")) if table.num_rows else table
    if trades.num_rows:
        trades = trades.filter(pc.equal(trades.column("currency"), BASE_CURRENCY))
    first, _ = _first_last_hour_prices(trades)
    return float(first.mean()) if first.size else None


def _deltas(
    control: dict[str, float], treatment: dict[str, float]
) -> tuple[dict[str, float], dict[str, float | None]]:
    delta = {k: treatment[k] - control[k] for k in control}
    rel: dict[str, float | None] = {}
    for k, d in delta.items():
        base = abs(control[k])
        rel[k] = d / base if base > 0 else (0.0 if d == 0 else None)
    return delta, rel


def simulate_pair(
    state: dict[str, Any],
    params_after: WorldParams,
    hours: float,
    seed: int | None = None,
    *,
    start: datetime | None = None,
    snapshot_id: str | None = None,
    tick_minutes: float = TICK_MINUTES,
) -> SimulationReport:
    """Run an unchanged and a changed copy of one shard side by side and report KPI deltas.

    ``state`` is a ``ShardSim.state_dict()`` (e.g. a snapshot's). ``seed``, when given,
    reseeds BOTH copies identically (a different but still common random stream);
    otherwise both continue the snapshot's own generator state. ``start`` is the game
    time of the first tick (default, and never earlier than: the state's clock).
    """
    from aegis.world.sim import ShardSim  # the simulator is heavy; import on use

    if not (0 < hours <= MAX_HOURS) or hours != hours:
        raise ValueError(f"hours={hours} must be in (0, {MAX_HOURS}]")
    if not isinstance(params_after, WorldParams):
        raise TypeError(f"params_after must be WorldParams, got {type(params_after).__name__}")
    began = time.perf_counter()
    if seed is not None:
        # Both arms get the same fresh generator state: still common random numbers.
        state = {**state, "rng_state": np.random.PCG64(seed).state}
    control = ShardSim.from_state_dict(state)
    treatment = ShardSim.from_state_dict(state)
    params_before = control.params
    level0 = control.economy()["price_level"]
    integrity_before = treatment.integrity()
    treatment.set_params(params_after, control.config_version, source="simulation")
    # Same state, no game time in between: any difference is player data the change itself touched.
    integrity_after = treatment.integrity()
    now = max(start, control.clock) if start is not None else control.clock
    n_ticks = max(1, round(hours * 60 / tick_minutes))
    step = timedelta(minutes=tick_minutes)
    tables_c: list[pa.Table] = []
    tables_t: list[pa.Table] = []
    for i in range(n_ticks):
        t = now + i * step
        tables_c.append(control.step(tick_minutes, t))
        tables_t.append(treatment.step(tick_minutes, t))
    events_c = pa.concat_tables(tables_c)
    events_t = pa.concat_tables(tables_t)
    base = first_hour_price(events_c)
    econ_c, econ_t = control.economy(), treatment.economy()
    kpi_c = kpis(events_c, control.capacity, base, econ_c["gold_supply"], (level0, econ_c["price_level"]))
    kpi_t = kpis(events_t, treatment.capacity, base, econ_t["gold_supply"], (level0, econ_t["price_level"]))
    delta, rel = _deltas(kpi_c, kpi_t)
    return SimulationReport(
        shard_id=control.shard_id,
        snapshot_id=snapshot_id,
        hours=hours,
        seed=seed,
        ticks=n_ticks,
        start=now,
        params_before=params_before,
        params_after=params_after,
        integrity_before=integrity_before,
        integrity_after=integrity_after,
        control=kpi_c,
        treatment=kpi_t,
        delta=delta,
        relative_delta=rel,
        events={"control": events_c.num_rows, "treatment": events_t.num_rows},
        wall_seconds=time.perf_counter() - began,
    )
