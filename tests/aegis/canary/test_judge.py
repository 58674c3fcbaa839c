"""The canary judge on a real world run (tests/data/kpis_world.parquet; regenerate with its script)."""

from __future__ import annotations

import json
from datetime import timedelta
from functools import cache

import pandas as pd
import pytest

from aegis.canary.judge import (
    CanarySpec,
    JudgeInputError,
    JudgeSettings,
    KpiPolicy,
    choose_controls,
    judge,
    status_of,
    to_canary_result,
)
from aegis.canary.metrics import LEVEL_COLUMNS
from aegis.canary.scenarios import inject, placebo_specs
from aegis.domain import CanaryVerdict, ShardInfo
from aegis.telemetry import KPI_COLUMNS
from tests.support import REPO

DATA = REPO / "tests" / "data"
META = json.loads((DATA / "kpis_world.json").read_text())
CHANGE = pd.Timestamp(META["change_start"])
K_CONTROLS = 4
# A/A placebo starts: a day of history after the world's warm-up, windows that end before the change.
AA_FIRST = pd.Timestamp("2026-01-03T06:00:00Z")


@cache
def kpis() -> pd.DataFrame:
    return pd.read_parquet(DATA / "kpis_world.parquet")


@cache
def settings() -> JudgeSettings:
    return JudgeSettings.from_policy_data()


def unchanged() -> list[str]:
    return sorted(set(kpis()["shard_id"]) - set(META["changes"]))


def spec_for(
    canary: str, start: pd.Timestamp, targets: tuple[str, ...] = (), budget: int | None = None
) -> CanarySpec:
    history = kpis()[pd.to_datetime(kpis()["bucket_start"], utc=True) < start]
    pool = [s for s in unchanged() if s != canary]
    return CanarySpec(
        canary=canary,
        controls=choose_controls(history, canary, pool, K_CONTROLS),
        start=start.to_pydatetime(),
        max_buckets=budget or settings().default_max_buckets,
        targets=list(targets),
    )


def test_aa_placebos_never_roll_back_more_than_alpha() -> None:
    """Placebo-in-space: every unchanged shard, at several starts, judged as if it were a canary."""
    s = settings()
    budget = s.default_max_buckets
    last = CHANGE + timedelta(hours=12) - timedelta(minutes=5 * budget)
    specs = list(
        placebo_specs(
            kpis(), unchanged(), AA_FIRST, last, timedelta(hours=6), budget, K_CONTROLS, set(META["changes"])
        )
    )
    assert len(specs) >= 24
    verdicts = [judge(kpis(), sp, s).verdict for sp in specs]
    rollbacks = verdicts.count("rollback")
    assert rollbacks / len(verdicts) <= s.alpha, verdicts
    assert "continue" not in verdicts


@pytest.mark.parametrize(
    ("effects", "metric"),
    [
        ({"deaths": 0.30}, "deaths_per_player"),
        ({"inflow": 0.25}, "currency_inflow_per_player"),
        ({"latency": 0.40}, "tick_p95_ms"),
        ({"completions": 0.15}, "completions_per_player"),
    ],
)
def test_injected_regressions_are_caught_early(effects: dict[str, float], metric: str) -> None:
    sp = spec_for("eu-west-2", AA_FIRST + timedelta(hours=12))
    j = judge(inject(kpis(), sp.canary, sp.start, effects), sp, settings())
    assert j.verdict == "rollback", j.reason
    assert metric in j.reason
    assert {m.name: m.status for m in j.metrics}[metric] == "regressed"
    assert j.buckets_observed <= sp.max_buckets // 2
    assert j.decided_at is not None and j.decided_at >= sp.start


def test_good_change_is_promoted_before_the_budget() -> None:
    sp = spec_for("us-east-1", AA_FIRST + timedelta(hours=6), targets=("abandon_rate",))
    j = judge(inject(kpis(), sp.canary, sp.start, {"fewer_abandons": 0.35}), sp, settings())
    assert j.verdict == "promote", j.reason
    assert j.buckets_observed < sp.max_buckets
    target = next(m for m in j.metrics if m.name == "abandon_rate")
    assert target.status == "improved" and target.interval[1] < 0


def test_good_change_that_breaks_a_guardrail_is_rolled_back() -> None:
    sp = spec_for("us-east-1", AA_FIRST + timedelta(hours=6), targets=("abandon_rate",))
    j = judge(inject(kpis(), sp.canary, sp.start, {"fewer_abandons": 0.35, "inflow": 0.3}), sp, settings())
    assert j.verdict == "rollback", j.reason
    assert "currency_inflow_per_player" in j.reason


@pytest.mark.parametrize(
    ("canary", "metric"),
    [("eu-west-1", "deaths_per_player"), ("ap-southeast-3", "currency_inflow_per_player")],
)
def test_real_harmful_parameter_change_is_rolled_back(canary: str, metric: str) -> None:
    """A real change in the world run (more NPC aggression; a bigger currency faucet), not an injected one."""
    j = judge(kpis(), spec_for(canary, CHANGE), settings())
    assert j.verdict == "rollback", j.reason
    assert metric in j.reason


