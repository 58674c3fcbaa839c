"""The warehouse reads bronze in place: stg_lake__events is a view that always equals
bronze, with UTC buckets and dates computed by integer arithmetic, and the funnel's
aggregated shift equals its definition over raw events."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from aegis.config import AegisPaths
from aegis.quality.synthetic_lake import write_synthetic_lake

DBT_DIR = Path(__file__).resolve().parents[2] / "dbt"

pytestmark = pytest.mark.slow


def _build(home: AegisPaths, target: Path) -> None:
    dbt = Path(sys.executable).with_name("dbt")
    args = [str(dbt), "build", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)]
    args += ["--target-path", str(target), "--log-path", str(target / "logs")]
    args += ["--vars", json.dumps({"aegis_home": str(home.home)})]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"dbt build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert "ERROR=0" in proc.stdout and "WARN=0" in proc.stdout, proc.stdout[-2000:]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AegisPaths, Path]]:
    root = tmp_path_factory.mktemp("stgview")
    home = AegisPaths.from_env(root / "home").ensure()
    write_synthetic_lake(home, hours=2, n_shards=2, players_per_shard=25, seed=3)
    target = root / "target"
    _build(home, target)
    yield home, target


def _con(home: AegisPaths) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(home.warehouse), read_only=True)
    con.execute("set TimeZone = 'UTC'")
    return con


def test_staging_is_a_view_equal_to_bronze(lake) -> None:
    home, _ = lake
    bronze = pq.read_table(sorted(home.bronze.glob("*/*.parquet")))
    with _con(home) as con:
        kinds = dict(con.execute("select table_name, table_type from information_schema.tables").fetchall())
        assert kinds["stg_lake__events"] == "VIEW"
        assert kinds["fct_shard_kpis"] == "BASE TABLE"
        n, distinct = con.execute(
            "select count(*), count(distinct event_id) from stg_lake__events"
        ).fetchone()
    assert n == distinct == bronze.num_rows
    assert pc.count_distinct(bronze.column("event_id")).as_py() == n


def test_buckets_and_dates_equal_duckdbs_calendar_functions(lake) -> None:
    home, _ = lake
    with _con(home) as con:
        bad = con.execute(
            """select count(*) from stg_lake__events
               where bucket_start <> time_bucket(interval '5 minutes', ts) or event_date <> cast(ts as date)"""
        ).fetchone()[0]
        types = dict(
            con.execute("select column_name, column_type from (describe stg_lake__events)").fetchall()
        )
    assert bad == 0
    assert types["bucket_start"] == "TIMESTAMP WITH TIME ZONE" and types["event_date"] == "DATE"


def test_funnel_equals_its_definition_over_raw_events(lake) -> None:
    home, _ = lake
    with _con(home) as con:
        diff = con.execute(
            """
            with e as (select quest_id, stage, region, kind from stg_lake__events where kind like 'quest_%'),
            final as (
                select quest_id, coalesce(max(stage) filter (where kind = 'quest_complete'), max(stage)) as f
                from e group by quest_id
            ),
            expected as (
                select quest_id, stage, region,
                       count(*) filter (where role = 'entry') as starts,
                       count(*) filter (where role = 'quest_stage') as completions,
                       count(*) filter (where role = 'quest_abandon') as abandonments,
                       count(*) filter (where role = 'quest_complete') as quest_completions
                from (
                    select quest_id, stage, region, 'entry' as role from e where kind = 'quest_start'
                    union all
                    select e.quest_id, e.stage + 1, e.region, 'entry' from e join final using (quest_id)
                    where e.kind = 'quest_stage' and e.stage < final.f
                    union all
                    select quest_id, stage, region, kind from e where kind <> 'quest_start'
                ) group by all
            ),
            got as (
                select quest_id, stage, region, starts, completions, abandonments, quest_completions
                from fct_progression_funnel
            )
            select (select count(*) from (select * from expected except all select * from got)),
                   (select count(*) from (select * from got except all select * from expected)),
                   (select count(*) from got)
            """
        ).fetchone()
    assert diff[0] == 0 and diff[1] == 0 and diff[2] > 0


def test_a_rewritten_batch_is_seen_as_rewritten(lake) -> None:
    """Re-processing replaces a batch's bronze file; the warehouse never keeps the old rows beside it."""
    home, target = lake
    path = sorted(home.bronze.glob("*/*.parquet"))[0]
    table = pq.read_table(path)
    kept = table.slice(0, table.num_rows // 2)
    with _con(home) as con:
        before = con.execute("select count(*) from stg_lake__events").fetchone()[0]
    pq.write_table(kept, path)
    _build(home, target)
    with _con(home) as con:
        after = con.execute("select count(*) from stg_lake__events").fetchone()[0]
        deaths = con.execute("select sum(deaths) from fct_death_heatmap").fetchone()[0]
        raw = con.execute("select count(*) from stg_lake__events where kind = 'combat_death'").fetchone()[0]
    assert after == before - (table.num_rows - kept.num_rows)
    assert deaths == raw
