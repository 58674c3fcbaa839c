"""Candidates, effects, utility and ranking: from hand-made marts to a ranked list of proposals."""

from __future__ import annotations

import pytest

from aegis.changes.lifecycle import DEFAULT_ALLOWED_TOOLS
from aegis.domain import (
    PARAM_BOUNDS,
    AutonomousChangeSet,
    Comparator,
    ExecutionPolicy,
    GoalSpec,
    ShardConfig,
    Verdict,
    WorldParams,
)
from aegis.policy.context import PolicyContext, ShardContext
from aegis.proposals.engine import (
    ShardStats,
    build_candidates,
    changeset_id,
    markdown_table,
    model_predictor,
    rank_proposals,
    read_latest,
    score,
    write_latest,
)
from aegis.proposals.goals import GoalBook, load_goals
from aegis.proposals.hypotheses import Hypothesis, MartFrames, Move
from aegis.proposals.model import PredictedEffect
from aegis.proposals.settings import ProposalSettings
from tests.aegis.proposals import mart_frames as mf

SHARDS = {"eu-1": "eu-west", "eu-2": "eu-west", "us-1": "us-east", "us-2": "us-east"}
SETTINGS = ProposalSettings.from_policy_data()
# Not the defaults: the diffs' `before` must be what each shard runs, not WorldParams().
LIVE = WorldParams(
    npc_aggression=1.3,
    spawn_rate=[1.0, 1.1, 0.9, 1.2, 1.25, 0.8],
    elite_share=[0.1, 0.12, 0.15, 0.1, 0.18, 0.2],
    quest_difficulty=[1.0, 1.05, 1.1, 1.2, 1.3],
    quest_pacing=1.1,
    quest_reward=0.9,
    drop_rate=1.05,
    source_multiplier=1.1,
    sink_multiplier=0.95,
    map_event_frequency=3.0,
)
CONFIGS = {s: ShardConfig(shard_id=s, version=7, params=LIVE) for s in SHARDS}


