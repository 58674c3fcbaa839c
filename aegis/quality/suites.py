"""The expectation suites of the lake and the marts, and the reads behind them.

Each function reads what it judges (bronze Parquet or a warehouse table, through
DuckDB, only the columns and rows it needs) and returns a
:class:`~aegis.quality.gx_validation.ValidationReport`. The Dagster asset checks
in ``assets/warehouse.py`` only call these and turn reports into metadata.

Three kinds of rule, as the issue asks:
- integrity: keys not null, enums, schema version, rates within [0, 1];
- volume: the newest complete period's row count against the mean of the
  trailing periods, within a tolerance; skipped, with the reason recorded,
  while there are too few periods for a baseline;
- freshness: how far the data lags the clock that matters (the lake's newest
  event for marts; the wall clock and the fleet's newest event for bronze).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from aegis import warehouse as warehouse_db
from aegis.config import AegisPaths
from aegis.lake.store import Lake, as_lake, register_duckdb
from aegis.quality.gx_validation import ValidationReport, failed_report, skipped_report, validate_frame
from aegis.telemetry import KINDS, KPI_BUCKET_MINUTES, SCHEMA_VERSION

# Bronze integrity reads at most this many of the newest rows (by ingest time):
# the newest batches are what a materialization just added; older ones were
# checked when they arrived. Keeps the check bounded on a 10M-event lake.
BRONZE_SAMPLE_ROWS = 500_000
BRONZE_KEYS: tuple[str, ...] = ("event_id", "ts", "shard_id", "kind")
VOLUME_TOLERANCE = 0.5  # newest period within +-50% of the trailing mean
VOLUME_MIN_HISTORY = 3  # periods needed before a baseline means anything
VOLUME_HISTORY = 24  # trailing periods in the baseline
# Bronze: the lake must have received data recently (wall clock) ...
BRONZE_MAX_INGEST_AGE = timedelta(hours=6)
# ... and no shard's newest event may trail the fleet's newest by more than this (game time).
BRONZE_MAX_SHARD_LAG = timedelta(minutes=30)
# What an operator reads when a check finds no bronze at all (fresh AEGIS_HOME).
NO_BRONZE = "no bronze data yet: land telemetry and run the ingest"
NO_BRONZE_HINT = (
    "(aegis world run lands telemetry; the ingest_telemetry job or `aegis materialize telemetry` ingests it)"
)
# A mart built from fewer game minutes than this may rightly be empty: the bucketed marts leave
# out the newest, still-filling KPI bucket, so the first rows need two buckets of telemetry.
MART_WARMUP = timedelta(minutes=2 * KPI_BUCKET_MINUTES)


@dataclass(frozen=True)
class MartSpec:
    """What the checks of one mart look at."""

    keys: tuple[str, ...]
    rates: tuple[str, ...]  # columns that must lie in [0, 1]
    time_column: str | None  # None: no time axis (volume uses materialization history, no freshness)
    period: str  # DuckDB date_trunc unit for volume: 'hour' or 'day'
    max_lag: timedelta  # newest mart time vs the lake's newest event


MART_SPECS: dict[str, MartSpec] = {
    "fct_shard_kpis": MartSpec(
        keys=("shard_id", "region", "bucket_start", "config_version"),
        rates=("abandon_rate", "saturation", "reconnect_rate", "churn_rate"),
        time_column="bucket_start",
        period="hour",
        max_lag=timedelta(minutes=15),
    ),
    "fct_quest_abandonment": MartSpec(
        keys=("stage", "region"),
        rates=("abandon_rate",),
        time_column=None,
        period="",
        max_lag=timedelta(0),
    ),
    "fct_slo_burn": MartSpec(
        keys=("shard_id", "bucket_start", "sli"),
        rates=("error_ratio",),
        time_column="bucket_start",
        period="hour",
        max_lag=timedelta(minutes=20),
    ),
    "fct_economy_daily": MartSpec(
        keys=("event_date", "shard_id", "currency"),
        rates=(),
        time_column="event_date",
        period="day",
        max_lag=timedelta(days=1),
    ),
}


# Bronze is read where the lake is: ``where`` is an AegisPaths (its local lake) or an
# aegis.lake.store.Lake (S3 in prod, read through Arrow's S3 filesystem: no httpfs).
def bronze_glob(where: AegisPaths | Lake) -> str:
    return as_lake(where).store.uri_of("bronze/*/*.parquet")


def _bronze_where(where: AegisPaths | Lake) -> dict[str, str]:
    return {"bronze": as_lake(where).store.uri_of("bronze")}


def _has_bronze(where: AegisPaths | Lake) -> bool:
    return as_lake(where).store.any("bronze")


def _bronze_sql(where: AegisPaths | Lake) -> str:
    path = bronze_glob(where).replace("'", "''")
    return f"read_parquet('{path}', hive_partitioning = true, union_by_name = true)"


def connect_warehouse(path: Path) -> warehouse_db.LockedConnection:
    """A read-only connection under the warehouse's shared lock, waiting out a dbt build (bounded)."""
    return warehouse_db.connect(path)


