"""Canary scenarios for calibrating and benchmarking the judge: placebo canaries and injected effects.

Built from real world runs (``fct_shard_kpis`` of a world with exploration
off, :func:`world_kpis`):

* **A/A (placebo-in-space):** an unchanged shard is declared the canary at
  some start; whatever the judge says beyond "promote" is a false alarm.
* **Injected effects:** the same placebo with a multiplicative effect put on
  chosen KPI columns of the canary from ``start`` on (``EFFECT_COLUMNS``), so
  the true effect is known: harmful ones of several kinds and sizes, good ones
  (a target improved, nothing harmed), and good ones that break a guardrail.
* **Real changes:** shards whose parameters were really changed in the run
  (the fixture's ``changes``), judged against the unchanged shards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from aegis import warehouse as warehouse_db
from aegis.canary.judge import CanarySpec, choose_controls

Kind = Literal["aa", "harmful", "tolerable", "good", "good_breaks_guardrail", "real"]

# What an injected effect does to the KPI columns (each multiplied by 1 + size * sign).
EFFECT_COLUMNS: dict[str, tuple[tuple[str, ...], int]] = {
    "deaths": (("deaths_early", "deaths_mid", "deaths_late"), +1),
    "abandons": (("abandons_early", "abandons_mid", "abandons_late"), +1),
    "completions": (("quest_completions",), -1),
    "latency": (("tick_p50_ms", "tick_p95_ms", "tick_p99_ms"), +1),
    "reconnects": (("reconnects",), +1),
    "inflow": (("currency_sources",), +1),
    "churn": (("churned",), +1),
    "fewer_deaths": (("deaths_early", "deaths_mid", "deaths_late"), -1),
    "fewer_abandons": (("abandons_early", "abandons_mid", "abandons_late"), -1),
    "more_completions": (("quest_completions",), +1),
}
# The metric each effect kind moves (what a harmful one should be caught on, what a good one targets).
EFFECT_METRIC: dict[str, str] = {
    "deaths": "deaths_per_player",
    "abandons": "abandon_rate",
    "completions": "completions_per_player",
    "latency": "tick_p95_ms",
    "reconnects": "reconnect_rate",
    "inflow": "currency_inflow_per_player",
    "churn": "churn_rate",
    "fewer_deaths": "deaths_per_player",
    "fewer_abandons": "abandon_rate",
    "more_completions": "completions_per_player",
}


@dataclass
class Scenario:
    """One canary to judge, with what the right verdict is."""

    name: str
    kind: Kind
    spec: CanarySpec
    effects: dict[str, float] = field(default_factory=dict)  # effect kind -> size (relative)
    expect: str = ""

    def kpis(self, base: pd.DataFrame) -> pd.DataFrame:
        return inject(base, self.spec.canary, self.spec.start, self.effects) if self.effects else base


def inject(kpis: pd.DataFrame, canary: str, start: datetime, effects: dict[str, float]) -> pd.DataFrame:
    """``kpis`` with ``effects`` (kind -> relative size) applied to ``canary`` from ``start`` on; rates recomputed."""
    out = kpis.copy()
    when = (out["shard_id"] == canary) & (
        pd.to_datetime(out["bucket_start"], utc=True) >= pd.Timestamp(start)
    )
    for kind, size in effects.items():
        cols, sign = EFFECT_COLUMNS[kind]
        for col in cols:
            out[col] = out[col].astype(float)
            out.loc[when, col] = out.loc[when, col] * (1.0 + sign * size)
    for col in ("abandon_rate", "reconnect_rate", "churn_rate"):
        out[col] = out[col].astype(float)
    abandons = out[["abandons_early", "abandons_mid", "abandons_late"]].astype(float).sum(axis=1)
    done = abandons + out["quest_completions"].astype(float)
    out.loc[when, "abandon_rate"] = (abandons / done.where(done > 0)).fillna(0.0)[when]
    players = out["players_online"].astype(float).where(out["players_online"] > 0)
    out.loc[when, "reconnect_rate"] = (out["reconnects"] / players).fillna(0.0)[when]
    out.loc[when, "churn_rate"] = (out["churned"] / players).fillna(0.0)[when]
    return out


def placebo_specs(
    kpis: pd.DataFrame,
    shards: list[str],
    first_start: datetime,
    last_start: datetime,
    every: timedelta,
    max_buckets: int,
    k_controls: int,
    exclude: set[str] | frozenset[str] = frozenset(),
) -> Iterator[CanarySpec]:
    """Every shard of ``shards`` as a placebo canary at starts ``first_start``, +every, ... <= ``last_start``.

    Controls are chosen by :func:`choose_controls` among the other shards not in ``exclude``.
    """
    others = sorted(set(kpis["shard_id"].astype(str)) - set(exclude))
    history = kpis[pd.to_datetime(kpis["bucket_start"], utc=True) < pd.Timestamp(first_start)]
    start = first_start
    while start <= last_start:
        for shard in shards:
            controls = choose_controls(history, shard, [s for s in others if s != shard], k_controls)
            yield CanarySpec(canary=shard, controls=controls, start=start, max_buckets=max_buckets)
        start += every


def world_kpis(
    seed: int, pre_hours: float, post_hours: float, changes: dict[str, dict[str, Any]], out: Path
) -> dict[str, Any]:
    """Run a real world (exploration off), apply ``changes`` after ``pre_hours``, materialize, write ``out``.

    ``changes``: shard -> {"params": {param: value}, "expect": text}. Returns the
    run's description (also written beside ``out`` as JSON by the callers).
    Takes a few minutes: the world, then ``aegis materialize telemetry``.
    """

    from aegis.config import AegisPaths
    from aegis.telemetry import KPI_COLUMNS, KPI_KEY_COLUMNS
    from aegis.world.runner import run_world
    from aegis.world.sim import World

    home = Path(tempfile.mkdtemp(prefix="aegis-canary-world-"))
    try:
        env = {**os.environ, "AEGIS_HOME": str(home)}
        paths = AegisPaths.from_env(home)
        world = World(seed=seed)
        run_world(paths, pre_hours, world=world, explore=False)
        change_at = world.game_time
        for shard_id, change in changes.items():
            shard = world.shards[shard_id]
            params = type(shard.params).model_validate({**shard.params.model_dump(), **change["params"]})
            shard.set_params(params, shard.config_version + 1, "canary")
        if post_hours > 0:
            run_world(paths, post_hours, world=world, explore=False)
        aegis = Path(sys.executable).parent / "aegis"
        subprocess.run([str(aegis), "materialize", "telemetry"], check=True, env=env, capture_output=True)
        cols = ", ".join([*KPI_KEY_COLUMNS, *KPI_COLUMNS])
        with warehouse_db.connect(paths.warehouse) as con:
            df = con.sql(f"select {cols} from main.fct_shard_kpis order by shard_id, bucket_start").df()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    floats = [c for c in KPI_COLUMNS if df[c].dtype.kind == "f"]
    df[floats] = df[floats].astype("float32")  # half the file; far finer than the KPIs' noise
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out, index=False, compression="zstd")
    return {
        "seed": seed,
        "explore": False,
        "pre_hours": pre_hours,
        "post_hours": post_hours,
        "change_start": change_at.isoformat(),
        "changes": changes,
        "rows": len(df),
    }
