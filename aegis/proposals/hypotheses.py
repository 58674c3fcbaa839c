"""Hypotheses from the marts: what the telemetry shows, and which knobs should help.

Each generator reads one mart and returns :class:`Hypothesis` objects: plain
words, the numbers behind them, how strong the signal is (0..1), which shards
it concerns and which parameter moves (knob, element, direction) it suggests.
Directions follow the world's documented parameter -> KPI table
(docs/world.md); whether a move helps enough is for the world model and the
ranking to say, not for these functions.

| mart | hypothesis | moves |
|---|---|---|
| fct_quest_abandonment | a stage loses players in a region | quest_difficulty[stage] down, quest_pacing down |
| fct_death_heatmap | a zone kills more than it should (hotspot, elites) | spawn_rate[zone], elite_share[zone], npc_aggression down |
| fct_shard_kpis | an encounter spike: deaths far above the day before | npc_aggression, map_event_frequency down |
| fct_economy_daily | inflation or deflation out of its band, velocity out of band | sink/source multipliers, quest_reward, drop_rate |
| fct_server_health | saturation / tick latency at peak | map_event_frequency down |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aegis import warehouse as warehouse_db
from aegis.proposals.settings import EvidenceThresholds
from aegis.telemetry import STAGE_BANDS, ZONE_BANDS

KPI_MART = "fct_shard_kpis"
ABANDONMENT_MART = "fct_quest_abandonment"
DEATHS_MART = "fct_death_heatmap"
ECONOMY_MART = "fct_economy_daily"
HEALTH_MART = "fct_server_health"
MARTS: tuple[str, ...] = (KPI_MART, ABANDONMENT_MART, DEATHS_MART, ECONOMY_MART, HEALTH_MART)
ECONOMY_CURRENCY = "gold"  # the currency fct_shard_kpis' economy columns measure
# Cause of a death by an elite monster (fct_death_heatmap.cause).
ELITE_CAUSE = "elite"
# Peak = the worst hour of the recent server health rows.
PEAK_BUCKETS = 12
# An encounter spike: the last hour's deaths at least this much above the hours before (and z >= spike_z).
SPIKE_MIN_RISE = 0.5


@dataclass(frozen=True)
class Move:
    """One knob turned one way: ``index`` is the zone or stage element of a vector parameter."""

    param: str
    sign: int  # +1 raise, -1 lower
    index: int | None = None

    def label(self) -> str:
        where = f"[{self.index}]" if self.index is not None else ""
        return f"{self.param}{where} {'up' if self.sign > 0 else 'down'}"


@dataclass
class Hypothesis:
    """What a mart shows, the numbers, and the moves that should help."""

    id: str
    kind: str  # abandonment | deaths | encounter_spike | economy | server_health
    text: str
    evidence: dict[str, Any]
    strength: float  # 0..1: how far the reading is from its reference
    moves: list[Move]
    region: str | None = None  # every shard of the region ...
    shard: str | None = None  # ... or exactly this shard

    def targets(self, shard_regions: dict[str, str]) -> list[str]:
        if self.shard is not None:
            return [self.shard] if self.shard in shard_regions else []
        return sorted(s for s, r in shard_regions.items() if self.region is None or r == self.region)


@dataclass
class MartFrames:
    """The mart rows the engine reads; an absent mart is an empty frame named in ``missing``."""

    kpis: pd.DataFrame
    abandonment: pd.DataFrame = field(default_factory=pd.DataFrame)
    deaths: pd.DataFrame = field(default_factory=pd.DataFrame)
    economy: pd.DataFrame = field(default_factory=pd.DataFrame)
    health: pd.DataFrame = field(default_factory=pd.DataFrame)
    missing: list[str] = field(default_factory=list)

    def shard_regions(self) -> dict[str, str]:
        if self.kpis.empty:
            return {}
        last = self.kpis.sort_values("bucket_start").groupby("shard_id")["region"].last()
        return {str(k): str(v) for k, v in last.items()}

    def history(self, shard: str) -> pd.DataFrame:
        rows = self.kpis[self.kpis["shard_id"] == shard]
        return rows.sort_values("bucket_start").reset_index(drop=True)


def read_marts(warehouse: Path, history_buckets: int = 288) -> MartFrames:
    """The marts the engine needs, read-only; per shard only the last ``history_buckets`` buckets."""

    if not warehouse_db.available(Path(warehouse)):
        raise FileNotFoundError(f"warehouse {warehouse} does not exist: build the marts first (dbt)")
    con = warehouse_db.connect(Path(warehouse))
    try:
        tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
        missing = [m for m in MARTS if m not in tables]
        if KPI_MART in missing:
            raise FileNotFoundError(f"warehouse {warehouse} has no {KPI_MART}: build the marts first (dbt)")

        def q(sql: str) -> pd.DataFrame:
            return con.execute(sql).df()

        per_shard = f"qualify row_number() over (partition by shard_id order by bucket_start desc) <= {int(history_buckets)}"
        frames = MartFrames(kpis=q(f"select * from {KPI_MART} {per_shard}"), missing=missing)
        if ABANDONMENT_MART in tables:
            frames.abandonment = q(f"select * from {ABANDONMENT_MART}")
        if DEATHS_MART in tables:
            frames.deaths = q(f"select region, zone, cause, cell_x, cell_y, deaths from {DEATHS_MART}")
        if ECONOMY_MART in tables:
            frames.economy = q(f"select * from {ECONOMY_MART} where currency = '{ECONOMY_CURRENCY}'")
        if HEALTH_MART in tables:
            frames.health = q(f"select * from {HEALTH_MART} {per_shard}")
        return frames
    finally:
        con.close()


def _band_of(bands: dict[str, tuple[int, ...]], value: int) -> str:
    return next(name for name, members in bands.items() if value in members)


# ------------------------------------------------------------------ abandonment


def abandonment_hypotheses(frame: pd.DataFrame, th: EvidenceThresholds) -> list[Hypothesis]:
    """Stages whose abandon rate in a region stands out against the same stage elsewhere.

    Reference: the stage's rate over the other regions (attempt-weighted); with a
    single region, the region's rate over its other stages. The excess must be
    both large (``abandon_excess``) and significant (two-proportion z >= ``abandon_z``).
    """
    if frame.empty:
        return []
    df = frame.copy()
    df["left"] = df["abandonments"] + df["completions"]
    df = df[df["left"] >= th.min_stage_attempts]
    out: list[Hypothesis] = []
    regions = sorted(df["region"].unique())
    for _, row in df.iterrows():
        stage, region = int(row["stage"]), str(row["region"])
        if len(regions) > 1:
            ref_rows = df[(df["stage"] == stage) & (df["region"] != region)]
            ref_label = f"stage {stage} in the other regions"
        else:
            ref_rows = df[(df["region"] == region) & (df["stage"] != stage)]
            ref_label = f"the other stages in {region}"
        if ref_rows.empty or ref_rows["left"].sum() <= 0:
            continue
        n_ref = float(ref_rows["left"].sum())
        ref = float(ref_rows["abandonments"].sum() / n_ref)
        rate = float(row["abandon_rate"])
        if ref <= 0 or rate <= ref * (1 + th.abandon_excess):
            continue
        # two-proportion z (pooled): a few percent of a few hundred attempts is noise, not a finding
        pooled = (float(row["abandonments"]) + ref * n_ref) / (float(row["left"]) + n_ref)
        se = np.sqrt(pooled * (1 - pooled) * (1 / float(row["left"]) + 1 / n_ref))
        z = (rate - ref) / se if se > 0 else np.inf
        if z < th.abandon_z:
            continue
        excess = rate / ref - 1
        band = _band_of(STAGE_BANDS, stage)
        out.append(
            Hypothesis(
                id=f"abandonment:{region}:stage{stage}",
                kind="abandonment",
                text=(
                    f"{region}: {rate:.0%} of attempts leaving quest stage {stage} ({band}) abandon it, "
                    f"against {ref:.0%} for {ref_label}; the stage is too hard or too slow there"
                ),
                evidence={
                    "mart": ABANDONMENT_MART,
                    "region": region,
                    "stage": stage,
                    "stage_band": band,
                    "abandon_rate": round(rate, 4),
                    "reference_rate": round(ref, 4),
                    "abandonments": int(row["abandonments"]),
                    "attempts_left": int(row["left"]),
                    "z": round(float(z), 2),
                },
                strength=min(1.0, excess),
                moves=[Move("quest_difficulty", -1, stage - 1), Move("quest_pacing", -1)],
                region=region,
            )
        )
    return out


# ----------------------------------------------------------------------- deaths


def death_hypotheses(frame: pd.DataFrame, th: EvidenceThresholds) -> list[Hypothesis]:
    """Zones whose share of a region's deaths stands out (with the hottest cell and the elite share).

    Shares are compositional: one deadly zone lowers every other zone's share
    in its region and so raises, by comparison, every zone of the other
    regions. So the zone's share ratio against its reference (its share in the
    other regions; with one region, the median zone's share) is divided by the
    region's median ratio over its zones: a region that is uniformly deadlier,
    or merely compared against a skewed one, flags nothing; a zone that stands
    out within its region does.
    """
    if frame.empty:
        return []
    by_zone = frame.groupby(["region", "zone"], as_index=False)["deaths"].sum()
    by_zone["share"] = by_zone["deaths"] / by_zone.groupby("region")["deaths"].transform("sum")
    regions = sorted(by_zone["region"].unique())
    refs: list[float] = []
    for _, row in by_zone.iterrows():
        if len(regions) > 1:
            other = by_zone[by_zone["region"] != row["region"]]
            refs.append(
                float(other.loc[other["zone"] == row["zone"], "deaths"].sum() / max(other["deaths"].sum(), 1))
            )
        else:
            refs.append(float(by_zone["share"].median()))
    by_zone["reference"] = refs
    by_zone["ratio"] = by_zone["share"] / by_zone["reference"].where(by_zone["reference"] > 0)
    by_zone["relative"] = by_zone["ratio"] / by_zone.groupby("region")["ratio"].transform("median")
    ref_label = "its share in the other regions" if len(regions) > 1 else "the median zone's share"
    out: list[Hypothesis] = []
    for _, row in by_zone.iterrows():
        region, zone, deaths = str(row["region"]), int(row["zone"]), int(row["deaths"])
        relative = float(row["relative"])
        if deaths < th.min_zone_deaths or not np.isfinite(relative) or relative <= th.death_share_ratio:
            continue
        share, ref = float(row["share"]), float(row["reference"])
        zone_rows = frame[(frame["region"] == region) & (frame["zone"] == zone)]
        cells = zone_rows.groupby(["cell_x", "cell_y"])["deaths"].sum().sort_values(ascending=False)
        hot_share = float(cells.iloc[0] / deaths) if len(cells) else 0.0
        elite = float(zone_rows.loc[zone_rows["cause"] == ELITE_CAUSE, "deaths"].sum() / deaths)
        band = _band_of(ZONE_BANDS, zone)
        moves = [Move("spawn_rate", -1, zone), Move("elite_share", -1, zone), Move("npc_aggression", -1)]
        words = (
            f"{region}: zone {zone} ({band}) has {share:.0%} of the region's deaths against {ref:.0%} "
            f"({ref_label}), {relative:.1f}x what its region's other zones show"
        )
        if hot_share >= th.hotspot_share:
            hx, hy = cells.index[0]
            words += f"; one cell ({hx},{hy}) holds {hot_share:.0%} of them (an encounter hotspot)"
        if elite > 0:
            words += f"; elites cause {elite:.0%}"
        out.append(
            Hypothesis(
                id=f"deaths:{region}:zone{zone}",
                kind="deaths",
                text=words + "; fewer or softer monsters there should help",
                evidence={
                    "mart": DEATHS_MART,
                    "region": region,
                    "zone": zone,
                    "zone_band": band,
                    "deaths": deaths,
                    "death_share": round(share, 4),
                    "reference_share": round(ref, 4),
                    "relative_to_region": round(relative, 3),
                    "hottest_cell_share": round(hot_share, 4),
                    "elite_share_of_deaths": round(elite, 4),
                },
                strength=min(1.0, (relative - 1) / 2),
                moves=moves,
                region=region,
            )
        )
    return out


def spike_hypotheses(
    kpis: pd.DataFrame, th: EvidenceThresholds, recent: int = PEAK_BUCKETS
) -> list[Hypothesis]:
    """Encounter spikes: a shard's deaths per zone band in its last hour far above its hours before."""
    out: list[Hypothesis] = []
    if kpis.empty:
        return out
    for shard, rows in kpis.sort_values("bucket_start").groupby("shard_id"):
        if len(rows) < 3 * recent:
            continue
        for band in ZONE_BANDS:
            col = f"deaths_{band}"
            values = rows[col].to_numpy(dtype=float)
            # hourly means, counted back from the last bucket: the last hour against the hours before.
            # Hour-to-hour spread includes the diurnal swing, so an ordinary evening is not a spike.
            n_hours = len(values) // recent
            hours = values[len(values) - n_hours * recent :].reshape(n_hours, recent).mean(axis=1)
            before, mean_last = hours[:-1], float(hours[-1])
            mean_before, sd = float(before.mean()), float(before.std(ddof=1))
            if not np.isfinite(sd) or sd <= 0:
                continue
            z = (mean_last - mean_before) / sd
            if z < th.spike_z or mean_last < (1 + SPIKE_MIN_RISE) * mean_before:
                continue
            out.append(
                Hypothesis(
                    id=f"encounter_spike:{shard}:{band}",
                    kind="encounter_spike",
                    text=(
                        f"{shard}: {mean_last:.1f} deaths per 5 minutes in {band} zones over the last hour, "
                        f"against {mean_before:.1f} before (z = {z:.1f}); encounters got deadlier"
                    ),
                    evidence={
                        "mart": KPI_MART,
                        "shard": str(shard),
                        "zone_band": band,
                        "deaths_last_hour_per_bucket": round(mean_last, 3),
                        "deaths_before_per_bucket": round(mean_before, 3),
                        "z": round(z, 2),
                    },
                    strength=min(1.0, z / (3 * th.spike_z)),
                    moves=[Move("npc_aggression", -1), Move("map_event_frequency", -1)],
                    shard=str(shard),
                )
            )
    return out