def _memory(where: AegisPaths | Lake | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    if where is not None and as_lake(where).is_remote:
        register_duckdb(con, getattr(as_lake(where).store, "region", None))
    return con


# ------------------------------------------------------------------ building blocks


def volume_report(
    suite: str, periods: pd.DataFrame, *, tolerance: float = VOLUME_TOLERANCE
) -> ValidationReport:
    """``periods``: columns ``period`` and ``rows``, oldest first, the last one still filling.

    The newest COMPLETE period (the one before the last) is compared with the mean
    of up to VOLUME_HISTORY periods before it.
    """
    complete = periods.iloc[:-1] if len(periods) else periods
    if len(complete) < VOLUME_MIN_HISTORY + 1:
        return skipped_report(
            suite,
            f"no baseline yet: {len(complete)} complete period(s), need {VOLUME_MIN_HISTORY + 1}",
            {"periods": len(periods)},
        )
    current = complete.iloc[-1]
    history = complete.iloc[-1 - VOLUME_HISTORY : -1]
    baseline = float(history["rows"].mean())
    lo, hi = baseline * (1 - tolerance), baseline * (1 + tolerance)
    import great_expectations as gx

    frame = pd.DataFrame({"period": [str(current["period"])], "rows": [int(current["rows"])]})
    return validate_frame(
        frame,
        suite,
        [gx.expectations.ExpectColumnValuesToBeBetween(column="rows", min_value=lo, max_value=hi)],
        details={
            "period": str(current["period"]),
            "rows": int(current["rows"]),
            "baseline_mean": round(baseline, 2),
            "baseline_periods": len(history),
            "tolerance": tolerance,
        },
    )


def history_volume_report(
    suite: str, current_rows: int, previous_rows: Sequence[int], *, tolerance: float = VOLUME_TOLERANCE
) -> ValidationReport:
    """Volume of a table without a time axis: its row count against previous materializations."""
    history = list(previous_rows)[-VOLUME_HISTORY:]
    if len(history) < VOLUME_MIN_HISTORY:
        return skipped_report(
            suite,
            f"no baseline yet: {len(history)} previous materialization(s) with a row count, need {VOLUME_MIN_HISTORY}",
            {"rows": current_rows},
        )
    baseline = sum(history) / len(history)
    import great_expectations as gx

    return validate_frame(
        pd.DataFrame({"rows": [current_rows]}),
        suite,
        [
            gx.expectations.ExpectColumnValuesToBeBetween(
                column="rows", min_value=baseline * (1 - tolerance), max_value=baseline * (1 + tolerance)
            )
        ],
        details={"rows": current_rows, "baseline_mean": round(baseline, 2), "baseline_periods": len(history)},
    )


def lag_report(suite: str, lags: pd.DataFrame, max_lag: timedelta, what: str) -> ValidationReport:
    """``lags``: a column ``lag_seconds`` (one row per thing judged, e.g. per shard) plus labels."""
    import great_expectations as gx

    return validate_frame(
        lags,
        suite,
        [
            gx.expectations.ExpectColumnValuesToBeBetween(
                column="lag_seconds", max_value=max_lag.total_seconds()
            )
        ],
        details={"max_lag_seconds": max_lag.total_seconds(), "measures": what},
    )


# ------------------------------------------------------------------------ bronze


def bronze_integrity(paths: AegisPaths | Lake, *, sample_rows: int = BRONZE_SAMPLE_ROWS) -> ValidationReport:
    """Keys not null, kind in the enum, schema_version == 1, event_id unique, on the newest rows."""
    import great_expectations as gx

    suite = "bronze_integrity"
    if not _has_bronze(paths):
        # Blocking: nothing must flow on from an empty lake, but say why instead of a stack trace.
        return failed_report(suite, f"{NO_BRONZE} {NO_BRONZE_HINT}", _bronze_where(paths))
    with _memory(paths) as con:
        df = con.execute(
            f"""
            select event_id, ts, shard_id, kind, schema_version, batch_id, ingested_at
            from {_bronze_sql(paths)}
            order by ingested_at desc nulls first
            limit {int(sample_rows)}
            """
        ).df()
    expectations: list[Any] = [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in BRONZE_KEYS]
    expectations += [
        gx.expectations.ExpectColumnValuesToBeInSet(column="kind", value_set=list(KINDS)),
        gx.expectations.ExpectColumnValuesToBeInSet(column="schema_version", value_set=[SCHEMA_VERSION]),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="schema_version"),
        gx.expectations.ExpectColumnValuesToBeUnique(column="event_id"),
        gx.expectations.ExpectTableRowCountToBeBetween(min_value=1),
    ]
    return validate_frame(df, suite, expectations, details={"sampled_newest_rows": len(df)})


