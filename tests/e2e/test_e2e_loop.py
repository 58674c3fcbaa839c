"""End to end, the loop closes on its own: a proposal from the marts goes through policy, simulation,
canary and live judgement to promotion in waves; a harmful change is rolled back on its own from its
pre-change snapshot, integrity intact, and ``aegis audit verify`` passes.

The real pieces: a world server subprocess (real HTTP, bearer tokens, fast clock), the lake and the
warehouse built by the real ``bronze_events`` and dbt assets, the real ``proposals`` asset (no
champion model yet: it ranks on the marts' evidence), the real ``canary_launch``,
``canary_judge_sensor``, ``canary_judgement`` and ``reality_delta`` with the profile's resource
classes, the real policy engine, simulation gate, changeset store and signed ledger.

Not the Dagster daemon: ``dagster dev`` and declarative automation would take minutes on a small
machine to do what this does in one, so the test plays the daemon's part. It materializes what
automation would (bronze, then the marts), evaluates the sensor with ``build_sensor_context`` on
the test's instance, and executes the run the sensor requests with exactly its run config and tags.
The harmful change is injected as a ranked proposal handed to ``canary_launch`` (a slower quest
pacing that the simulation gate lets through: its abandon rate stays inside the band, but players
finish far fewer quests).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import AEGIS, WorldServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(8 * 60)]
# One game hour per wall second: the pre-change history the judge needs (72 buckets) in seconds.
SPEED = "3600"
WORLD_ARGS = ("--shards-per-region", "3", "--no-explore")
PRE_HOURS = 7.0
MAX_BUCKETS = 72  # exposure budget of the e2e canaries (6 game hours)
DEADLINE_S = 5 * 60
HARMFUL_PACING = 1.5


def _resources(url: str) -> dict[str, Any]:
    from assets.warehouse import dbt_resource
    from pipelines.resources.changes import ChangeSetResource
    from pipelines.resources.game import GameBackendResource
    from pipelines.resources.lake import LakeResource
    from pipelines.resources.mlflow import MlflowResource

    return {
        "lake": LakeResource(),
        "dbt": dbt_resource("local"),
        "game": GameBackendResource(base_url=url),
        "mlflow": MlflowResource(),
        "changes": ChangeSetResource(backend_url=url, simulation_hours=1.0),
    }


def _build_warehouse(instance: Any, resources: dict[str, Any], marts: tuple[str, ...]) -> None:
    """What the landing sensor and automation do: ingest every pending batch, then build ``marts``."""
    import dagster as dg

    from assets import telemetry, warehouse

    selection = dg.AssetSelection.assets("bronze_events")
    for mart in marts:
        selection = selection | dg.AssetSelection.assets(mart).upstream()
    result = dg.materialize(
        [telemetry.bronze_events, warehouse.warehouse_dbt],
        selection=selection,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]


def _wait_game_time(client: Any, until: Any, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while client.health().game_time < until:
        assert time.monotonic() < deadline, f"world did not reach {until}"
        time.sleep(0.5)


def _harmful(client: Any, target: str) -> Any:
    from aegis.domain import AutonomousChangeSet, ParamChange
    from aegis.proposals.model import PredictedEffect, Proposal

    live = client.get_config(target).params.quest_pacing
    cs = AutonomousChangeSet(
        id="cs-e2e-harmful",
        target=target,
        diff={"quest_pacing": ParamChange(before=live, after=HARMFUL_PACING)},
        rationale="e2e: a slower quest pacing the gates let through",
    )
    return Proposal(
        changeset=cs,
        goal_id="late-quest-abandonment",
        hypothesis="slower stages give players time to finish late quests",
        predicted=[PredictedEffect(kpi="abandon_rate", mean=-0.01, lo=-0.03, hi=0.01)],
        utility=1.0,
        rank=1,
    )


def test_loop_promotes_a_proposal_and_rolls_back_a_harmful_change_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg

    from aegis.changes.store import ChangeSetStore
    from aegis.domain import Integrity, PromotionState
    from aegis.proposals.hypotheses import MARTS
    from aegis.telemetry import KPI_BUCKET_MINUTES
    from assets import canary
    from assets.proposals import proposals as proposals_asset

    S = PromotionState
    home = tmp_path / "aegis-home"
    monkeypatch.setenv("AEGIS_HOME", str(home))
    monkeypatch.setenv("AEGIS_PROFILE", "local")
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    world = WorldServer(home, speed=SPEED, args=WORLD_ARGS).start()
    try:
        from aegis.world.client import GameBackendClient

        client = GameBackendClient(world.url)
        start = client.health().game_time
        import datetime as _dt

        _wait_game_time(client, start + _dt.timedelta(hours=PRE_HOURS))
        timings["history"] = time.monotonic() - t0
        instance = dg.DagsterInstance.ephemeral()
        resources = _resources(world.url)
        _build_warehouse(instance, resources, MARTS)
        timings["warehouse_1"] = time.monotonic() - t0

        # 1. the marts -> ranked proposals -> the best one starts a canary (policy, simulation gate, apply)
        launch_cfg = dg.RunConfig(ops={"canary_launch": canary.LaunchConfig(max_buckets=MAX_BUCKETS)})
        result = dg.materialize(
            [proposals_asset, canary.canary_launch],
            instance=instance,
            resources=resources,
            run_config=launch_cfg,
        )
        assert result.success
        ranked = result.output_for_node("proposals")
        assert ranked, "the proposals asset found nothing to propose on the marts"
        store = ChangeSetStore()
        specs = store.canary_specs()
        assert len(specs) == 1, [s.changeset_id for s in specs]
        good_id = specs[0].changeset_id
        good = store.get(good_id)
        assert good.state == S.CANARY, good.reason
        assert good_id in {p.changeset.id for p in ranked}

        # 2. the harmful change, on a shard the first experiment does not use
        busy = {specs[0].canary, *specs[0].controls}
        target = next(s.id for s in client.shards() if s.id not in busy)

        @dg.asset(name="proposals")
        def injected() -> list:
            return [_harmful(client, target)]

        result = dg.materialize(
            [injected, canary.canary_launch], instance=instance, resources=resources, run_config=launch_cfg
        )
        assert result.success
        harmful = store.get("cs-e2e-harmful")
        assert harmful.state == S.CANARY, harmful.reason
        timings["launched"] = time.monotonic() - t0

        # 3. the loop: new KPI buckets -> sensor judges -> run acts, until both canaries are decided
        changes = resources["changes"]
        cursor = None
        runs = 0
        deadline = time.monotonic() + DEADLINE_S
        while store.get(good_id).state == S.CANARY or store.get("cs-e2e-harmful").state == S.CANARY:
            assert time.monotonic() < deadline, {s.changeset_id: s.judgement for s in store.canary_specs()}
            starts = [s.start for s in store.canary_specs() if s.start is not None]
            _wait_game_time(
                client, max(starts) + _dt.timedelta(minutes=KPI_BUCKET_MINUTES * (MAX_BUCKETS + 2))
            )
            _build_warehouse(instance, resources, ("fct_shard_kpis",))
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"changes": changes})
            sensed = canary.canary_judge_sensor(ctx)
            assert isinstance(sensed, dg.SensorResult)
            assert sensed.run_requests, sensed.skip_reason
            request = sensed.run_requests[0]
            cursor = sensed.cursor
            run = dg.materialize(
                [canary.canary_judgement, canary.reality_delta],
                instance=instance,
                resources=resources,
                run_config=request.run_config,
                tags=request.tags,
            )
            assert run.success
            runs += 1
        timings["decided"] = time.monotonic() - t0

        # the proposal was promoted on its own and rolled out in waves
        good = store.get(good_id)
        spec = store.canary_spec(good_id)
        assert good.state == S.PROMOTED, (good.reason, spec.judgement)
        assert spec.judgement["verdict"] == "promote"
        assert spec.rollout["status"] == "done", spec.rollout
        param, change = next(iter(good.changeset.diff.items()))
        for wave in spec.rollout["waves"]:
            for sid in wave:
                child = store.get(spec.rollout["children"][sid]) if sid in spec.rollout["children"] else None
                assert child is not None and child.state == S.PROMOTED, sid

        # the harmful change was rolled back on its own, from its snapshot, integrity intact
        bad = store.get("cs-e2e-harmful")
        bad_spec = store.canary_spec("cs-e2e-harmful")
        assert bad.state == S.ROLLED_BACK, (bad.reason, bad_spec.judgement)
        assert bad_spec.judgement["verdict"] in ("rollback", "inconclusive")
        assert bad.reason.startswith("canary verdict")
        validation = json.loads((home / "changesets" / "cs-e2e-harmful" / "validation.json").read_text())
        assert validation["rollback"]["ok"] is True
        assert Integrity.model_validate(validation["rollback"]["after"]) == Integrity.model_validate(
            bad.snapshot["integrity"]
        )
        assert client.get_config(target).params.quest_pacing != HARMFUL_PACING

        # reflections, reality delta, the ledger
        reflections = {r["changeset_id"]: r for r in store.reflections()}
        assert reflections[good_id]["verdict"] == "promote" and reflections[good_id]["root_cause"] is None
        assert reflections["cs-e2e-harmful"]["root_cause"] in (
            "guardrail_regression",
            "model_error",
            "inconclusive",
        )
        assert (home / "proposals" / "calibration.json").exists()
        events = [r.payload.get("event") for r in _ledger_records(good_id)]
        assert "canary_started" in events and "verdict" in events and "promotion_wave" in events
        verify = subprocess.run([AEGIS, "audit", "verify"], capture_output=True, text=True, timeout=120)
        assert verify.returncode == 0, verify.stdout + verify.stderr

        # the CLI shows it
        listed = subprocess.run(
            [AEGIS, "canary", "list", "--json"], capture_output=True, text=True, timeout=120
        )
        assert listed.returncode == 0, listed.stderr
        states = {r["changeset_id"]: r["state"] for r in json.loads(listed.stdout)}
        assert states == {good_id: "promoted", "cs-e2e-harmful": "rolled_back"}
        shown = subprocess.run(
            [AEGIS, "canary", "status", "cs-e2e-harmful", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shown.returncode == 0, shown.stderr
        view = json.loads(shown.stdout)
        assert view["verdict"] == bad_spec.judgement["verdict"] and view["metrics"]
        assert 0 < view["exposure_used"] <= 1
        timings["total"] = time.monotonic() - t0
        print(f"e2e loop timings (s): {timings}; judgement runs: {runs}")
    finally:
        world.stop()


def _ledger_records(subject: str) -> list[Any]:
    from aegis.ledger.ledger import Ledger

    ledger = Ledger(read_only=True)
    try:
        return ledger.records(subject)
    finally:
        ledger.dispose()
