"""End to end on the simulator: world run -> ingest -> dbt -> fct_shard_kpis -> train -> effects.

The simulator's exploration varies parameters; the model trained on its telemetry
must predict that harder quests raise deaths and abandonment, as the world does.
"""

from __future__ import annotations

import dagster as dg
import pytest

from aegis.config import AegisPaths
from aegis.domain import AutonomousChangeSet, ParamChange
from aegis.worldmodel.dataset import build_dataset, read_warehouse
from aegis.worldmodel.effects import predict_effects
from aegis.worldmodel.pipeline import train_with_baselines
from aegis.worldmodel.train import TrainConfig

SIM_HOURS = 36.0
PLAYERS = 150


@pytest.mark.slow  # simulates 36 game hours, ingests, runs dbt and trains: minutes
def test_simulated_world_difficulty_effect_direction(aegis_home: AegisPaths) -> None:
    from aegis.world.runner import run_world
    from assets import telemetry, warehouse
    from assets.resources.dbt import dbt_resource
    from assets.resources.lake import LakeResource

    run_world(aegis_home, hours=SIM_HOURS, seed=11, players_per_shard=PLAYERS, explore=True)
    instance = dg.DagsterInstance.ephemeral()
    ingest = dg.materialize([telemetry.bronze_events], resources={"lake": LakeResource()}, instance=instance)
    assert ingest.success
    dbt = dg.materialize(
        [warehouse.warehouse_dbt],
        resources={"dbt": dbt_resource("local"), "lake": LakeResource()},
        instance=instance,
    )
    assert dbt.success
    rows = read_warehouse(aegis_home.warehouse)
    ds = build_dataset(rows)
    assert ds.summary()["param_changes_in_test"]["test_shard"] > 0
    outcome = train_with_baselines(ds, TrainConfig(epochs=30, members=3, hidden=32))
    model = outcome.reports["world_model"]
    for split in ("test_time", "test_shard"):
        assert model.splits[split].relative_mae < outcome.reports["persistence"].splits[split].relative_mae

    shard = ds.train_shards[0]
    history = rows[rows.shard_id == shard].sort_values("bucket_start")
    current = history.iloc[-1]
    before = [float(current[f"p_quest_difficulty_{i}"]) for i in range(5)]
    harder = AutonomousChangeSet(
        target=shard,
        diff={
            "quest_difficulty": ParamChange(
                before=before, after=[min(3.0, round(b * 1.4, 4)) for b in before]
            )
        },
    )
    effects = predict_effects(harder, history, outcome.model)
    deaths = sum(effects[k].delta for k in ("deaths_early", "deaths_mid", "deaths_late"))
    abandons = sum(effects[k].delta for k in ("abandons_early", "abandons_mid", "abandons_late"))
    # the example: more difficulty -> more deaths (and more abandonment)
    assert deaths > 0, {k: v.delta for k, v in effects.items()}
    assert abandons > 0, {k: v.delta for k, v in effects.items()}
    assert effects["abandon_rate"].delta > 0, effects["abandon_rate"]