# ---------------------------------------------------------------------- economy


def economy_hypotheses(
    frame: pd.DataFrame, bands: dict[str, tuple[float, float]], th: EvidenceThresholds
) -> list[Hypothesis]:
    """Each shard's last complete day against the policy's economy bands (inflation, velocity)."""
    if frame.empty:
        return []
    days = frame[~frame["is_partial"].astype(bool)] if "is_partial" in frame.columns else frame
    if days.empty:
        return []
    latest = days.sort_values("event_date").groupby("shard_id").tail(1)
    inf_lo, inf_hi = bands.get("inflation", (-np.inf, np.inf))
    vel_lo, vel_hi = bands.get("velocity", (-np.inf, np.inf))
    inf_band, vel_band = (inf_lo, inf_hi), (vel_lo, vel_hi)
    out: list[Hypothesis] = []
    for _, row in latest.iterrows():
        shard = str(row["shard_id"])
        evidence = _economy_evidence(row, shard, inf_band, vel_band)
        inflation = _inflation_hypothesis(
            shard, evidence, (row.get("net_inflation"), row.get("price_inflation")), inf_band
        )
        if inflation is not None:
            out.append(inflation)
        velocity = _velocity_hypothesis(shard, evidence, row.get("velocity"), vel_band)
        if velocity is not None:
            out.append(velocity)
    return out


