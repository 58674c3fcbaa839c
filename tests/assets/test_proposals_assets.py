"""The proposals asset end to end: a real world server, a small real warehouse, an empty MLflow, the ledger."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from aegis.config import AegisPaths
from aegis.proposals.model import Proposal
from assets.proposals import (
    GROUP,
    LATEST_FILE,
    MART_KEYS,
    MODEL_KEY,
    proposals,
    proposals_defs,
)
from assets.resources.changes import ChangeSetResource
from assets.resources.game import GameBackendResource
from assets.resources.lake import LakeResource
from assets.resources.mlflow import MlflowResource
from tests.aegis.proposals import mart_frames as mf
from tests.support import CANARY_WORLD_ARGS, WorldServer, free_port


def _resources(url: str) -> dict[str, object]:
    return {
        "game": GameBackendResource(base_url=url),
        "mlflow": MlflowResource(),
        "changes": ChangeSetResource(backend_url=url),
        "lake": LakeResource(),
    }


def _register_champion() -> None:
    """A small model trained on synthetic KPIs, registered and promoted as the evaluation asset would."""
    from aegis.worldmodel.dataset import build_dataset
    from aegis.worldmodel.pipeline import log_to_registry, train_with_baselines
    from aegis.worldmodel.synthetic import synthetic_kpis
    from aegis.worldmodel.train import TrainConfig

    ds = build_dataset(synthetic_kpis(shards=4, hours=14, seed=1))
    config = TrainConfig(epochs=3, members=2, hidden=16, seed=0)
    registry = MlflowResource().registry()
    registered = log_to_registry(registry, train_with_baselines(ds, config), ds, None, config)
    registry.promote(registered.version, "test champion")


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, dg.MetadataValue]:
    (mat,) = result.asset_materializations_for_node("proposals")
    return mat.metadata


@pytest.mark.slow  # a world server subprocess, MLflow, a tiny model and three Dagster runs: ~1-2 min
def test_proposals_rank_the_marts_against_live_configs_and_record_the_outcome(aegis_home: AegisPaths) -> None:
    from aegis.changes.store import ChangeSetStore
    from aegis.ledger.ledger import Ledger
    from aegis.world.client import GameBackendClient

    server = WorldServer(aegis_home.home, speed="60", args=CANARY_WORLD_ARGS).start()
    try:
        with GameBackendClient(server.url) as client:
            shards = client.shards()
            live = {s.id: client.get_config(s.id) for s in shards}
        regions = sorted({s.region for s in shards})
        assert len(regions) >= 2
        chosen = {s.id: s.region for s in shards if s.region in regions[:2]}
        kpis = mf.kpi_rows(chosen, hours=6)
        inflating = sorted(chosen)[-1]
        mf.write_warehouse(
            aegis_home.warehouse,
            fct_shard_kpis=kpis,
            fct_quest_abandonment=mf.abandonment(regions[0], regions=tuple(regions[:2])),
            fct_death_heatmap=mf.death_heatmap(regions[1], 4, regions=tuple(regions[:2])),
            fct_economy_daily=mf.economy(chosen, inflating=inflating),
            fct_server_health=mf.server_health(kpis),
        )
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize([proposals], resources=_resources(server.url), instance=instance)
        assert result.success
        ranked: list[Proposal] = result.output_for_node("proposals")
        assert ranked and [p.rank for p in ranked] == list(range(1, len(ranked) + 1))
        for p in ranked:  # every diff starts from what the shard runs now
            for name, change in p.changeset.diff.items():
                assert change.before == getattr(live[p.changeset.target].params, name)
            assert p.evidence["config_version"] == live[p.changeset.target].version
        kinds = {h["kind"] for p in ranked for h in p.evidence["hypotheses"]}
        assert {"abandonment", "deaths", "economy"} <= kinds
        meta = _metadata(result)
        assert "| # | shard | change | hypothesis |" in meta["ranking"].value
        assert "no champion" in meta["model"].value
        assert meta["proposals"].value == len(ranked)
        latest = json.loads((aegis_home.home / "proposals" / LATEST_FILE).read_text())
        assert [p["changeset"]["id"] for p in latest["proposals"]] == [p.changeset.id for p in ranked]
        assert latest["model"] is None and any("no champion" in n for n in latest["notes"])
        # the ranking outcome is in the signed ledger, in plain words
        ledger = Ledger()
        (rec,) = [r for r in ledger.records() if r.kind == "proposal"]
        assert rec.subject == ranked[0].changeset.id
        assert rec.payload["count"] == len(ranked) and rec.payload["summary"].startswith("ranked ")
        assert rec.payload["top"]["target"] == ranked[0].changeset.target
        assert meta["ledger_seq"].value == rec.seq
        # a change once proposed to the lifecycle is not proposed again on the same config
        store = ChangeSetStore()
        store.add(ranked[0].changeset)
        store.close()
        again = dg.materialize([proposals], resources=_resources(server.url), instance=instance)
        reranked: list[Proposal] = again.output_for_node("proposals")
        assert ranked[0].changeset.id not in {p.changeset.id for p in reranked}
        assert _metadata(again)["skipped_already_tried"].value == 1
        # a champion in the registry: effects and intervals now come from it
        _register_champion()
        with_model = dg.materialize([proposals], resources=_resources(server.url), instance=instance)
        assert "aegis-world-model v1 (champion)" in _metadata(with_model)["model"].value
        modelled: list[Proposal] = with_model.output_for_node("proposals")
        assert modelled
        sources = {p.evidence["effect_source"] for p in modelled}
        assert sources == {"world model aegis-world-model v1"}, sources
        assert all(p.predicted and all(e.lo <= e.mean <= e.hi for e in p.predicted) for p in modelled)
    finally:
        server.stop()


def test_an_unreachable_backend_is_a_clear_failure(aegis_home: AegisPaths) -> None:
    mf.write_warehouse(aegis_home.warehouse, fct_shard_kpis=mf.kpi_rows({"eu-1": "eu-west"}, hours=2))
    url = f"http://127.0.0.1:{free_port()}"
    result = dg.materialize(
        [proposals], resources=_resources(url), raise_on_error=False, instance=dg.DagsterInstance.ephemeral()
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error.message)
    assert "did not give the shards' current configs" in message and url in message


def test_a_bad_goal_file_fails_before_anything_else(aegis_home: AegisPaths, tmp_path) -> None:
    bad = tmp_path / "goals.json"
    bad.write_text(
        json.dumps({"goals": [{"id": "x", "name": "x", "kpi": "abandon_late", "direction": "minimize"}]})
    )
    result = dg.materialize(
        [proposals],
        resources=_resources("http://127.0.0.1:9"),
        run_config={"ops": {"proposals": {"config": {"goals_path": str(bad)}}}},
        raise_on_error=False,
        instance=dg.DagsterInstance.ephemeral(),
    )
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "did you mean 'abandons_late'?" in str(failure.event_specific_data.error.message)


def test_definitions_wire_the_marts_the_champion_and_the_automation() -> None:
    defs = dg.Definitions.merge(proposals_defs, dg.Definitions(resources=_resources("http://127.0.0.1:9")))
    node = defs.resolve_asset_graph().get(dg.AssetKey("proposals"))
    assert node.group_name == GROUP
    assert set(node.parent_keys) == {*MART_KEYS, MODEL_KEY}
    assert "proposals_refresh" in str(node.automation_condition.get_label())


def test_automation_reranks_once_when_the_kpi_mart_updates_then_waits_for_the_window() -> None:
    upstream = [dg.AssetSpec(k) for k in (*MART_KEYS, MODEL_KEY)]
    defs = dg.Definitions(assets=[proposals, *upstream], resources=_resources("http://127.0.0.1:9"))
    instance = dg.DagsterInstance.ephemeral()
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0  # nothing new to rank on (and no model needed to wait for)
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="fct_shard_kpis"))
    warming = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert warming.total_requested == 0  # the other marts and the first judged model do not exist yet
    for key in (*MART_KEYS, MODEL_KEY):
        if key != dg.AssetKey("fct_shard_kpis"):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key))
    updated = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=warming.cursor)
    assert updated.total_requested == 1
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="fct_shard_kpis"))
    soon = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=updated.cursor)
    assert soon.total_requested == 0  # at most once per refresh window