def test_real_good_parameter_change_is_promoted() -> None:
    """Easier quests on us-east-2 in the world run: abandonment falls, nothing breaks."""
    j = judge(kpis(), spec_for("us-east-2", CHANGE, targets=("abandon_rate",)), settings())
    assert j.verdict == "promote", j.reason


def test_each_look_uses_only_data_up_to_it() -> None:
    """Replaying on data cut at the decision, or with garbage after it, gives the same verdict at the same bucket."""
    sp = spec_for("eu-west-2", AA_FIRST + timedelta(hours=12))
    data = inject(kpis(), sp.canary, sp.start, {"deaths": 0.3})
    j = judge(data, sp, settings())
    assert j.decided_at is not None
    when = pd.to_datetime(data["bucket_start"], utc=True)
    cut = judge(data[when <= pd.Timestamp(j.decided_at)], sp, settings())
    spoiled = data.copy()
    after = when > pd.Timestamp(j.decided_at)
    spoiled.loc[after, "deaths_late"] = 0.0
    spoiled.loc[after, "players_online"] *= 3
    later = judge(spoiled, sp, settings())
    for other in (cut, later):
        assert (other.verdict, other.buckets_observed, other.decided_at) == (
            j.verdict,
            j.buckets_observed,
            j.decided_at,
        )
        assert other.as_output()["metrics"] == j.as_output()["metrics"]


def test_data_ending_before_a_decision_continues() -> None:
    sp = spec_for("eu-west-3", AA_FIRST + timedelta(hours=6))
    when = pd.to_datetime(kpis()["bucket_start"], utc=True)
    j = judge(kpis()[when < pd.Timestamp(sp.start) + timedelta(minutes=20)], sp, settings())
    assert j.verdict == "continue"
    assert j.buckets_observed == 4 and j.decided_at is None
    assert to_canary_result(j, sp).verdict == CanaryVerdict.CONTINUE


def test_missing_canary_buckets_fail_the_exposure_check() -> None:
    sp = spec_for("us-east-3", AA_FIRST + timedelta(hours=6))
    data = kpis()
    when = pd.to_datetime(data["bucket_start"], utc=True)
    gap = (data["shard_id"] == sp.canary) & (when >= pd.Timestamp(sp.start)) & (when.dt.minute % 15 != 0)
    j = judge(data[~gap], sp, settings())
    assert j.verdict == "inconclusive"
    assert "exposure" in j.reason


def test_as_output_is_exactly_the_cli_shape() -> None:
    sp = spec_for("eu-west-2", AA_FIRST + timedelta(hours=12))
    out = judge(inject(kpis(), sp.canary, sp.start, {"deaths": 0.3}), sp, settings()).as_output()
    assert set(out) == {"verdict", "buckets_observed", "decided_at", "metrics", "reason"}
    assert all(set(m) == {"name", "effect", "interval", "status"} for m in out["metrics"])
    assert out["decided_at"].endswith("Z")
    json.dumps(out, allow_nan=False)


def test_to_canary_result_names_the_regressed_metric() -> None:
    sp = spec_for("eu-west-2", AA_FIRST + timedelta(hours=12))
    j = judge(inject(kpis(), sp.canary, sp.start, {"inflow": 0.3}), sp, settings())
    result = to_canary_result(j, sp)
    assert result.verdict == CanaryVerdict.ROLL_BACK
    assert result.metric == "currency_inflow_per_player"
    assert result.canary_shard == "eu-west-2" and result.control_shards == sp.controls
    # A significant regression (interval above zero) whose estimate is beyond the margin (rollback_on "estimate").
    assert result.threshold is not None and result.effect > result.threshold
    assert result.interval is not None and result.interval[0] > 0


def test_choose_controls_prefers_the_canary_region() -> None:
    shards = sorted(set(kpis()["shard_id"]))
    controls = choose_controls(kpis(), "eu-west-1", shards, 4)
    assert controls[:2] == ["eu-west-2", "eu-west-3"]
    assert "eu-west-1" not in controls and len(controls) == 4
    infos = [
        ShardInfo(
            id=s,
            region=s.rsplit("-", 1)[0],
            players_online=1,
            players_total=1,
            capacity=2,
            config_version=1,
            status="down" if s == "eu-west-2" else "up",
        )
        for s in shards
    ]
    assert "eu-west-2" not in choose_controls(kpis(), "eu-west-1", infos, 3)