def bronze_volume(paths: AegisPaths | Lake) -> ValidationReport:
    """Events per game hour: the newest complete hour against the trailing hours."""
    if not _has_bronze(paths):
        return skipped_report("bronze_volume", NO_BRONZE, _bronze_where(paths))
    with _memory(paths) as con:
        periods = con.execute(
            f"select date_trunc('hour', ts) as period, count(*) as rows from {_bronze_sql(paths)} group by 1 order by 1"
        ).df()
    return volume_report("bronze_volume", periods)


def bronze_freshness(paths: AegisPaths | Lake, now: datetime | None = None) -> ValidationReport:
    """The lake receives data (newest ingest within BRONZE_MAX_INGEST_AGE of the wall clock),
    and every shard keeps up with the fleet (newest event within BRONZE_MAX_SHARD_LAG of the
    fleet's newest, in game time: the world's clock is simulated, so only event-time lag
    between shards is meaningful there)."""
    now = now or datetime.now(UTC)
    if not _has_bronze(paths):
        return skipped_report("bronze_freshness", NO_BRONZE, _bronze_where(paths))
    with _memory(paths) as con:
        lags = con.execute(
            f"""
            with per_shard as (
                select shard_id, max(ts) as newest, max(ingested_at) as ingested
                from {_bronze_sql(paths)}
                group by shard_id
            )
            select
                shard_id,
                newest,
                epoch(max(newest) over () - newest) as lag_seconds,
                epoch(?::timestamptz - max(ingested) over ()) as ingest_age_seconds
            from per_shard
            order by lag_seconds desc
            """,
            [now],
        ).df()
    import great_expectations as gx

    return validate_frame(
        lags,
        "bronze_freshness",
        [
            gx.expectations.ExpectColumnValuesToBeBetween(
                column="lag_seconds", max_value=BRONZE_MAX_SHARD_LAG.total_seconds()
            ),
            gx.expectations.ExpectColumnMaxToBeBetween(
                column="ingest_age_seconds", max_value=BRONZE_MAX_INGEST_AGE.total_seconds()
            ),
        ],
        details={
            "max_shard_lag_seconds": BRONZE_MAX_SHARD_LAG.total_seconds(),
            "max_ingest_age_seconds": BRONZE_MAX_INGEST_AGE.total_seconds(),
        },
    )


# ------------------------------------------------------------------------- marts


def _spec(mart: str) -> MartSpec:
    try:
        return MART_SPECS[mart]
    except KeyError:
        raise ValueError(
            f"no checks are defined for {mart!r}; known marts: {', '.join(MART_SPECS)}"
        ) from None


def mart_integrity_frame(df: pd.DataFrame, mart: str) -> ValidationReport:
    """Keys not null, rates within [0, 1], at least one row: on a frame (testable without DuckDB)."""
    import great_expectations as gx

    spec = _spec(mart)
    expectations: list[Any] = [gx.expectations.ExpectTableRowCountToBeBetween(min_value=1)]
    expectations += [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in spec.keys]
    expectations += [
        gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0.0, max_value=1.0)
        for c in spec.rates
    ]
    expectations += [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in spec.rates]
    return validate_frame(df, f"{mart}_integrity", expectations)


