"""Windows, split, content hash and bad inputs of the training dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aegis.telemetry import KPI_COLUMNS, KPI_KEY_COLUMNS, config_columns
from aegis.worldmodel.dataset import (
    TARGET_KPIS,
    DatasetError,
    SplitConfig,
    WorldModelDataset,
    build_dataset,
    clean_kpi_frame,
    content_hash,
    load_kpi_frame,
    shard_windows,
)
from aegis.worldmodel.synthetic import synthetic_kpis


def test_synthetic_rows_have_exactly_the_mart_contract() -> None:
    rows = synthetic_kpis(shards=2, hours=2)
    assert list(rows.columns) == [*KPI_KEY_COLUMNS, *KPI_COLUMNS, *config_columns()]


def test_split_holds_out_whole_shards_and_the_latest_time(wm_dataset: WorldModelDataset) -> None:
    ds = wm_dataset
    train_shards = set(ds["train"].shard_ids)
    assert train_shards.isdisjoint(ds.held_out_shards)
    assert set(ds["test_shard"].shard_ids) == set(ds.held_out_shards)
    assert set(ds["test_time"].shard_ids) <= set(ds.train_shards)
    assert ds["train"].target_start.max() < ds["val"].target_start.min()
    assert ds["val"].target_start.max() < ds["test_time"].target_start.min()
    # the action is the next bucket's parameters; some test rows must carry a parameter change
    assert ds["test_shard"].params_changed.sum() > 0


def test_window_target_is_the_bucket_after_the_history(wm_rows: pd.DataFrame) -> None:
    rows, _ = clean_kpi_frame(wm_rows)
    shard = rows[rows.shard_id == "shard-00"].reset_index(drop=True)
    w = shard_windows(shard, window=4)
    assert len(w) == len(shard) - 4
    np.testing.assert_allclose(w.kpis[0, :, 0], shard["players_online"].to_numpy()[:4])
    assert w.target[0, TARGET_KPIS.index("players_online")] == pytest.approx(shard.loc[4, "players_online"])
    np.testing.assert_allclose(w.action[0], shard.loc[4, list(config_columns())].to_numpy(dtype=float))


def test_gap_in_the_bucket_grid_breaks_windows(wm_rows: pd.DataFrame) -> None:
    rows, _ = clean_kpi_frame(wm_rows)
    shard = rows[rows.shard_id == "shard-00"].reset_index(drop=True).iloc[:30]
    full = shard_windows(shard, window=4)
    gapped = shard_windows(shard.drop(index=10), window=4)
    # dropping bucket 10 kills every window whose span (5 buckets) contains it
    assert len(full) - len(gapped) == 5


def test_content_hash_is_stable_and_sensitive(wm_rows: pd.DataFrame) -> None:
    a = build_dataset(wm_rows)
    b = build_dataset(wm_rows.sample(frac=1.0, random_state=3))  # row order must not matter
    assert a.content_hash == b.content_hash and len(a.content_hash) == 64
    changed = wm_rows.copy()
    changed.loc[changed.index[100], "deaths_early"] += 1
    assert build_dataset(changed).content_hash != a.content_hash
    assert build_dataset(wm_rows, SplitConfig(seed=1)).content_hash != a.content_hash
    assert content_hash(a) == a.content_hash


def test_dataset_roundtrips_through_npz(tmp_path, wm_dataset: WorldModelDataset) -> None:
    path = wm_dataset.save(tmp_path / "ds.npz")
    back = WorldModelDataset.load(path)
    assert back.sizes() == wm_dataset.sizes()
    assert content_hash(back) == wm_dataset.content_hash


def test_split_bucket_rows_are_merged() -> None:
    rows = synthetic_kpis(shards=2, hours=3)
    extra = rows.iloc[[5]].copy()
    extra["config_version"] += 1
    extra["deaths_early"] = 7.0
    merged, report = clean_kpi_frame(pd.concat([rows, extra]))
    assert report.merged_buckets == 1
    bucket = merged[
        (merged.shard_id == rows.iloc[5].shard_id) & (merged.bucket_start == rows.iloc[5].bucket_start)
    ]
    assert len(bucket) == 1
    assert bucket["deaths_early"].iloc[0] == rows.iloc[5]["deaths_early"] + 7.0


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame(), "no KPI rows"),
        (
            synthetic_kpis(shards=2, hours=2).drop(columns=["deaths_mid", "p_drop_rate"]),
            "deaths_mid, p_drop_rate",
        ),
        (synthetic_kpis(shards=1, hours=12), "at least 2"),
        (synthetic_kpis(shards=3, hours=2), "too little telemetry"),
    ],
)
def test_bad_inputs_are_clear_errors(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        build_dataset(frame)


def test_nan_rows_are_dropped_and_counted_but_a_broken_mart_is_an_error() -> None:
    rows = synthetic_kpis(shards=4, hours=24)
    some = rows.copy()
    some.loc[some.index[:20], "inflation"] = np.nan
    ds = build_dataset(some)
    assert ds.clean.rows_invalid == 20
    mostly = rows.copy()
    mostly.loc[mostly.index[: int(len(rows) * 0.8)], "velocity"] = np.inf
    with pytest.raises(DatasetError, match=r"NaN/infinite.*velocity"):
        build_dataset(mostly)


def test_load_kpi_frame_reads_every_source(tmp_path) -> None:
    import duckdb

    rows = synthetic_kpis(shards=2, hours=1)
    rows.to_parquet(tmp_path / "k.parquet")
    rows.to_csv(tmp_path / "k.csv", index=False)
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create table fct_shard_kpis as select * from rows")
    con.close()
    for name in ("k.parquet", "k.csv", "w.duckdb"):
        assert len(load_kpi_frame(tmp_path / name)) == len(rows)
    with pytest.raises(DatasetError, match="does not exist"):
        load_kpi_frame(tmp_path / "missing.duckdb")
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    with pytest.raises(DatasetError, match="not found"):
        load_kpi_frame(empty)