def _economy_evidence(
    row: pd.Series, shard: str, inf_band: tuple[float, float], vel_band: tuple[float, float]
) -> dict[str, Any]:
    """The evidence every economy hypothesis about one shard-day carries (one shared dict)."""
    inflation = row.get("net_inflation")
    price_inflation = row.get("price_inflation")
    velocity = row.get("velocity")
    return {
        "mart": ECONOMY_MART,
        "shard": shard,
        "day": str(row["event_date"])[:10],
        "net_inflation": None if pd.isna(inflation) else round(float(inflation), 5),
        "price_inflation": None if pd.isna(price_inflation) else round(float(price_inflation), 5),
        "velocity": None if pd.isna(velocity) else round(float(velocity), 4),
        "inflation_band": list(inf_band),
        "velocity_band": list(vel_band),
    }


def _inflation_hypothesis(
    shard: str, evidence: dict[str, Any], values: tuple[Any, Any], inf_band: tuple[float, float]
) -> Hypothesis | None:
    """Inflation above the band or deflation below it, from the higher/lower of net and price inflation."""
    inf_lo, inf_hi = inf_band
    readings = [float(x) for x in values if x is not None and not pd.isna(x)]
    high = max(readings, default=None)
    low = min(readings, default=None)
    width = max(inf_hi - inf_lo, 1e-9)
    if high is not None and high > inf_hi:
        return Hypothesis(
            id=f"economy:{shard}:inflation",
            kind="economy",
            text=(
                f"{shard}: gold inflation {high:.2%} a day on {evidence['day']} is above its band "
                f"[{inf_lo:.0%}, {inf_hi:.0%}]; more sinks or fewer faucets should cool it"
            ),
            evidence=evidence,
            strength=min(1.0, (high - inf_hi) / width),
            moves=[
                Move("sink_multiplier", +1),
                Move("source_multiplier", -1),
                Move("quest_reward", -1),
            ],
            shard=shard,
        )
    if low is not None and low < inf_lo:
        return Hypothesis(
            id=f"economy:{shard}:deflation",
            kind="economy",
            text=(
                f"{shard}: gold deflation {low:.2%} a day on {evidence['day']} is below its band "
                f"[{inf_lo:.0%}, {inf_hi:.0%}]; more rewards and drops or fewer sinks should lift it"
            ),
            evidence=evidence,
            strength=min(1.0, (inf_lo - low) / width),
            moves=[
                Move("source_multiplier", +1),
                Move("sink_multiplier", -1),
                Move("quest_reward", +1),
                Move("drop_rate", +1),
            ],
            shard=shard,
        )
    return None


