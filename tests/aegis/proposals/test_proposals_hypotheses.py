"""Hypotheses from small hand-made marts in a real DuckDB file."""

from __future__ import annotations

from pathlib import Path

import pytest

from aegis.proposals.hypotheses import (
    abandonment_hypotheses,
    all_hypotheses,
    death_hypotheses,
    economy_hypotheses,
    health_hypotheses,
    read_marts,
    spike_hypotheses,
)
from aegis.proposals.settings import EvidenceThresholds, ProposalSettings
from tests.aegis.proposals import mart_frames as mf

SHARDS = {"eu-1": "eu-west", "eu-2": "eu-west", "us-1": "us-east", "us-2": "us-east"}
TH = EvidenceThresholds()


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    kpis = mf.kpi_rows(SHARDS)
    return mf.write_warehouse(
        tmp_path / "warehouse.duckdb",
        fct_shard_kpis=kpis,
        fct_quest_abandonment=mf.abandonment(),
        fct_death_heatmap=mf.death_heatmap(),
        fct_economy_daily=mf.economy(SHARDS, inflating="us-2"),
        fct_server_health=mf.server_health(kpis, hot="eu-2"),
    )


def test_every_planted_signal_becomes_a_hypothesis_and_nothing_else(warehouse: Path) -> None:
    marts = read_marts(warehouse, history_buckets=100)
    assert marts.missing == []
    assert marts.shard_regions() == SHARDS
    assert marts.kpis.groupby("shard_id").size().max() == 100  # only the last buckets per shard are read
    hyps = all_hypotheses(marts, TH, ProposalSettings.from_policy_data().economy_bands)
    ids = {h.id for h in hyps}
    assert ids == {
        "abandonment:eu-west:stage5",
        "deaths:us-east:zone4",
        "economy:us-2:inflation",
        "server_health:eu-2",
    }, ids
    assert [h.strength for h in hyps] == sorted((h.strength for h in hyps), reverse=True)


def test_late_stage_abandonment_names_the_region_stage_and_numbers() -> None:
    (h,) = abandonment_hypotheses(mf.abandonment("eu-west"), TH)
    assert h.region == "eu-west" and h.evidence["stage"] == 5 and h.evidence["stage_band"] == "late"
    assert h.evidence["abandon_rate"] == pytest.approx(0.2999, abs=1e-3)
    assert h.evidence["reference_rate"] == pytest.approx(106 / 706, abs=1e-3)
    assert "30%" in h.text and "stage 5" in h.text and "eu-west" in h.text
    assert {(m.param, m.index, m.sign) for m in h.moves} == {
        ("quest_difficulty", 4, -1),
        ("quest_pacing", None, -1),
    }
    assert h.targets(SHARDS) == ["eu-1", "eu-2"]


def test_abandonment_too_few_attempts_or_no_excess_is_no_hypothesis() -> None:
    assert abandonment_hypotheses(mf.abandonment(None), TH) == []
    assert (
        abandonment_hypotheses(
            mf.abandonment("eu-west"), TH.model_copy(update={"min_stage_attempts": 10_000})
        )
        == []
    )


def test_single_region_compares_a_stage_with_the_region_s_other_stages() -> None:
    frame = mf.abandonment("eu-west", regions=("eu-west",))
    (h,) = abandonment_hypotheses(frame, TH)
    assert h.id == "abandonment:eu-west:stage5" and "other stages" in h.text


def test_deadly_zone_with_a_hotspot_and_elites() -> None:
    (h,) = death_hypotheses(mf.death_heatmap("us-east", 4), TH)
    assert h.id == "deaths:us-east:zone4" and h.evidence["zone_band"] == "late"
    assert h.evidence["hottest_cell_share"] > 0.5 and h.evidence["elite_share_of_deaths"] > 0.5
    assert "hotspot" in h.text and "elites" in h.text
    assert {(m.param, m.index) for m in h.moves} == {
        ("spawn_rate", 4),
        ("elite_share", 4),
        ("npc_aggression", None),
    }


def test_shares_are_compositional_so_the_other_region_is_not_flagged() -> None:
    # One deadly zone in us-east lowers every other us-east share; eu-west's zones then look
    # relatively deadly zone by zone, but uniformly so: no eu-west hypothesis.
    hyps = death_hypotheses(mf.death_heatmap("us-east", 4), TH)
    assert all(h.region == "us-east" for h in hyps)
    assert death_hypotheses(mf.death_heatmap(None), TH) == []


