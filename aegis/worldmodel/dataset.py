"""Training windows for the world model, built from ``fct_shard_kpis`` rows.

A sample is one shard's recent history (``window`` consecutive KPI buckets with
the parameters that were in force) plus the action (the parameters in force in
the next bucket) and the target (that next bucket's KPIs). Windows never span a
gap in a shard's bucket grid: a crashed shard or a dropped row breaks the
sequence instead of silently joining two distant moments.

The split holds out whole shards (does the model generalise to a shard it never
saw?) and the most recent time of the training shards (does it generalise to
the future?). Both are reported; promotion needs both. The dataset carries a
content hash (sha256 over the canonical arrays) so an MLflow run names exactly
what it was trained and judged on.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from aegis import warehouse as warehouse_db
from aegis.domain import PARAM_BOUNDS, WorldParams
from aegis.telemetry import KPI_BUCKET_MINUTES, KPI_COLUMNS, KPI_KEY_COLUMNS, config_columns
from aegis.worldmodel.settings import (
    DEFAULT_TEST_SHARD_FRACTION,
    DEFAULT_TEST_TIME_FRACTION,
    DEFAULT_VAL_FRACTION,
    DEFAULT_WINDOW,
    KPI_TABLE,
)

PARAM_COLUMNS: tuple[str, ...] = tuple(config_columns())
INPUT_KPIS: tuple[str, ...] = KPI_COLUMNS
# What the model predicts: the KPIs a tuning change is judged by (the list).
TARGET_KPIS: tuple[str, ...] = (
    "deaths_early",
    "deaths_mid",
    "deaths_late",
    "abandons_early",
    "abandons_mid",
    "abandons_late",
    "abandon_rate",
    "completions_early",
    "completions_mid",
    "completions_late",
    "quest_completions",
    "currency_sources",
    "currency_sinks",
    "inflation",
    "velocity",
    "tick_p95_ms",
    "players_online",
    "churn_rate",
)
# Columns that add up when two rows of one bucket (a config change mid-bucket) are merged.
ADDITIVE_KPIS: tuple[str, ...] = (
    "sessions_started",
    "deaths_early",
    "deaths_mid",
    "deaths_late",
    "quest_starts",
    "completions_early",
    "completions_mid",
    "completions_late",
    "quest_completions",
    "abandons_early",
    "abandons_mid",
    "abandons_late",
    "currency_sources",
    "currency_sinks",
    "net_inflow",
    "trade_volume",
    "trades",
    "reconnects",
    "churned",
)
N_TIME_FEATURES = 2  # hour of day as sin/cos: the world has a daily rhythm
MIN_TRAIN_WINDOWS = 64
MIN_EVAL_WINDOWS = 8
# Splits in canonical order (the content hash depends on it).
SPLITS: tuple[str, ...] = ("train", "val", "test_time", "test_shard")
MAX_NAN_SHARE = 0.5  # more invalid rows than this: the source is broken, not noisy


class DatasetError(ValueError):
    """The KPI rows cannot make a training set; the message says why and what to do."""


# ------------------------------------------------------------------ loading


def load_kpi_frame(source: str | Path) -> pd.DataFrame:
    """Read KPI rows from a DuckDB warehouse (table ``fct_shard_kpis``), Parquet or CSV."""
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"KPI source {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in {".duckdb", ".db"}:
        return read_warehouse(path)
    if suffix == ".parquet" or path.is_dir():
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path)
    raise DatasetError(f"unsupported KPI source {path.name!r}: expected .duckdb, .parquet or .csv")


def read_warehouse(warehouse: Path, table: str = KPI_TABLE) -> pd.DataFrame:
    """``fct_shard_kpis`` from the warehouse, read-only (dbt may be writing elsewhere)."""
    import duckdb

    if not warehouse_db.available(Path(warehouse)):
        raise DatasetError(f"warehouse {warehouse} does not exist: run the telemetry and dbt assets first")
    try:
        con = warehouse_db.connect(Path(warehouse))
    except duckdb.Error as exc:
        raise DatasetError(f"cannot open warehouse {warehouse} read-only: {exc}") from exc
    try:
        found = con.execute(
            "select table_schema from information_schema.tables where table_name = ? order by table_schema = 'main' desc",
            [table],
        ).fetchall()
        if not found:
            raise DatasetError(f"table {table!r} not found in {warehouse}: run the dbt marts first")
        schema = found[0][0]
        return con.execute(f'select * from "{schema}"."{table}"').df()
    finally:
        con.close()


# --------------------------------------------------------------- validation


@dataclass
class CleanReport:
    rows_in: int
    rows_invalid: int
    merged_buckets: int
    shards: int

    def as_dict(self) -> dict[str, int]:
        return {
            "rows_in": self.rows_in,
            "rows_invalid": self.rows_invalid,
            "merged_buckets": self.merged_buckets,
            "shards": self.shards,
        }


def required_columns() -> list[str]:
    return ["shard_id", "bucket_start", *INPUT_KPIS, *PARAM_COLUMNS]


def clean_kpi_frame(df: pd.DataFrame) -> tuple[pd.DataFrame, CleanReport]:
    """Check the contract columns, coerce types, drop invalid rows, merge split buckets.

    Rows with a NaN or infinite KPI or parameter are dropped (and counted): the
    window builder then treats them as gaps. A frame that is mostly invalid is an
    error, not a dataset.
    """
    if df is None or len(df) == 0:
        raise DatasetError(
            "no KPI rows: the fct_shard_kpis mart is empty (run the world and the telemetry assets)"
        )
    missing = [c for c in required_columns() if c not in df.columns]
    if missing:
        raise DatasetError(
            f"KPI rows lack {len(missing)} contract column(s): {', '.join(missing[:12])}"
            + (" ..." if len(missing) > 12 else "")
        )
    out = df.loc[:, [c for c in (*KPI_KEY_COLUMNS, *INPUT_KPIS, *PARAM_COLUMNS) if c in df.columns]].copy()
    out["shard_id"] = out["shard_id"].astype(str)
    try:
        out["bucket_start"] = pd.to_datetime(out["bucket_start"], utc=True)
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"bucket_start is not a timestamp column: {exc}") from exc
    numeric = [*INPUT_KPIS, *PARAM_COLUMNS]
    out[numeric] = out[numeric].apply(pd.to_numeric, errors="coerce").astype("float64")
    if "config_version" not in out.columns:
        out["config_version"] = 0
    out["config_version"] = pd.to_numeric(out["config_version"], errors="coerce").fillna(0).astype("int64")
    values = out[numeric].to_numpy()
    valid = np.isfinite(values).all(axis=1) & out["bucket_start"].notna().to_numpy()
    rows_in = len(out)
    invalid = int((~valid).sum())
    if invalid > MAX_NAN_SHARE * rows_in:
        bad_cols = [c for c in numeric if not np.isfinite(out[c].to_numpy()).all()]
        raise DatasetError(
            f"{invalid} of {rows_in} KPI rows have NaN/infinite values (columns: {', '.join(bad_cols[:8])}); "
            "the mart is broken, fix it before training"
        )
    out = out.loc[valid]
    out, merged = _merge_split_buckets(out)
    out = out.sort_values(["shard_id", "bucket_start"], kind="mergesort").reset_index(drop=True)
    return out, CleanReport(rows_in, invalid, merged, out["shard_id"].nunique())


def _merge_split_buckets(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per (shard, bucket): a config change mid-bucket yields two mart rows.

    Counts add up; levels (players online, percentiles, prices) and the
    parameters come from the later config version, the one in force going on.
    """
    dup = df.duplicated(["shard_id", "bucket_start"], keep=False)
    if not dup.any():
        return df, 0
    single = df.loc[~dup]
    multi = df.loc[dup].sort_values(["shard_id", "bucket_start", "config_version"], kind="mergesort")
    grouped = multi.groupby(["shard_id", "bucket_start"], sort=False)
    last = grouped.last().reset_index()
    sums = grouped[list(ADDITIVE_KPIS)].sum().reset_index()
    last[list(ADDITIVE_KPIS)] = sums[list(ADDITIVE_KPIS)].to_numpy()
    finished = last["abandons_early"] + last["abandons_mid"] + last["abandons_late"]
    denom = finished + last["quest_completions"]
    last["abandon_rate"] = np.where(denom > 0, finished / denom.where(denom > 0, 1), 0.0)
    online = last["players_online"].where(last["players_online"] > 0, np.nan)
    last["reconnect_rate"] = (last["reconnects"] / online).fillna(0.0)
    last["churn_rate"] = (last["churned"] / online).fillna(0.0)
    return pd.concat([single, last[single.columns]], ignore_index=True), len(last)