def _velocity_hypothesis(
    shard: str, evidence: dict[str, Any], velocity: Any, vel_band: tuple[float, float]
) -> Hypothesis | None:
    """Gold velocity below its band (piling up) or above it (supply too thin)."""
    if velocity is None or pd.isna(velocity):
        return None
    vel_lo, vel_hi = vel_band
    v = float(velocity)
    vwidth = max(vel_hi - vel_lo, 1e-9)
    if v < vel_lo:
        return Hypothesis(
            id=f"economy:{shard}:velocity_low",
            kind="economy",
            text=(
                f"{shard}: gold velocity {v:.2f} is below its band [{vel_lo}, {vel_hi}]: gold piles "
                "up unspent; stronger sinks should make it circulate"
            ),
            evidence=evidence,
            strength=min(1.0, (vel_lo - v) / vwidth),
            moves=[Move("sink_multiplier", +1)],
            shard=shard,
        )
    if v > vel_hi:
        return Hypothesis(
            id=f"economy:{shard}:velocity_high",
            kind="economy",
            text=(
                f"{shard}: gold velocity {v:.2f} is above its band [{vel_lo}, {vel_hi}]: the supply "
                "is thin for the trade; lighter sinks should let it build"
            ),
            evidence=evidence,
            strength=min(1.0, (v - vel_hi) / vwidth),
            moves=[Move("sink_multiplier", -1)],
            shard=shard,
        )
    return None