def _marts(**kw: object) -> MartFrames:
    kpis = mf.kpi_rows(SHARDS)
    return MartFrames(
        kpis=kpis,
        abandonment=kw.get("abandonment", mf.abandonment()),  # type: ignore[arg-type]
        deaths=kw.get("deaths", mf.death_heatmap()),  # type: ignore[arg-type]
        economy=kw.get("economy", mf.economy(SHARDS, inflating="us-2", deflating="eu-1")),  # type: ignore[arg-type]
        health=kw.get("health", mf.server_health(kpis, hot="eu-2")),  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def ranking():
    return rank_proposals(_marts(), load_goals(), CONFIGS, SETTINGS)


def test_candidates_cover_every_mutation_target_with_before_equal_to_the_live_config(ranking) -> None:
    touched = {name for p in ranking.proposals for name in p.changeset.diff}
    # max_candidates keeps the ranked head; count over all candidates instead
    cands = build_candidates(ranking.hypotheses, CONFIGS, SHARDS, SETTINGS)
    touched |= {name for c in cands for name in c.changeset.diff}
    assert touched == set(PARAM_BOUNDS), set(PARAM_BOUNDS) - touched
    for c in cands:
        ((name, change),) = c.changeset.diff.items()
        assert change.before == getattr(LIVE, name), (c.changeset.id, name)
        LIVE.apply(c.changeset.diff)  # a valid WorldParams after the change


def test_every_candidate_sits_inside_the_policy_auto_envelope(ranking) -> None:
    for p in ranking.proposals:
        ((name, change),) = p.changeset.diff.items()
        assert 0 < change.relative_delta() <= SETTINGS.max_auto_delta[name] + 1e-9, (name, change)
        lo, hi = SETTINGS.autonomy_bands[name]
        after = change.after if isinstance(change.after, list) else [change.after]
        assert all(lo <= v <= hi for v in after)
        assert p.evidence["route"] == "auto" and p.evidence["config_version"] == 7


def test_the_policy_gate_lets_the_top_candidates_run_on_their_own(ranking) -> None:
    from aegis.policy.engine import PolicyEngine

    engine = PolicyEngine()
    for p in ranking.proposals[:5]:
        context = PolicyContext(
            actor=ExecutionPolicy(
                actor=p.changeset.actor, allowed_tools=list(DEFAULT_ALLOWED_TOOLS), data_scope=["*"]
            ),
            shard=ShardContext(
                shard_id=p.changeset.target, region=SHARDS[p.changeset.target], players_online=300
            ),
            canary_players_share=0.05,
            # in-band predictions, so nothing is sent to simulation for lack of them
            predicted={"inflation": 0.0, "velocity": 1.0, "abandon_rate": 0.2, "deaths": 2.0},
        )
        decision = engine.decide(p.changeset, context)
        assert decision.verdict == Verdict.AUTO, (p.changeset.diff, decision.explanation)


def test_simulation_routed_candidates_are_larger_and_cost_utility() -> None:
    settings = SETTINGS.model_copy(update={"simulation_step_factor": 2.0})
    r = rank_proposals(_marts(), load_goals(), CONFIGS, settings)
    sims = [p for p in r.proposals if p.evidence["route"] == "simulate"]
    assert sims
    for p in sims:
        ((name, change),) = p.changeset.diff.items()
        assert change.relative_delta() > SETTINGS.max_auto_delta[name]
        assert p.evidence["utility_parts"]["simulation_cost"] == -settings.simulation_cost


def test_without_a_champion_the_ranking_says_so_and_uses_wide_prior_intervals(ranking) -> None:
    assert ranking.model is None
    assert any("no champion" in n for n in ranking.notes)
    top = ranking.proposals[0]
    assert top.evidence["effect_source"] == "prior (no champion model)"
    for e in top.predicted:
        assert e.lo <= e.mean <= e.hi
        if e.mean != 0:
            assert (e.hi - e.lo) / 2 == pytest.approx(SETTINGS.prior_interval_factor * abs(e.mean))
    assert [p.rank for p in ranking.proposals] == list(range(1, len(ranking.proposals) + 1))
    assert [p.utility for p in ranking.proposals] == sorted(
        (p.utility for p in ranking.proposals), reverse=True
    )
    assert top.utility > 0 and top.hypothesis and top.evidence["hypotheses"]


def test_ids_are_stable_and_tried_changes_are_left_out(ranking) -> None:
    again = rank_proposals(_marts(), load_goals(), CONFIGS, SETTINGS)
    assert [p.changeset.id for p in again.proposals] == [p.changeset.id for p in ranking.proposals]
    top = ranking.proposals[0].changeset
    assert top.id == changeset_id(top.target, 7, top.diff)
    later = rank_proposals(_marts(), load_goals(), CONFIGS, SETTINGS, tried={top.id})
    assert top.id not in {p.changeset.id for p in later.proposals} and later.skipped_tried == 1


def _goals(abandon_priority: int, deaths_priority: int) -> GoalBook:
    return GoalBook(
        goals=[
            GoalSpec(
                id="abandon",
                name="a",
                kpi="abandons_late",
                direction=Comparator.MINIMIZE,
                priority=abandon_priority,
            ),
            GoalSpec(
                id="deaths",
                name="d",
                kpi="deaths_late",
                direction=Comparator.MINIMIZE,
                priority=deaths_priority,
            ),
        ]
    )


def test_ranking_follows_goal_priority() -> None:
    # Only the late-stage abandonment and the deadly late zone are in the marts.
    marts = _marts(economy=mf.economy({}), health=mf.server_health(mf.kpi_rows(SHARDS)).iloc[:0])
    quests_first = rank_proposals(marts, _goals(1, 5), CONFIGS, SETTINGS)
    deaths_first = rank_proposals(marts, _goals(5, 1), CONFIGS, SETTINGS)
    assert quests_first.proposals[0].goal_id == "abandon"
    assert quests_first.proposals[0].changeset.target in ("eu-1", "eu-2")
    assert deaths_first.proposals[0].goal_id == "deaths"
    assert deaths_first.proposals[0].changeset.target in ("us-1", "us-2")


def _stats() -> ShardStats:
    return ShardStats(
        level={"deaths_late": 5.0, "tick_p95_ms": 450.0}, scale={"deaths_late": 2.0, "tick_p95_ms": 20.0}
    )


def _goal_book(**kw: object) -> GoalBook:
    return GoalBook(
        guardrails={"tick_p95_ms": (0.0, 500.0)},
        goals=[GoalSpec(id="deaths", name="d", kpi="deaths_late", direction=Comparator.MINIMIZE, **kw)],  # type: ignore[arg-type]
    )


def test_more_uncertainty_means_less_utility() -> None:
    sure = {"deaths_late": PredictedEffect(kpi="deaths_late", mean=-1.0, lo=-1.2, hi=-0.8)}
    unsure = {"deaths_late": PredictedEffect(kpi="deaths_late", mean=-1.0, lo=-3.0, hi=1.0)}
    u_sure = score(sure, _stats(), _goal_book(), "eu-west", SETTINGS, "auto").utility
    u_unsure = score(unsure, _stats(), _goal_book(), "eu-west", SETTINGS, "auto").utility
    assert u_sure > u_unsure > 0
    # the right direction counts, the wrong one costs
    worse = {"deaths_late": PredictedEffect(kpi="deaths_late", mean=1.0, lo=0.8, hi=1.2)}
    assert score(worse, _stats(), _goal_book(), "eu-west", SETTINGS, "auto").utility < 0


def test_a_guardrail_the_interval_may_break_costs_utility() -> None:
    gain = PredictedEffect(kpi="deaths_late", mean=-1.0, lo=-1.2, hi=-0.8)
    safe = {"deaths_late": gain, "tick_p95_ms": PredictedEffect(kpi="tick_p95_ms", mean=5, lo=0, hi=10)}
    risky = {"deaths_late": gain, "tick_p95_ms": PredictedEffect(kpi="tick_p95_ms", mean=20, lo=0, hi=80)}
    s_safe = score(safe, _stats(), _goal_book(), "eu-west", SETTINGS, "auto")
    s_risky = score(risky, _stats(), _goal_book(), "eu-west", SETTINGS, "auto")
    assert "guardrail:tick_p95_ms" not in s_safe.parts
    # 450 + 80 leaves the [0, 500] band by 30 ms = 1.5 noise units, x guardrail_weight
    assert s_risky.parts["guardrail:tick_p95_ms"] == pytest.approx(-SETTINGS.guardrail_weight * 30 / 20)
    assert s_risky.utility < 0 < s_safe.utility


def test_no_credit_past_the_goal_target_and_goals_scoped_to_regions() -> None:
    eff = {"deaths_late": PredictedEffect(kpi="deaths_late", mean=-1.0, lo=-1.0, hi=-1.0)}
    reached = score(eff, _stats(), _goal_book(target=5.5), "eu-west", SETTINGS, "auto")
    open_ = score(eff, _stats(), _goal_book(target=1.0), "eu-west", SETTINGS, "auto")
    assert reached.utility == pytest.approx(0.0)  # already below target: nothing to gain
    assert open_.utility == pytest.approx(3 * 1.0 / 2.0)  # weight 6 - priority 3, gain 1, noise scale 2
    elsewhere = score(eff, _stats(), _goal_book(regions=["us-east"]), "eu-west", SETTINGS, "auto")
    assert elsewhere.utility == 0.0


def test_a_knob_at_its_band_edge_gives_no_candidate() -> None:
    edge = LIVE.model_copy(update={"npc_aggression": SETTINGS.autonomy_bands["npc_aggression"][0]})
    configs = {"eu-1": ShardConfig(shard_id="eu-1", version=1, params=edge)}
    hyp = Hypothesis(
        id="h",
        kind="deaths",
        text="t",
        evidence={},
        strength=1.0,
        moves=[Move("npc_aggression", -1)],
        shard="eu-1",
    )
    assert build_candidates([hyp], configs, {"eu-1": "eu-west"}, SETTINGS) == []
    zero = LIVE.model_copy(update={"elite_share": [0.0] * 6})
    hyp_up = Hypothesis(
        id="h",
        kind="deaths",
        text="t",
        evidence={},
        strength=1.0,
        moves=[Move("elite_share", +1, 2)],
        shard="eu-1",
    )
    configs = {"eu-1": ShardConfig(shard_id="eu-1", version=1, params=zero)}
    assert build_candidates([hyp_up], configs, {"eu-1": "eu-west"}, SETTINGS) == []


def test_latest_json_round_trips_and_the_table_reads_well(ranking, tmp_path) -> None:
    path = write_latest(tmp_path / "proposals" / "latest.json", ranking)
    back = read_latest(path)
    assert [p.changeset.id for p in back] == [p.changeset.id for p in ranking.proposals]
    assert isinstance(back[0].changeset, AutonomousChangeSet)
    table = markdown_table(ranking.proposals)
    assert table.splitlines()[0].startswith("| # | shard | change | hypothesis |")
    assert "→" in table and "[" in table


@pytest.fixture(scope="module")
def trained_model():
    from aegis.worldmodel.dataset import SplitConfig, build_dataset
    from aegis.worldmodel.train import TrainConfig, fit_world_model

    ds = build_dataset(mf.kpi_rows(SHARDS, hours=14, seed=3, explore=True), SplitConfig(window=12))
    return fit_world_model(ds["train"], ds["val"], TrainConfig(epochs=3, members=3, hidden=16, seed=0)).model


def test_with_a_model_effects_and_intervals_come_from_it(trained_model) -> None:
    from aegis.worldmodel.effects import predict_effects

    predictor = model_predictor(trained_model)
    r = rank_proposals(_marts(), load_goals(), CONFIGS, SETTINGS, predictor, "aegis-world-model v1")
    assert r.model == "aegis-world-model v1" and not any("no champion" in n for n in r.notes)
    top = r.proposals[0]
    assert top.evidence["effect_source"] == "world model aegis-world-model v1"
    direct = predict_effects(top.changeset, _marts().history(top.changeset.target), trained_model)
    for e in top.predicted:
        if e.kpi in direct:
            assert (e.mean, e.lo, e.hi) == pytest.approx(
                (direct[e.kpi].delta, direct[e.kpi].low, direct[e.kpi].high)
            )
    assert set(top.evidence["predicted_levels"]) >= {"abandon_rate", "inflation", "velocity"}


def test_a_shard_the_model_cannot_read_falls_back_to_the_prior_and_says_why(trained_model) -> None:
    marts = _marts()
    short = marts.kpis[
        (marts.kpis.shard_id != "us-2")
        | (
            marts.kpis.bucket_start
            < marts.kpis.bucket_start.min() + __import__("pandas").Timedelta(minutes=30)
        )
    ]
    marts.kpis = short
    r = rank_proposals(marts, load_goals(), CONFIGS, SETTINGS, model_predictor(trained_model), "v1")
    us2 = [p for p in r.proposals if p.changeset.target == "us-2"]
    assert us2 and all(p.evidence["effect_source"].startswith("prior (model failed") for p in us2)
    assert any(n.startswith("us-2: the model could not predict") for n in r.notes)


def test_the_reality_delta_widens_model_intervals_and_lowers_utility(trained_model) -> None:
    predictor = model_predictor(trained_model)
    plain = rank_proposals(_marts(), load_goals(), CONFIGS, SETTINGS, predictor, "v1")
    wide = rank_proposals(_marts(), load_goals(), CONFIGS, SETTINGS, predictor, "v1", interval_scale=2.0)
    assert any("widened x2.00" in n for n in wide.notes)
    by_id = {p.changeset.id: p for p in plain.proposals}
    compared = 0
    for p in wide.proposals:
        q = by_id.get(p.changeset.id)
        if q is None:
            continue
        for a, b in zip(q.predicted, p.predicted, strict=True):
            assert b.mean == pytest.approx(a.mean)
            assert b.hi - b.lo == pytest.approx(2 * (a.hi - a.lo))
        assert p.utility <= q.utility + 1e-9  # more uncertainty never ranks a change higher
        assert p.evidence["interval_scale"] == 2.0
        compared += 1
    assert compared > 0


def test_the_goal_named_is_the_one_the_move_is_made_for_when_nothing_is_gained() -> None:
    book = GoalBook(
        goals=[
            GoalSpec(id="latency", name="t", kpi="tick_p95_ms", direction=Comparator.MINIMIZE, priority=1),
            GoalSpec(id="deaths", name="d", kpi="deaths_late", direction=Comparator.MINIMIZE, priority=4),
        ]
    )
    effects = {
        "deaths_late": PredictedEffect(kpi="deaths_late", mean=0.5, lo=0.0, hi=1.0),  # the wrong way
        "tick_p95_ms": PredictedEffect(kpi="tick_p95_ms", mean=0.0, lo=-1.0, hi=1.0),
    }
    s = score(effects, _stats(), book, "eu-west", SETTINGS, "auto", primary={"deaths_late"}, strength=1.0)
    assert s.utility < 0 and "evidence" not in s.parts  # predicted to backfire: no credit for the evidence
    assert s.goal_id == "deaths"