def test_bad_input_says_what_is_wrong() -> None:
    sp = spec_for("eu-west-2", AA_FIRST)
    with pytest.raises(JudgeInputError, match="missing columns"):
        judge(kpis().drop(columns=["deaths_mid"]), sp, settings())
    with pytest.raises(JudgeInputError, match="no rows"):
        judge(kpis(), sp.model_copy(update={"controls": ["mars-1"]}), settings())
    with pytest.raises(JudgeInputError, match="outside"):
        judge(
            kpis(), sp.model_copy(update={"start": (CHANGE + timedelta(days=5)).to_pydatetime()}), settings()
        )
    with pytest.raises(JudgeInputError, match="pre-change history"):
        judge(
            kpis(),
            sp.model_copy(update={"start": pd.Timestamp("2026-01-02T01:00:00Z").to_pydatetime()}),
            settings(),
        )
    with pytest.raises(JudgeInputError, match="unknown target"):
        judge(kpis(), sp.model_copy(update={"targets": ["happiness"]}), settings())


def test_settings_come_from_policy_data() -> None:
    s = settings()
    assert 0 < s.alpha < 1 and s.guardrails()
    data = json.loads((REPO / "policies" / "data.json").read_text())
    data["aegis"]["config"]["canary"]["kpis"]["nonsense"] = {"direction": "lower", "margin": 0.1}
    with pytest.raises(ValueError, match="unknown canary metrics"):
        JudgeSettings.from_policy_data(data)


def test_status_rules_for_each_direction() -> None:
    lower = KpiPolicy(direction="lower", margin=0.1)
    higher = KpiPolicy(direction="higher", margin=0.05)
    both = KpiPolicy(direction="two_sided", margin=0.1)
    # Significant, estimate beyond the margin, interval not wholly beyond it: the two rules differ.
    assert status_of(0.15, 0.02, 0.28, lower, False, "estimate") == "regressed"
    assert status_of(0.15, 0.02, 0.28, lower, False, "interval") == "undecided"
    assert status_of(0.15, 0.11, 0.19, lower, False, "interval") == "regressed"
    # Not significant: never a rollback, whatever the estimate.
    assert status_of(0.15, -0.01, 0.31, lower, False, "estimate") == "undecided"
    assert status_of(0.0, -0.05, 0.05, lower, False) == "non_inferior"
    assert status_of(-0.2, -0.3, -0.1, lower, True) == "improved"
    assert status_of(-0.2, -0.3, -0.1, lower, False) == "non_inferior"
    assert status_of(-0.1, -0.15, -0.06, higher, False, "interval") == "regressed"
    assert status_of(0.1, 0.06, 0.15, higher, True) == "improved"
    assert status_of(-0.2, -0.25, -0.15, both, False, "interval") == "regressed"
    assert status_of(0.02, -0.05, 0.08, both, False) == "non_inferior"


def test_integer_counts_and_split_buckets_judge_alike() -> None:
    """Counts may be integers; a bucket split in two rows (a config change inside it) is merged back."""
    sp = spec_for("eu-west-2", AA_FIRST + timedelta(hours=12))
    data = inject(kpis(), sp.canary, sp.start, {"deaths": 0.3})
    j = judge(data, sp, settings())
    ints = data.copy()
    for col in ("deaths_early", "deaths_mid", "deaths_late", "quest_completions", "churned", "reconnects"):
        ints[col] = ints[col].round().astype("int64")
    assert judge(ints, sp, settings()).verdict == j.verdict
    first = data[
        (data["shard_id"] == sp.canary)
        & (pd.to_datetime(data["bucket_start"], utc=True) == pd.Timestamp(sp.start))
    ]
    half = first.copy()
    counts = [c for c in KPI_COLUMNS if c not in LEVEL_COLUMNS]  # levels stay, counts split in two
    half[counts] = half[counts].astype(float) / 2
    split = pd.concat([data.drop(first.index), half, half.assign(config_version=half["config_version"] + 1)])
    again = judge(split, sp, settings())
    assert (again.verdict, again.buckets_observed, again.decided_at) == (
        j.verdict,
        j.buckets_observed,
        j.decided_at,
    )


def test_placebo_calibration_reports_each_metric() -> None:
    from aegis.canary.calibration import calibrate

    specs = list(
        placebo_specs(
            kpis(),
            unchanged()[:3],
            AA_FIRST,
            AA_FIRST + timedelta(hours=6),
            timedelta(hours=6),
            144,
            K_CONTROLS,
            set(META["changes"]),
        )
    )
    cal = calibrate(kpis(), specs, settings())
    assert cal.runs == len(specs) == 6
    assert {k.name for k in cal.kpis} == set(settings().kpis)
    for k in cal.kpis:
        assert 0.0 <= k.false_rollback_rate <= k.exclusion_rate <= 1.0  # a rollback needs harm > 0 shown
        assert k.variance_inflation >= settings().kpis[k.name].variance_inflation


def test_a_canary_that_stops_reporting_fails_the_exposure_check() -> None:
    sp = spec_for("ap-southeast-1", AA_FIRST + timedelta(hours=6))
    when = pd.to_datetime(kpis()["bucket_start"], utc=True)
    silent = (kpis()["shard_id"] == sp.canary) & (when >= pd.Timestamp(sp.start) + timedelta(hours=1))
    j = judge(kpis()[~silent], sp, settings())
    assert j.verdict == "inconclusive", j.reason
    assert "missing" in j.reason and j.decided_at is not None