# ---------------------------------------------------------------- server health


def health_hypotheses(frame: pd.DataFrame, th: EvidenceThresholds) -> list[Hypothesis]:
    """Shards whose peak hour runs hot (saturation or tick p95): fewer map events flatten the peak."""
    if frame.empty:
        return []
    out: list[Hypothesis] = []
    up = frame[~frame["is_down"].astype(bool)] if "is_down" in frame.columns else frame
    for shard, rows in up.sort_values("bucket_start").groupby("shard_id"):
        hourly = (
            rows.set_index("bucket_start")[["saturation", "tick_p95_ms", "reconnect_rate"]]
            .rolling(PEAK_BUCKETS, min_periods=1)
            .mean()
        )
        peak = hourly.loc[hourly["saturation"].idxmax()] if hourly["saturation"].notna().any() else None
        if peak is None:
            continue
        sat, p95 = (
            float(peak["saturation"]),
            float(peak["tick_p95_ms"] if pd.notna(peak["tick_p95_ms"]) else 0),
        )
        if sat < th.saturation_high and p95 < th.tick_p95_high_ms:
            continue
        strength = min(1.0, max(sat / th.saturation_high - 1, p95 / th.tick_p95_high_ms - 1) * 4)
        out.append(
            Hypothesis(
                id=f"server_health:{shard}",
                kind="server_health",
                text=(
                    f"{shard}: at its peak hour {sat:.0%} of capacity is online and tick p95 is {p95:.0f} ms "
                    f"(limits {th.saturation_high:.0%}, {th.tick_p95_high_ms:.0f} ms); fewer map events "
                    "should flatten the peak (capacity itself is the healing playbooks' lever)"
                ),
                evidence={
                    "mart": HEALTH_MART,
                    "shard": str(shard),
                    "peak_saturation": round(sat, 4),
                    "peak_tick_p95_ms": round(p95, 1),
                    "peak_reconnect_rate": round(float(peak["reconnect_rate"]), 5),
                },
                strength=max(0.05, strength),
                moves=[Move("map_event_frequency", -1)],
                shard=str(shard),
            )
        )
    return out


def all_hypotheses(
    marts: MartFrames, th: EvidenceThresholds, economy_bands: dict[str, tuple[float, float]]
) -> list[Hypothesis]:
    """Every hypothesis the marts support, strongest first."""
    found = [
        *abandonment_hypotheses(marts.abandonment, th),
        *death_hypotheses(marts.deaths, th),
        *spike_hypotheses(marts.kpis, th),
        *economy_hypotheses(marts.economy, economy_bands, th),
        *health_hypotheses(marts.health, th),
    ]
    return sorted(found, key=lambda h: -h.strength)