# ------------------------------------------------------------------ windows


def symlog(x: np.ndarray) -> np.ndarray:
    """Compresses heavy-tailed currency values while keeping sign and zero."""
    return np.sign(x) * np.log1p(np.abs(x))


def symexp(z: np.ndarray) -> np.ndarray:
    return np.sign(z) * np.expm1(np.abs(z))


def param_scale(values: np.ndarray) -> np.ndarray:
    """Parameters scaled by their hard bounds to [0, 1]: fixed, so no fitting and no leakage."""
    lo, hi = _param_bounds()
    return (values - lo) / (hi - lo)


def _param_bounds() -> tuple[np.ndarray, np.ndarray]:
    lo: list[float] = []
    hi: list[float] = []
    defaults = WorldParams()
    for name, (a, b) in PARAM_BOUNDS.items():
        value = getattr(defaults, name)
        n = len(value) if isinstance(value, list) else 1
        lo.extend([a] * n)
        hi.extend([b] * n)
    return np.asarray(lo), np.asarray(hi)


def time_features(ts: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    idx = pd.DatetimeIndex(ts)
    hours = idx.hour.to_numpy() + idx.minute.to_numpy() / 60.0
    angle = 2 * math.pi * hours / 24.0
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


@dataclass
class Windows:
    """A set of samples in raw units; models bring their own normalisation."""

    kpis: np.ndarray  # [N, W, len(INPUT_KPIS)]
    params: np.ndarray  # [N, W, len(PARAM_COLUMNS)] parameters in force in each history bucket
    times: np.ndarray  # [N, W, 2]
    action: np.ndarray  # [N, len(PARAM_COLUMNS)] parameters in force in the predicted bucket
    action_time: np.ndarray  # [N, 2]
    target: np.ndarray  # [N, len(TARGET_KPIS)] observed next-bucket KPIs
    shard_ids: np.ndarray  # [N] str
    target_start: np.ndarray  # [N] datetime64[ns] of the predicted bucket

    def __len__(self) -> int:
        return int(self.kpis.shape[0])

    @property
    def window(self) -> int:
        return int(self.kpis.shape[1])

    @property
    def last_target(self) -> np.ndarray:
        """The last observed value of each target KPI (what persistence predicts)."""
        idx = [INPUT_KPIS.index(k) for k in TARGET_KPIS]
        return self.kpis[:, -1, idx]

    @property
    def params_changed(self) -> np.ndarray:
        """Rows where the action differs from the parameters in force at the end of the history."""
        return ~np.isclose(self.action, self.params[:, -1, :], rtol=0, atol=1e-9).all(axis=1)

    def subset(self, mask: np.ndarray) -> Windows:
        return Windows(**{k: getattr(self, k)[mask] for k in self.__dataclass_fields__})

    @classmethod
    def concat(cls, parts: Sequence[Windows], window: int) -> Windows:
        if not parts:
            return cls.empty(window)
        return cls(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in cls.__dataclass_fields__})

    @classmethod
    def empty(cls, window: int) -> Windows:
        nk, npar, nt = len(INPUT_KPIS), len(PARAM_COLUMNS), len(TARGET_KPIS)
        return cls(
            kpis=np.zeros((0, window, nk)),
            params=np.zeros((0, window, npar)),
            times=np.zeros((0, window, N_TIME_FEATURES)),
            action=np.zeros((0, npar)),
            action_time=np.zeros((0, N_TIME_FEATURES)),
            target=np.zeros((0, nt)),
            shard_ids=np.zeros((0,), dtype=object),
            target_start=np.zeros((0,), dtype="datetime64[ns]"),
        )


