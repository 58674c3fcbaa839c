"""The metrics the canary judge compares, each on the scale that suits its KPI.

Built from the ``fct_shard_kpis`` columns (contract in :mod:`aegis.telemetry`):

* rates are pooled rates (sum of numerators / sum of denominators over the
  controls, never a mean of per-shard rates);
* counts are per player online (a busier hour is not a worse one);
* heavy-tailed or multiplicative quantities (tick latency, players online,
  prices) are on the log scale, so effects are relative;
* tick latency and reconnects are judged against load: the canary's own
  saturation enters the counterfactual as a covariate, because the world's
  tick time is a queueing function of saturation that no tuning change touches
  except through the players it brings.

What each metric means, not how strictly it is judged: margins, directions and
which metrics are guardrails live in ``policies/data.json`` (``aegis.config.canary``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

LOAD_COLUMN = "saturation"
LATENCY_COLUMN = "tick_p95_ms"
# Saturation is clipped here before the queueing term -log(1 - saturation) (finite at capacity).
MAX_LOAD = 0.995
# Below this a log-scale value is treated as missing (log of zero players or zero latency).
LOG_FLOOR = 1e-9

# Columns that are levels (averaged when one bucket has several rows, e.g. a config change inside it);
# every other KPI is a count or sum and is added.
LEVEL_COLUMNS = frozenset(
    {
        "players_online",
        "abandon_rate",
        "money_supply",
        "price_index",
        "inflation",
        "velocity",
        "tick_p50_ms",
        "tick_p95_ms",
        "tick_p99_ms",
        "saturation",
        "reconnect_rate",
        "churn_rate",
    }
)
ABANDONS = ("abandons_early", "abandons_mid", "abandons_late")
DEATHS = ("deaths_early", "deaths_mid", "deaths_late")


@dataclass(frozen=True)
class MetricDef:
    """``y = sum(numerator) / sum(denominator)`` per shard and bucket (denominator empty: the value itself)."""

    name: str
    numerator: tuple[str, ...]
    denominator: tuple[str, ...] = ()
    log_scale: bool = False
    load_adjusted: bool = False
    # Also against the canary's own tick latency (log p95): disconnects and lag-driven churn follow
    # the latency a load produces within a bucket more closely than the bucket's mean saturation.
    latency_adjusted: bool = False
    description: str = ""

    def columns(self) -> list[str]:
        cols = [*self.numerator, *self.denominator]
        extra = [LOAD_COLUMN] if self.load_adjusted else []
        return [*cols, *extra, *([LATENCY_COLUMN] if self.latency_adjusted else [])]


METRICS: dict[str, MetricDef] = {
    m.name: m
    for m in (
        MetricDef(
            "abandon_rate",
            ABANDONS,
            (*ABANDONS, "quest_completions"),
            description="abandons / (abandons + completions)",
        ),
        MetricDef(
            "deaths_per_player", DEATHS, ("players_online",), description="combat deaths per player online"
        ),
        MetricDef(
            "completions_per_player",
            ("quest_completions",),
            ("players_online",),
            description="quests completed per player online",
        ),
        MetricDef(
            "tick_p95_ms",
            ("tick_p95_ms",),
            log_scale=True,
            load_adjusted=True,
            description="95th percentile tick time, log scale, against saturation",
        ),
        MetricDef(
            "reconnect_rate",
            ("reconnects",),
            ("players_online",),
            log_scale=True,
            load_adjusted=True,
            latency_adjusted=True,
            description="reconnects per player online, log scale, against saturation and tick latency",
        ),
        MetricDef(
            "currency_inflow_per_player",
            ("currency_sources",),
            ("players_online",),
            description="gold created per player online",
        ),
        MetricDef(
            "price_index", ("price_index",), log_scale=True, description="trade price level, log scale"
        ),
        MetricDef(
            "churn_rate",
            ("churned",),
            ("players_online",),
            load_adjusted=True,
            latency_adjusted=True,
            description="churned players per player online, against saturation and tick latency (lag drives churn)",
        ),
        MetricDef(
            "players_online", ("players_online",), log_scale=True, description="players online, log scale"
        ),
        MetricDef(
            "deaths_late_per_player",
            ("deaths_late",),
            ("players_online",),
            description="late-stage deaths per player online",
        ),
        MetricDef(
            "abandons_late_per_player",
            ("abandons_late",),
            ("players_online",),
            description="late-stage abandons per player online",
        ),
        MetricDef(
            "net_inflow_per_player",
            ("net_inflow",),
            ("players_online",),
            description="gold created minus destroyed per player online",
        ),
        MetricDef(
            "sessions_per_player",
            ("sessions_started",),
            ("players_online",),
            description="sessions started per player online",
        ),
    )
}


def required_columns(names: list[str]) -> list[str]:
    """Every column the named metrics (and the judge's keys and exposure check) read."""
    cols = {"shard_id", "region", "bucket_start", "players_online"}
    for name in names:
        cols.update(METRICS[name].columns())
    return sorted(cols)


class ShardTable:
    """The KPI rows as arrays, once: per column a (bucket x shard) matrix, NaN where a shard has no row."""

    def __init__(self, df: pd.DataFrame, columns: list[str]) -> None:
        cols = sorted(set(columns))
        times = pd.DatetimeIndex(pd.to_datetime(df["bucket_start"], utc=True))
        self.index = pd.DatetimeIndex(sorted(times.unique()))
        self.shards: list[str] = sorted(df["shard_id"].astype(str).unique())
        t = self.index.get_indexer(times)
        s = pd.Index(self.shards).get_indexer(df["shard_id"].astype(str))
        self.frames: dict[str, np.ndarray] = {}
        for c in cols:
            m = np.full((len(self.index), len(self.shards)), np.nan)
            m[t, s] = df[c].to_numpy(float)  # one row per (bucket, shard): the judge merges duplicates first
            self.frames[c] = m
        self._col = {sid: i for i, sid in enumerate(self.shards)}

    def cols(self, shards: list[str]) -> list[int]:
        return [self._col[s] for s in shards]

    def sum(self, cols: tuple[str, ...], shards: list[str]) -> np.ndarray:
        idx = self.cols(shards)
        total = self.frames[cols[0]][:, idx].copy()
        for c in cols[1:]:
            total += self.frames[c][:, idx]
        return total


@dataclass
class MetricFrame:
    """Per bucket (``index``): the canary's ``y``, the ``offset`` it is compared with, covariates ``x``."""

    index: pd.DatetimeIndex
    y: np.ndarray
    offset: np.ndarray
    x: np.ndarray  # (buckets, covariates), possibly zero columns
    names: list[str]


def _log(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > LOG_FLOOR, np.log(np.where(v > LOG_FLOOR, v, 1.0)), np.nan)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def metric_frame(table: ShardTable, mdef: MetricDef, canary: str, controls: list[str]) -> MetricFrame:
    """Per bucket: the canary's ``y``, the ``offset`` it is compared with, and covariates.

    Difference-in-differences: ``offset`` is the controls' pooled value (pooled
    rate, or mean of logs), taken with coefficient one, so whatever moves all
    shards (a trend, a world event) cancels exactly; a fitted coefficient would
    be attenuated by the controls' own noise and pass only part of a shared
    trend on. What differs in the canary's diurnal phase is left to the judge's
    time-of-day terms. Load-adjusted metrics are compared with the canary's own
    load instead (``offset`` 0, covariates ``-log(1 - saturation)`` and its
    square): a shard's tick time is a queueing function of its load, which
    another shard's latency does not predict.
    """
    shards = [canary, *controls]
    num = table.sum(mdef.numerator, shards)
    den = table.sum(mdef.denominator, shards) if mdef.denominator else None
    y = _ratio(num[:, 0], den[:, 0]) if den is not None else num[:, 0]
    if mdef.log_scale:
        y = _log(y)
    if mdef.load_adjusted:
        load = table.frames[LOAD_COLUMN][:, table.cols([canary])[0]]
        queue = -np.log1p(-np.clip(load, 0.0, MAX_LOAD))
        x, names = [queue, queue**2], ["load", "load2"]
        if mdef.latency_adjusted:
            x.append(_log(table.frames[LATENCY_COLUMN][:, table.cols([canary])[0]]))
            names.append("latency")
        return MetricFrame(table.index, y, np.zeros_like(y), np.column_stack(x), names)
    cn = num[:, 1:]
    if den is not None:
        present = ~np.isnan(cn)
        cd = np.where(present, den[:, 1:], 0.0)
        any_ = present.any(axis=1)
        ctrl = np.where(any_, _ratio(np.nansum(cn, axis=1), cd.sum(axis=1)), np.nan)
        ctrl = _log(ctrl) if mdef.log_scale else ctrl
    else:
        vals = _log(cn) if mdef.log_scale else cn
        with np.errstate(invalid="ignore"):
            ok = ~np.isnan(vals)
            ctrl = np.where(ok.any(axis=1), np.nansum(vals, axis=1) / np.maximum(ok.sum(axis=1), 1), np.nan)
    return MetricFrame(table.index, y, ctrl, np.zeros((len(y), 0)), [])
