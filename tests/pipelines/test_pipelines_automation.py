"""The warehouse's automation condition, evaluated by Dagster's own evaluator on a graph of the
warehouse's shape: external config feed -> view, bronze (blocking check) -> staging -> mart."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from assets.warehouse import WAREHOUSE_AUTOMATION, WAREHOUSE_BUILD_WINDOW_CRON, warehouse_automation_condition

FEED = dg.AssetKey("world_configs")
MODELS = ("stg_lake__world_configs", "stg_lake__events", "fct_shard_kpis")
T0 = dt.datetime(2026, 3, 1, 12, 0, 10, tzinfo=dt.UTC)  # 10 s into a 2-minute window


def _graph(condition: dg.AutomationCondition, bronze_ok: dict[str, bool]) -> list:
    feed = dg.AssetSpec(FEED, description="external: landed by the world server")

    @dg.asset(name="bronze_events")
    def bronze() -> None:
        return None

    @dg.asset_check(asset="bronze_events", blocking=True)
    def integrity() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=bronze_ok["passed"])

    @dg.asset(deps=[FEED], automation_condition=condition)
    def stg_lake__world_configs() -> None:
        return None

    @dg.asset(deps=[bronze], automation_condition=condition)
    def stg_lake__events() -> None:
        return None

    @dg.asset_check(asset="stg_lake__events", blocking=True)
    def not_null() -> dg.AssetCheckResult:  # as dbt's tests are (dagster-dbt: severity error = blocking)
        return dg.AssetCheckResult(passed=True)

    @dg.asset(deps=[stg_lake__events, stg_lake__world_configs], automation_condition=condition)
    def fct_shard_kpis() -> None:
        return None

    return [feed, bronze, integrity, stg_lake__world_configs, stg_lake__events, not_null, fct_shard_kpis]


class Ticker:
    """Successive automation ticks with a cursor, at chosen wall-clock times."""

    def __init__(self, defs: list, instance: dg.DagsterInstance) -> None:
        self.defs, self.instance, self.cursor = defs, instance, None

    def tick(self, at: dt.datetime) -> set[str]:
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.cursor, evaluation_time=at
        )
        self.cursor = result.cursor
        return {name for name in MODELS if result.get_num_requested(dg.AssetKey(name))}


def _materialize(defs: list, instance: dg.DagsterInstance, *names: str) -> None:
    selection = dg.AssetSelection.assets(*names)
    selection = selection | dg.AssetSelection.checks_for_assets(*names)
    result = dg.materialize(defs, instance=instance, selection=selection, raise_on_error=False)
    assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == set(names)


def test_the_condition_is_what_every_dbt_model_carries() -> None:
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    models = [k for k in graph.materializable_asset_keys if k.path[-1].startswith(("stg_", "int_", "fct_"))]
    assert len(models) >= 9
    for key in models:
        assert graph.get(key).automation_condition == WAREHOUSE_AUTOMATION, key
    assert graph.get(dg.AssetKey("bronze_events")).automation_condition is None  # the landing sensor owns it


def test_plain_eager_never_builds_a_model_missing_at_first_evaluation() -> None:
    """Why the warehouse does not use eager(): the config view (no Dagster-tracked input) stays missing."""
    ok = {"passed": True}
    defs = _graph(dg.AutomationCondition.eager().ignore(dg.AssetSelection.assets(FEED)), ok)
    with dg.DagsterInstance.ephemeral() as instance:
        ticker = Ticker(defs, instance)
        assert ticker.tick(T0) == set()
        _materialize(defs, instance, "bronze_events")
        assert ticker.tick(T0 + dt.timedelta(seconds=15)) == {"stg_lake__events"}
        _materialize(defs, instance, "stg_lake__events")
        # fct_shard_kpis waits on stg_lake__world_configs, which eager() never requests
        for i in range(2, 5):
            assert ticker.tick(T0 + dt.timedelta(minutes=i)) == set()


def test_missing_models_are_built_and_updates_cascade_once_per_window() -> None:
    ok = {"passed": True}
    defs = _graph(warehouse_automation_condition(), ok)
    with dg.DagsterInstance.ephemeral() as instance:
        ticker = Ticker(defs, instance)
        # first evaluation: the view has no tracked input and is missing -> built; the rest wait for bronze
        assert ticker.tick(T0) == {"stg_lake__world_configs"}
        assert ticker.tick(T0 + dt.timedelta(seconds=15)) == set()  # requested this window: not again
        _materialize(defs, instance, "stg_lake__world_configs", "bronze_events")
        # staging and mart in one run: staging's blocking dbt tests stop the mart inside that run
        assert ticker.tick(T0 + dt.timedelta(seconds=30)) == {"stg_lake__events", "fct_shard_kpis"}
        _materialize(defs, instance, "stg_lake__events", "fct_shard_kpis")
        assert ticker.tick(T0 + dt.timedelta(seconds=45)) == set()
        # new bronze in the same window: held back (a build every ingest is too often), not dropped
        _materialize(defs, instance, "bronze_events")
        assert ticker.tick(T0 + dt.timedelta(seconds=60)) == set()
        assert ticker.tick(T0 + dt.timedelta(seconds=75)) == set()
        # next window (12:02): built
        next_window = T0.replace(minute=2, second=5)
        assert ticker.tick(next_window) == {"stg_lake__events", "fct_shard_kpis"}
        assert ticker.tick(next_window + dt.timedelta(seconds=15)) == set()
        # nothing new: nothing requested in the window after either
        _materialize(defs, instance, "stg_lake__events", "fct_shard_kpis")
        assert ticker.tick(T0.replace(minute=4, second=5)) == set()


def test_a_failed_blocking_check_upstream_stops_the_build() -> None:
    ok = {"passed": True}
    defs = _graph(warehouse_automation_condition(), ok)
    with dg.DagsterInstance.ephemeral() as instance:
        ticker = Ticker(defs, instance)
        assert ticker.tick(T0) == {"stg_lake__world_configs"}
        _materialize(defs, instance, "stg_lake__world_configs")
        ok["passed"] = False
        _materialize(defs, instance, "bronze_events")
        assert ticker.tick(T0 + dt.timedelta(seconds=30)) == set()
        assert ticker.tick(T0.replace(minute=2, second=5)) == set()  # still blocked in a new window
        ok["passed"] = True
        _materialize(defs, instance, "bronze_events")
        assert ticker.tick(T0.replace(minute=2, second=20)) == {"stg_lake__events", "fct_shard_kpis"}


def test_window_is_a_valid_cron() -> None:
    from dagster._utils.schedules import is_valid_cron_string

    assert is_valid_cron_string(WAREHOUSE_BUILD_WINDOW_CRON)
    with pytest.raises(Exception, match="Invalid cron"):
        dg.AutomationCondition.cron_tick_passed("every two minutes")