def shard_windows(shard: pd.DataFrame, window: int) -> Windows:
    """All windows of one shard's rows (sorted by time) that lie on an unbroken bucket grid."""
    if len(shard) <= window:
        return Windows.empty(window)
    step = pd.Timedelta(minutes=KPI_BUCKET_MINUTES)
    starts = pd.DatetimeIndex(shard["bucket_start"])
    index = np.asarray((starts - starts[0]) // step, dtype=np.int64)
    kpis = shard[list(INPUT_KPIS)].to_numpy(dtype=np.float64)
    params = shard[list(PARAM_COLUMNS)].to_numpy(dtype=np.float64)
    times = time_features(starts)
    targets = shard[list(TARGET_KPIS)].to_numpy(dtype=np.float64)
    # A sample ends at row j (the predicted bucket) when rows j-window..j are consecutive buckets.
    consecutive = np.diff(index) == 1
    run = np.zeros(len(index), dtype=np.int64)  # consecutive steps ending at each row
    for i in range(1, len(index)):
        run[i] = run[i - 1] + 1 if consecutive[i - 1] else 0
    ends = np.nonzero(run >= window)[0]
    if len(ends) == 0:
        return Windows.empty(window)
    hist = ends[:, None] + np.arange(-window, 0)[None, :]
    return Windows(
        kpis=kpis[hist],
        params=params[hist],
        times=times[hist],
        action=params[ends],
        action_time=times[ends],
        target=targets[ends],
        shard_ids=np.asarray(shard["shard_id"].to_numpy()[ends], dtype=object),
        target_start=starts[ends].tz_convert(None).to_numpy(dtype="datetime64[ns]"),
    )


@dataclass(frozen=True)
class SplitConfig:
    window: int = DEFAULT_WINDOW
    test_shard_fraction: float = DEFAULT_TEST_SHARD_FRACTION
    test_time_fraction: float = DEFAULT_TEST_TIME_FRACTION
    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = 0
    min_train_windows: int = MIN_TRAIN_WINDOWS
    min_eval_windows: int = MIN_EVAL_WINDOWS

    def __post_init__(self) -> None:
        if self.window < 1:
            raise DatasetError(f"window must be at least 1 bucket, got {self.window}")
        for name in ("test_shard_fraction", "test_time_fraction", "val_fraction"):
            v = getattr(self, name)
            if not 0.0 < v < 0.5:
                raise DatasetError(f"{name} must be in (0, 0.5), got {v}")


@dataclass
class WorldModelDataset:
    """Windows split four ways, with the facts an experiment tracker should record."""

    splits: dict[str, Windows]
    config: SplitConfig
    held_out_shards: list[str]
    train_shards: list[str]
    time_cutoffs: dict[str, str]
    clean: CleanReport
    content_hash: str = field(default="")
    # A few raw KPI rows (one training shard's last buckets): the MLflow input example.
    example_rows: pd.DataFrame | None = field(default=None, repr=False)

    def __getitem__(self, split: str) -> Windows:
        return self.splits[split]

    @property
    def window(self) -> int:
        return self.config.window

    def sizes(self) -> dict[str, int]:
        return {name: len(self.splits[name]) for name in SPLITS}

    def summary(self) -> dict[str, object]:
        return {
            "content_hash": self.content_hash,
            "window": self.config.window,
            "seed": self.config.seed,
            "sizes": self.sizes(),
            "held_out_shards": self.held_out_shards,
            "train_shards": self.train_shards,
            "time_cutoffs": self.time_cutoffs,
            "clean": self.clean.as_dict(),
            "param_changes_in_test": {
                s: int(self.splits[s].params_changed.sum()) for s in ("test_time", "test_shard")
            },
        }

    def save(self, path: Path) -> Path:
        """An ``.npz`` of every split, so a run can be reproduced from the artifact alone."""
        arrays: dict[str, np.ndarray] = {}
        for name in SPLITS:
            w = self.splits[name]
            for key in Windows.__dataclass_fields__:
                value = getattr(w, key)
                arrays[f"{name}__{key}"] = value.astype(str) if key == "shard_ids" else value
        meta = {**self.summary(), "config": self.config.__dict__}
        arrays["__meta__"] = np.asarray(json.dumps(meta, default=str))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
        return path

    @classmethod
    def load(cls, path: Path) -> WorldModelDataset:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"]))
            splits = {}
            for name in SPLITS:
                fields = {k: data[f"{name}__{k}"] for k in Windows.__dataclass_fields__}
                fields["shard_ids"] = fields["shard_ids"].astype(object)
                splits[name] = Windows(**fields)
        return cls(
            splits=splits,
            config=SplitConfig(**meta["config"]),
            held_out_shards=list(meta["held_out_shards"]),
            train_shards=list(meta["train_shards"]),
            time_cutoffs=dict(meta["time_cutoffs"]),
            clean=CleanReport(**meta["clean"]),
            content_hash=meta["content_hash"],
        )


def build_dataset(frame: pd.DataFrame, config: SplitConfig | None = None) -> WorldModelDataset:
    """Clean, window and split KPI rows; raises :class:`DatasetError` when they cannot train a model."""
    cfg = config or SplitConfig()
    rows, report = clean_kpi_frame(frame)
    shards = sorted(rows["shard_id"].unique())
    if len(shards) < 2:
        raise DatasetError(
            f"KPI rows cover {len(shards)} shard(s) ({', '.join(shards) or 'none'}); the world model holds out "
            "whole shards to test generalisation, so it needs at least 2"
        )
    rng = np.random.default_rng(cfg.seed)
    n_held = min(len(shards) - 1, max(1, round(cfg.test_shard_fraction * len(shards))))
    held = sorted(rng.permutation(shards)[:n_held].tolist())
    train_shards = [s for s in shards if s not in held]

    per_shard = {sid: shard_windows(g, cfg.window) for sid, g in rows.groupby("shard_id", sort=True)}
    train_pool = Windows.concat([per_shard[s] for s in train_shards], cfg.window)
    held_pool = Windows.concat([per_shard[s] for s in held], cfg.window)
    if len(train_pool) == 0:
        raise DatasetError(
            f"no window of {cfg.window + 1} consecutive {KPI_BUCKET_MINUTES}-minute buckets in the training shards; "
            "let the world run longer"
        )
    # Held-out time: global cutoffs over the training shards' predicted buckets.
    times = np.sort(np.unique(train_pool.target_start))
    test_cut = times[int(len(times) * (1 - cfg.test_time_fraction))]
    val_cut = times[int(len(times) * (1 - cfg.test_time_fraction - cfg.val_fraction))]
    t = train_pool.target_start
    splits = {
        "train": train_pool.subset(t < val_cut),
        "val": train_pool.subset((t >= val_cut) & (t < test_cut)),
        "test_time": train_pool.subset(t >= test_cut),
        "test_shard": held_pool,
    }
    sizes = {k: len(v) for k, v in splits.items()}
    short = [
        f"{k}={n} (need {cfg.min_train_windows if k == 'train' else cfg.min_eval_windows})"
        for k, n in sizes.items()
        if n < (cfg.min_train_windows if k == "train" else cfg.min_eval_windows)
    ]
    if short:
        raise DatasetError(
            f"too little telemetry for a trustworthy model: windows {', '.join(short)} "
            f"from {report.rows_in} KPI rows over {len(shards)} shards; let the world run longer"
        )
    ds = WorldModelDataset(
        splits=splits,
        config=cfg,
        held_out_shards=held,
        train_shards=train_shards,
        time_cutoffs={"val_from": str(pd.Timestamp(val_cut)), "test_from": str(pd.Timestamp(test_cut))},
        clean=report,
        example_rows=rows[rows["shard_id"] == train_shards[0]].tail(cfg.window).reset_index(drop=True),
    )
    ds.content_hash = content_hash(ds)
    return ds


def content_hash(ds: WorldModelDataset) -> str:
    """sha256 over the canonical arrays of every split (float64, C order, fixed split order)."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "window": ds.config.window,
                "inputs": INPUT_KPIS,
                "params": PARAM_COLUMNS,
                "targets": TARGET_KPIS,
            }
        ).encode()
    )
    for name in SPLITS:
        w = ds.splits[name]
        h.update(name.encode())
        for key in ("kpis", "params", "times", "action", "action_time", "target"):
            arr = np.ascontiguousarray(getattr(w, key), dtype="<f8")
            h.update(str(arr.shape).encode())
            h.update(arr.tobytes())
        h.update("\x1f".join(map(str, w.shard_ids)).encode())
        h.update(np.ascontiguousarray(w.target_start.astype("datetime64[ns]").astype("<i8")).tobytes())
    return h.hexdigest()


def history_windows(history: pd.DataFrame, window: int) -> tuple[Windows, pd.DataFrame]:
    """The last ``window`` buckets of one shard as a single sample without a target.

    Used at prediction time: the action and the target are filled by the caller.
    """
    rows, _ = clean_kpi_frame(history)
    shards = rows["shard_id"].unique()
    if len(shards) != 1:
        raise DatasetError(f"history must hold one shard's KPI rows, got {len(shards)} shards")
    if len(rows) < window:
        raise DatasetError(f"history has {len(rows)} valid buckets; the model needs the last {window}")
    tail = rows.iloc[-window:]
    step = pd.Timedelta(minutes=KPI_BUCKET_MINUTES)
    gaps = pd.DatetimeIndex(tail["bucket_start"]).to_series().diff().dropna()
    if (gaps != step).any():
        raise DatasetError(f"the last {window} buckets of the history are not consecutive (gap in telemetry)")
    next_start = pd.DatetimeIndex(tail["bucket_start"])[-1:] + step
    nt = len(TARGET_KPIS)
    sample = Windows(
        kpis=tail[list(INPUT_KPIS)].to_numpy(dtype=np.float64)[None],
        params=tail[list(PARAM_COLUMNS)].to_numpy(dtype=np.float64)[None],
        times=time_features(tail["bucket_start"])[None],
        action=tail[list(PARAM_COLUMNS)].to_numpy(dtype=np.float64)[-1:],
        action_time=time_features(next_start),
        target=np.full((1, nt), np.nan),
        shard_ids=np.asarray([shards[0]], dtype=object),
        target_start=next_start.tz_convert(None).to_numpy(dtype="datetime64[ns]"),
    )
    return sample, tail