def test_inflation_and_deflation_against_the_policy_band() -> None:
    bands = ProposalSettings.from_policy_data().economy_bands
    hyps = economy_hypotheses(mf.economy(SHARDS, inflating="us-2", deflating="eu-1"), bands, TH)
    by_id = {h.id: h for h in hyps}
    assert set(by_id) == {"economy:us-2:inflation", "economy:eu-1:deflation"}
    up = by_id["economy:us-2:inflation"]
    assert up.shard == "us-2" and up.evidence["net_inflation"] == pytest.approx(0.09)
    assert {(m.param, m.sign) for m in up.moves} == {
        ("sink_multiplier", 1),
        ("source_multiplier", -1),
        ("quest_reward", -1),
    }
    down = by_id["economy:eu-1:deflation"]
    assert ("drop_rate", 1) in {(m.param, m.sign) for m in down.moves}


def test_velocity_out_of_band_and_partial_days_ignored() -> None:
    frame = mf.economy(SHARDS)
    frame.loc[(frame.shard_id == "eu-2") & ~frame.is_partial, "velocity"] = 0.1
    # a partial day with absurd numbers must not count
    frame.loc[(frame.shard_id == "us-1") & frame.is_partial, "net_inflation"] = 5.0
    hyps = economy_hypotheses(frame, {"inflation": (-0.02, 0.05), "velocity": (0.5, 3.0)}, TH)
    assert [h.id for h in hyps] == ["economy:eu-2:velocity_low"]
    assert hyps[0].moves[0].param == "sink_multiplier" and hyps[0].moves[0].sign == 1


def test_hot_shard_at_peak_lowers_map_events() -> None:
    kpis = mf.kpi_rows(SHARDS)
    (h,) = health_hypotheses(mf.server_health(kpis, hot="eu-2"), TH)
    assert h.shard == "eu-2" and h.evidence["peak_saturation"] == pytest.approx(0.95)
    assert [(m.param, m.sign) for m in h.moves] == [("map_event_frequency", -1)]
    assert health_hypotheses(mf.server_health(kpis), TH) == []


def test_encounter_spike_in_the_last_hour() -> None:
    kpis = mf.kpi_rows(SHARDS)
    assert spike_hypotheses(kpis, TH) == []
    last = kpis.groupby("shard_id")["bucket_start"].transform("max")
    recent = (kpis.shard_id == "us-1") & (kpis.bucket_start > last - __import__("pandas").Timedelta(hours=1))
    kpis.loc[recent, "deaths_mid"] += 25
    (h,) = spike_hypotheses(kpis, TH)
    assert h.id == "encounter_spike:us-1:mid" and h.evidence["z"] >= TH.spike_z
    assert {m.param for m in h.moves} == {"npc_aggression", "map_event_frequency"}


def test_missing_marts_are_named_and_a_missing_kpi_mart_is_an_error(tmp_path: Path) -> None:
    only_kpis = mf.write_warehouse(tmp_path / "w.duckdb", fct_shard_kpis=mf.kpi_rows(SHARDS, hours=3))
    marts = read_marts(only_kpis)
    assert set(marts.missing) == {
        "fct_quest_abandonment",
        "fct_death_heatmap",
        "fct_economy_daily",
        "fct_server_health",
    }
    assert all_hypotheses(marts, TH, {}) == []
    empty = mf.write_warehouse(tmp_path / "e.duckdb", fct_death_heatmap=mf.death_heatmap())
    with pytest.raises(FileNotFoundError, match="no fct_shard_kpis"):
        read_marts(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_marts(tmp_path / "absent.duckdb")


def test_a_large_but_insignificant_excess_is_noise() -> None:
    # 12 of 60 attempts (20%) against 15%: a third higher, but z < 1 on so few attempts
    frame = mf.abandonment("eu-west")
    few = (frame.region == "eu-west") & (frame.stage == 5)
    frame.loc[few, ["abandonments", "completions"]] = [12, 48]
    frame["abandon_rate"] = frame["abandonments"] / (frame["abandonments"] + frame["completions"])
    assert abandonment_hypotheses(frame, TH) == []
    assert abandonment_hypotheses(frame, TH.model_copy(update={"abandon_z": 0.0}))  # only the z kept it out