def lake_span(paths: AegisPaths | Lake) -> timedelta | None:
    """Game time the bronze lake covers (newest minus oldest event); None without bronze."""
    if not _has_bronze(paths):
        return None
    with _memory(paths) as con:
        row = con.execute(f"select min(ts), max(ts) from {_bronze_sql(paths)}").fetchone()
    if not row or row[0] is None:
        return None
    return pd.Timestamp(row[1]) - pd.Timestamp(row[0])


def mart_integrity(paths: AegisPaths, mart: str, lake: Lake | None = None) -> ValidationReport:
    """Integrity of a mart; an empty mart over a lake younger than ``MART_WARMUP`` is warming up.

    Right after a fresh start the lake holds minutes of telemetry and the bucketed
    marts rightly have no complete bucket yet: that is not a failure, and a red run
    would teach operators to ignore red runs. An empty mart over a lake old enough
    to fill it still fails.
    """
    spec = _spec(mart)
    cols = ", ".join(dict.fromkeys([*spec.keys, *spec.rates]))
    with connect_warehouse(paths.warehouse) as con:
        df = con.execute(f"select {cols} from main.{mart}").df()
    if df.empty:
        span = lake_span(lake or paths)
        if span is not None and span < MART_WARMUP:
            minutes = span.total_seconds() / 60
            return skipped_report(
                f"{mart}_integrity",
                f"warming up: the lake holds {minutes:.1f} game minutes of telemetry and {mart} needs "
                f"{MART_WARMUP.total_seconds() / 60:.0f} before its first complete bucket",
                {"lake_minutes": round(minutes, 2), "warmup_minutes": MART_WARMUP.total_seconds() / 60},
            )
    return mart_integrity_frame(df, mart)


def mart_row_count(paths: AegisPaths, mart: str) -> int:
    _spec(mart)
    with connect_warehouse(paths.warehouse) as con:
        row = con.execute(f"select count(*) from main.{mart}").fetchone()
    return int(row[0]) if row else 0


def mart_volume(paths: AegisPaths, mart: str, previous_rows: Sequence[int] = ()) -> ValidationReport:
    spec = _spec(mart)
    suite = f"{mart}_volume"
    if spec.time_column is None:
        return history_volume_report(suite, mart_row_count(paths, mart), previous_rows)
    with connect_warehouse(paths.warehouse) as con:
        periods = con.execute(
            f"select date_trunc('{spec.period}', {spec.time_column}) as period, count(*) as rows "
            f"from main.{mart} group by 1 order by 1"
        ).df()
    return volume_report(suite, periods)


def mart_freshness(paths: AegisPaths, mart: str, lake: Lake | None = None) -> ValidationReport:
    """The mart covers the lake: its newest time is within max_lag of bronze's newest event."""
    spec = _spec(mart)
    suite = f"{mart}_freshness"
    if spec.time_column is None:
        return skipped_report(
            suite, f"{mart} has no time axis; its freshness is its upstream's (stg_lake__events)"
        )
    with connect_warehouse(paths.warehouse) as con:
        row = con.execute(f"select max({spec.time_column})::timestamptz from main.{mart}").fetchone()
    newest_mart = row[0] if row else None
    src = lake or paths
    if not _has_bronze(src):
        return skipped_report(suite, NO_BRONZE, _bronze_where(src))
    with _memory(src) as con:
        lake_row = con.execute(f"select max(ts) from {_bronze_sql(src)}").fetchone()
    newest_lake = lake_row[0] if lake_row else None
    if newest_lake is None:
        return skipped_report(suite, "the lake holds no events")
    lag = (newest_lake - newest_mart).total_seconds() if newest_mart is not None else float("inf")
    frame = pd.DataFrame(
        {
            "mart": [mart],
            "newest_mart": [str(newest_mart)],
            "newest_lake": [str(newest_lake)],
            "lag_seconds": [lag],
        }
    )
    return lag_report(suite, frame, spec.max_lag, "lake newest event - mart newest time")
