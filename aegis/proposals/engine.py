"""From hypotheses to ranked proposals: candidate changesets, predicted effects, expected utility.

For each hypothesis and each shard it concerns, every suggested move becomes a
candidate :class:`AutonomousChangeSet` whose diff's ``before`` is the shard's
current config (read from the game backend by the caller) and whose step is a
share of the policy's ``risk.max_auto_delta``, clipped to ``risk.autonomy_bands``:
a candidate the policy may run on its own. Optionally (``simulation_step_factor``)
a larger step is proposed too, marked for the simulation gate.

Effects come from the champion world model (:func:`predict_effects`: the next
bucket with the change minus without it, 90% interval). Without a champion, or
when the model cannot predict for a shard, the effect is the documented
direction of the parameter (docs/world.md) scaled by a rough elasticity and the
hypothesis' strength, with an interval ``prior_interval_factor`` times wider
than the effect; the proposal says so (``evidence.effect_source``), it never
pretends a model spoke.

Expected utility against the goals, per candidate on shard ``s``::

    U = sum over primary goals g of  w(g) * (gain_g - aversion * halfwidth_g) / scale_g
        + sum over other goals g of    w(g) * min(gain_g, 0) / scale_g
        - guardrail_weight * sum over guardrail KPIs k of  added band violation_k / scale_k
        + evidence_weight * strength * max w(g) over primary goals not predicted to move the wrong way
        - simulation_cost (candidates routed to the simulation gate)

``gain_g`` is the predicted move of the goal's KPI in its direction (capped at
the distance to the goal's target, when it has one), ``scale_g`` the KPI's
bucket-to-bucket noise on the shard (so goals in different units compare),
``w(g) = 6 - priority``. Goals apply to ``s`` unless scoped to other regions;
a goal is primary when its KPI is one the move's parameter is documented to
act on (docs/world.md; ``PRIOR_ELASTICITY``): uncertainty is priced on the
effect a change is made for, while side effects count only when predicted
harmful. The band violation is the pessimistic end of the
predicted interval beyond a guardrail's band, less what the shard already
violates. The evidence term is the value of testing what the marts show: the
one-step world model sees little of effects that build over hours (docs/world-model.md),
so a strong hypothesis whose change the model does not expect to backfire is
worth a canary (which the judge guards); one the model expects to move its goal
the wrong way gets no such credit.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aegis.domain import (
    PARAM_BOUNDS,
    AutonomousChangeSet,
    Comparator,
    GoalSpec,
    ParamChange,
    PromotionState,
    ShardConfig,
    ShardInfo,
    ShardRole,
)
from aegis.proposals.goals import GoalBook, priority_weight
from aegis.proposals.hypotheses import Hypothesis, MartFrames, Move, all_hypotheses
from aegis.proposals.model import PredictedEffect, Proposal
from aegis.proposals.settings import ProposalSettings
from aegis.telemetry import STAGE_BANDS, ZONE_BANDS

ACTOR = "aegis-proposer"
ROUND_DIGITS = 4
SCALE_FLOOR_REL = 0.05  # a KPI's noise scale is at least 5% of its level ...
SCALE_FLOOR_ABS = 1e-6  # ... and never zero
# Rough elasticities (relative KPI change per relative parameter change) in the
# directions of docs/world.md "WorldParam -> KPI": only a prior for when no
# model can speak, never a prediction. Zone / stage vectors: see _prior_kpis.
PRIOR_ELASTICITY: dict[str, dict[str, float]] = {
    "npc_aggression": {
        "deaths_early": 1.0,
        "deaths_mid": 1.0,
        "deaths_late": 1.0,
        "abandons_early": 0.5,
        "abandons_mid": 0.5,
        "abandons_late": 0.5,
        "abandon_rate": 0.3,
        "currency_sinks": 0.2,
        "churn_rate": 0.3,
    },
    "quest_pacing": {
        "abandons_early": 0.7,
        "abandons_mid": 0.7,
        "abandons_late": 0.7,
        "abandon_rate": 0.5,
        "completions_early": -1.0,
        "completions_mid": -1.0,
        "completions_late": -1.0,
        "quest_completions": -1.0,
    },
    "quest_reward": {"currency_sources": 0.3, "inflation": 0.5},
    "drop_rate": {"currency_sources": 0.2, "inflation": -0.3},
    "source_multiplier": {"currency_sources": 1.0, "inflation": 1.0, "velocity": -0.3},
    "sink_multiplier": {"currency_sinks": 1.0, "inflation": -1.0, "velocity": 0.3},
    "map_event_frequency": {
        "players_online": 0.1,
        "sessions_started": 0.1,
        "tick_p95_ms": 0.3,
        "currency_sources": 0.05,
    },
}
ProposalPredictor = Callable[[AutonomousChangeSet, pd.DataFrame], dict[str, Any]]


def model_predictor(model: Any, threads: int = 1) -> ProposalPredictor:
    """``predict_effects`` bound to ``model``, fed only the buckets it reads, single-threaded.

    One candidate is one tiny forward pass; with torch's default threading a
    loaded small machine spends most of it in thread contention (10x slower,
    as in training). Only the last ``2 x window`` buckets are passed: the model
    reads its last ``window`` and cleaning a day of history per candidate was
    the rest of the cost.
    """
    import torch

    from aegis.worldmodel.effects import as_world_model, predict_effects

    wm = as_world_model(model)
    tail = 2 * wm.window

    def predict(cs: AutonomousChangeSet, history: pd.DataFrame) -> dict[str, Any]:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return predict_effects(cs, history.tail(tail), wm)
        finally:
            torch.set_num_threads(before)

    return predict


# ---------------------------------------------------------------- candidates


@dataclass
class Candidate:
    changeset: AutonomousChangeSet
    hypotheses: list[Hypothesis]
    move: Move
    relative_step: float
    route: str  # "auto" | "simulate"

    @property
    def strength(self) -> float:
        return max(h.strength for h in self.hypotheses)


def _round_toward(before: float, after: float) -> float:
    """``after`` rounded to ROUND_DIGITS without making the step larger than asked."""
    q = 10**ROUND_DIGITS
    x = round(after * q, 6)  # 2.4000000000000004 is 2.4, not a step past it
    return (math.floor(x) / q) if after > before else (math.ceil(x) / q)


def step_value(before: float, move: Move, relative: float, band: tuple[float, float]) -> float | None:
    """The moved value, or None when the knob cannot move that way (at its band edge, or zero)."""
    if before <= 0 or relative <= 0:
        return None
    lo, hi = max(band[0], PARAM_BOUNDS[move.param][0]), min(band[1], PARAM_BOUNDS[move.param][1])
    after = _round_toward(before, min(hi, max(lo, before * (1 + move.sign * relative))))
    if (after - before) * move.sign <= 10**-ROUND_DIGITS / 2:
        return None
    return after


def changeset_id(target: str, config_version: int, diff: dict[str, ParamChange]) -> str:
    """Same shard, same config version, same change -> same id: a re-ranking never re-proposes under a new name."""
    body = json.dumps(
        {"target": target, "v": config_version, "diff": {k: v.model_dump() for k, v in sorted(diff.items())}},
        sort_keys=True,
    )
    return "cs-" + hashlib.sha256(body.encode()).hexdigest()[:12]


def build_candidates(
    hypotheses: Iterable[Hypothesis],
    configs: dict[str, ShardConfig],
    shard_regions: dict[str, str],
    settings: ProposalSettings,
) -> list[Candidate]:
    """One candidate per (shard, move, route); a move several hypotheses suggest carries them all."""
    found: dict[tuple[str, Move, str], Candidate] = {}
    routes = [("auto", 1.0)]
    if settings.simulation_step_factor > 0:
        routes.append(("simulate", settings.simulation_step_factor / settings.step_fraction))
    for hyp in hypotheses:
        for shard in hyp.targets(shard_regions):
            cfg = configs.get(shard)
            if cfg is None:
                continue
            for move in hyp.moves:
                for route, factor in routes:
                    key = (shard, move, route)
                    if key in found:
                        if hyp not in found[key].hypotheses:
                            found[key].hypotheses.append(hyp)
                        continue
                    cand = _candidate(hyp, shard, cfg, move, settings, route, factor)
                    if cand is not None:
                        found[key] = cand
    return list(found.values())


def _candidate(
    hyp: Hypothesis,
    shard: str,
    cfg: ShardConfig,
    move: Move,
    settings: ProposalSettings,
    route: str,
    factor: float,
) -> Candidate | None:
    relative = settings.auto_step(move.param) * factor
    band = settings.band(move.param) if route == "auto" else PARAM_BOUNDS[move.param]
    current = getattr(cfg.params, move.param)
    if isinstance(current, list):
        if move.index is None or not 0 <= move.index < len(current):
            return None
        new = step_value(current[move.index], move, relative, band)
        if new is None:
            return None
        after: float | list[float] = [new if i == move.index else v for i, v in enumerate(current)]
        before: float | list[float] = list(current)
    else:
        new = step_value(current, move, relative, band)
        if new is None:
            return None
        before, after = current, new
    diff = {move.param: ParamChange(before=before, after=after)}
    cs = AutonomousChangeSet(
        id=changeset_id(shard, cfg.version, diff),
        actor=ACTOR,
        target=shard,
        diff=diff,
        rationale=hyp.text,
    )
    return Candidate(cs, [hyp], move, relative, route)


# ------------------------------------------------------------------- effects


@dataclass
class ShardStats:
    """Current level and noise scale of every KPI on one shard (from its recent buckets)."""

    level: dict[str, float]
    scale: dict[str, float]

    @classmethod
    def of(cls, history: pd.DataFrame, level_buckets: int) -> ShardStats:
        level: dict[str, float] = {}
        scale: dict[str, float] = {}
        for col in history.columns:
            if col in ("shard_id", "region", "bucket_start", "config_version") or col.startswith("p_"):
                continue
            values = pd.to_numeric(history[col], errors="coerce").dropna()
            if values.empty:
                continue
            lvl = float(values.iloc[-level_buckets:].mean())
            sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            level[col] = lvl
            scale[col] = max(sd if np.isfinite(sd) else 0.0, SCALE_FLOOR_REL * abs(lvl), SCALE_FLOOR_ABS)
        return cls(level, scale)


def _prior_kpis(move: Move) -> dict[str, float]:
    """Elasticities of a move's parameter, per KPI (vector parameters: the element's band only)."""
    if move.param in PRIOR_ELASTICITY:
        return PRIOR_ELASTICITY[move.param]
    i = move.index or 0
    if move.param in ("spawn_rate", "elite_share"):
        band = next(b for b, zones in ZONE_BANDS.items() if i in zones)
        e = (0.5 if move.param == "spawn_rate" else 0.3) / len(ZONE_BANDS[band])
        out = {f"deaths_{band}": e, "abandon_rate": e / 4}
        if move.param == "spawn_rate":
            out["currency_sources"] = 0.5 / 6
        return out
    if move.param == "quest_difficulty":
        stage = i + 1
        band = next(b for b, stages in STAGE_BANDS.items() if stage in stages)
        n = len(STAGE_BANDS[band])
        return {
            f"abandons_{band}": 1.0 / n,
            f"completions_{band}": -0.5 / n,
            "abandon_rate": 0.2,
            "churn_rate": 0.05,
        }
    return {}


def prior_effects(
    cand: Candidate, stats: ShardStats, settings: ProposalSettings
) -> dict[str, PredictedEffect]:
    """The hypothesis' own expectation with a wide interval: what ranks candidates when no model can."""
    rel = cand.move.sign * cand.relative_step
    out: dict[str, PredictedEffect] = {}
    for kpi, e in _prior_kpis(cand.move).items():
        if kpi not in stats.level:
            continue
        magnitude = max(abs(stats.level[kpi]), stats.scale[kpi])
        mean = e * rel * magnitude * cand.strength
        half = settings.prior_interval_factor * abs(mean)
        out[kpi] = PredictedEffect(kpi=kpi, mean=mean, lo=mean - half, hi=mean + half)
    return out


# ------------------------------------------------------------------- utility


@dataclass
class Scored:
    utility: float
    goal_id: str
    parts: dict[str, float] = field(default_factory=dict)


def score(
    effects: dict[str, PredictedEffect],
    stats: ShardStats,
    goals: GoalBook,
    region: str,
    settings: ProposalSettings,
    route: str,
    primary: set[str] | None = None,
    strength: float = 0.0,
) -> Scored:
    """Expected utility of one candidate against every goal that applies to its shard (module docstring).

    ``primary``: the KPIs the move is documented to act on (None: every goal's
    KPI). A primary goal counts its predicted gain less the price of its
    uncertainty; any other goal counts only a predicted harm (side effects),
    so a knob is not charged for the noise of KPIs it is not meant to move.
    ``strength``: the hypothesis' strength (0..1); see the evidence term in the
    module docstring.
    """
    total = 0.0
    parts: dict[str, float] = {}
    best_goal, best_gain = None, -math.inf
    credited: tuple[float, str] | None = None  # (weight, id) of the goal the evidence term credits
    guardrails: dict[str, tuple[float, float]] = {}
    for goal in goals.goals:
        if not goals.applies(goal, region):
            continue
        guardrails.update(goals.guardrails_for(goal))
        eff = effects.get(goal.kpi)
        if eff is None:
            continue
        is_primary = primary is None or goal.kpi in primary
        u = _goal_utility(goal, eff, stats, settings, is_primary)
        parts[f"goal:{goal.id}"] = round(u, 4)
        total += u
        if u > best_gain:
            best_goal, best_gain = goal.id, u
        sign = 1.0 if goal.direction == Comparator.MAXIMIZE else -1.0
        w = priority_weight(goal.priority)
        if is_primary and sign * eff.mean >= 0 and (credited is None or w > credited[0]):
            credited = (w, goal.id)  # not predicted to move its goal the wrong way
    if credited is not None and strength > 0 and settings.evidence_weight > 0:
        bonus = settings.evidence_weight * strength * credited[0]
        parts["evidence"] = round(bonus, 4)
        total += bonus
        if bonus > best_gain:
            best_goal, best_gain = credited[1], bonus
    if best_gain <= 0 and primary is not None:  # nothing gained: name the goal the move is made for
        aimed = [g for g in goals.goals if goals.applies(g, region) and g.kpi in primary]
        if aimed:
            best_goal = min(aimed, key=lambda g: g.priority).id
    for kpi, band in guardrails.items():
        eff = effects.get(kpi)
        if eff is None or kpi not in stats.level:
            continue
        penalty = settings.guardrail_weight * _added_violation(stats.level[kpi], eff, band) / stats.scale[kpi]
        if penalty > 0:
            parts[f"guardrail:{kpi}"] = round(-penalty, 4)
            total -= penalty
    if route == "simulate":
        parts["simulation_cost"] = -settings.simulation_cost
        total -= settings.simulation_cost
    if best_goal is None:  # nothing predicted for any goal: attach the first goal that applies
        best_goal = next((g.id for g in goals.goals if goals.applies(g, region)), goals.goals[0].id)
    return Scored(total, best_goal, parts)


def _goal_utility(
    goal: GoalSpec, eff: PredictedEffect, stats: ShardStats, settings: ProposalSettings, primary: bool = True
) -> float:
    sign = 1.0 if goal.direction == Comparator.MAXIMIZE else -1.0
    gain = sign * eff.mean
    if goal.target is not None and goal.kpi in stats.level:
        room = sign * (goal.target - stats.level[goal.kpi])  # how far the KPI still is from the target
        if gain > 0:
            gain = min(gain, max(room, 0.0))
    scale = stats.scale.get(goal.kpi, SCALE_FLOOR_ABS)
    if not primary:
        return priority_weight(goal.priority) * min(gain, 0.0) / scale
    half = (eff.hi - eff.lo) / 2
    return priority_weight(goal.priority) * (gain - settings.uncertainty_aversion * half) / scale


def _added_violation(level: float, eff: PredictedEffect, band: tuple[float, float]) -> float:
    lo, hi = band

    def violation(a: float, b: float) -> float:
        return max(0.0, b - hi) + max(0.0, lo - a)

    return max(0.0, violation(level + eff.lo, level + eff.hi) - violation(level, level))


# ------------------------------------------------------------------- ranking


@dataclass
class Ranking:
    """The ranked proposals and what a person needs to trust them."""

    proposals: list[Proposal]
    hypotheses: list[Hypothesis]
    candidates: int
    model: str | None  # "aegis-world-model vN" or None (no champion)
    notes: list[str] = field(default_factory=list)
    skipped_tried: int = 0

    def summary(self) -> str:
        if not self.proposals:
            return f"no proposal: {len(self.hypotheses)} hypotheses, none gave a candidate worth ranking"
        top = self.proposals[0]
        return (
            f"ranked {len(self.proposals)} proposals from {len(self.hypotheses)} hypotheses; best: "
            f"{describe_change(top)} on {top.changeset.target} (utility {top.utility:.2f}, goal {top.goal_id})"
        )


def describe_diff(cs: AutonomousChangeSet) -> str:
    """``quest_difficulty[4] 1.3→1.196``: only the elements that change."""
    parts = []
    for name, ch in cs.diff.items():
        if isinstance(ch.before, list) and isinstance(ch.after, list):
            idx = [i for i, (a, b) in enumerate(zip(ch.before, ch.after, strict=True)) if a != b]
            parts += [f"{name}[{i}] {ch.before[i]:g}→{ch.after[i]:g}" for i in idx]
        else:
            parts.append(f"{name} {ch.before:g}→{ch.after:g}")
    return ", ".join(parts)


def describe_change(p: Proposal) -> str:
    return describe_diff(p.changeset)


def rank_proposals(
    marts: MartFrames,
    goals: GoalBook,
    configs: dict[str, ShardConfig],
    settings: ProposalSettings,
    predictor: ProposalPredictor | None = None,
    model_label: str | None = None,
    economy_bands: dict[str, tuple[float, float]] | None = None,
    tried: set[str] | None = None,
    interval_scale: float = 1.0,
) -> Ranking:
    """Hypotheses -> candidates -> effects -> utility -> ranked :class:`Proposal` list (best first).

    ``configs``: each shard's current config from the game backend (the diffs'
    ``before``). ``predictor``: ``predict_effects`` bound to the champion, or None
    when there is none (:func:`model_predictor` binds one). ``economy_bands``:
    default the policy's (``settings.economy_bands``). ``tried``: changeset ids already
    in the store (proposed before on the same config), left out so a change is not retried blindly.
    ``interval_scale``: the reality delta's widening of the model's intervals
    (``aegis.reflection.delta.read_scale``; 1 = as the model says).
    """
    regions = marts.shard_regions()
    hyps = all_hypotheses(
        marts, settings.evidence, settings.economy_bands if economy_bands is None else economy_bands
    )
    cands = build_candidates(hyps, configs, regions, settings)
    notes = _ranking_notes(settings, predictor, interval_scale)
    shown_scale = interval_scale if predictor is not None else None
    tried = tried or set()
    skipped = 0
    stats_cache: dict[str, ShardStats] = {}
    scored: list[tuple[float, Proposal]] = []
    model_failures: dict[str, str] = {}
    for cand in cands:
        cs = cand.changeset
        if cs.id in tried:
            skipped += 1
            continue
        history = marts.history(cs.target)
        if cs.target not in stats_cache:
            stats_cache[cs.target] = ShardStats.of(history, settings.level_buckets)
        stats = stats_cache[cs.target]
        effects, source, levels = _effects(
            cand, history, stats, settings, predictor, model_label, interval_scale
        )
        if source.startswith("prior") and predictor is not None:
            model_failures.setdefault(cs.target, source)
        region = regions.get(cs.target, "")
        s = score(
            effects, stats, goals, region, settings, cand.route, set(_prior_kpis(cand.move)), cand.strength
        )
        proposal = _proposal(
            cand, s, (effects, source, levels), stats, goals, region, configs[cs.target].version, shown_scale
        )
        scored.append((s.utility, proposal))
    for shard, why in sorted(model_failures.items()):
        notes.append(f"{shard}: the model could not predict ({why}); ranked on the prior")
    ranked = _ranked(scored, settings.max_candidates)
    return Ranking(ranked, hyps, len(cands), model_label if predictor is not None else None, notes, skipped)


def _ranked(scored: list[tuple[float, Proposal]], limit: int) -> list[Proposal]:
    """Best utility first (ties by shard, then changeset id), the first ``limit``, ranked from 1."""
    scored.sort(key=lambda x: (-x[0], x[1].changeset.target, x[1].changeset.id))
    return [p.model_copy(update={"rank": i + 1}) for i, (_, p) in enumerate(scored[:limit])]


def _ranking_notes(
    settings: ProposalSettings, predictor: ProposalPredictor | None, interval_scale: float
) -> list[str]:
    """The ranking's opening notes: ranked on priors (no champion), or on widened model intervals."""
    notes: list[str] = []
    if predictor is None:
        notes.append(
            "no champion world model: effects are the hypotheses' own priors (docs/world.md directions) "
            f"with intervals {settings.prior_interval_factor}x the effect; rank on evidence, not on a model"
        )
    if interval_scale != 1.0 and predictor is not None:
        notes.append(
            f"model intervals widened x{interval_scale:.2f} (reality delta: the model's past intervals "
            "covered fewer canary outcomes than they claimed)"
        )
    return notes


def _proposal(
    cand: Candidate,
    s: Scored,
    predicted: tuple[dict[str, PredictedEffect], str, dict[str, float]],
    stats: ShardStats,
    goals: GoalBook,
    region: str,
    config_version: int,
    interval_scale: float | None,
) -> Proposal:
    """One scored candidate as a :class:`Proposal` (rank 1 until the list is sorted).

    ``predicted``: what :func:`_effects` returned for it (effects by KPI, their
    source, predicted levels). ``interval_scale``: the widening applied to the
    model's intervals, None when there is no champion.
    """
    effects, source, levels = predicted
    relevant = _relevant_kpis(goals, region)
    goal_kpi = goals.goal(s.goal_id).kpi
    # the chosen goal's KPI first, then the other goals' and the guardrails', largest move first
    rest = sorted(
        (k for k in relevant if k in effects and k != goal_kpi),
        key=lambda k: -abs(effects[k].mean) / stats.scale.get(k, 1.0),
    )
    shown = ([effects[goal_kpi]] if goal_kpi in effects else []) + [effects[k] for k in rest]
    evidence = {
        "hypotheses": [
            {"id": h.id, "kind": h.kind, "strength": round(h.strength, 3), **h.evidence}
            for h in cand.hypotheses
        ],
        "move": cand.move.label(),
        "relative_step": round(cand.relative_step, 4),
        "route": cand.route,
        "config_version": config_version,
        "effect_source": source,
        "interval_scale": interval_scale,
        "utility_parts": s.parts,
        "current_levels": {k: round(stats.level[k], 6) for k in relevant if k in stats.level},
    }
    if levels:
        evidence["predicted_levels"] = levels
    text = " AND ".join(h.text for h in cand.hypotheses)
    cs = cand.changeset.model_copy(update={"goal_id": s.goal_id})
    return Proposal(
        changeset=cs,
        goal_id=s.goal_id,
        hypothesis=f"{text}. Try {cand.move.label()} ({describe_diff(cs)}).",
        evidence=evidence,
        predicted=shown,
        utility=round(s.utility, 4),
        rank=1,
    )


def _relevant_kpis(goals: GoalBook, region: str) -> list[str]:
    out: list[str] = []
    for g in goals.goals:
        if goals.applies(g, region):
            for k in [g.kpi, *goals.guardrails_for(g)]:
                if k not in out:
                    out.append(k)
    return out


def _effects(
    cand: Candidate,
    history: pd.DataFrame,
    stats: ShardStats,
    settings: ProposalSettings,
    predictor: ProposalPredictor | None,
    model_label: str | None,
    interval_scale: float = 1.0,
) -> tuple[dict[str, PredictedEffect], str, dict[str, float]]:
    """(effects by KPI, where they came from, predicted KPI levels after the change)."""
    if predictor is not None:
        try:
            raw = predictor(cand.changeset, history)
        except ValueError as exc:  # EffectError: short history, gap in telemetry, ...
            return prior_effects(cand, stats, settings), f"prior (model failed: {exc})", {}
        effects = {
            k: PredictedEffect(
                kpi=k,
                mean=e.delta,
                lo=e.delta - (e.delta - e.low) * interval_scale,
                hi=e.delta + (e.high - e.delta) * interval_scale,
            )
            for k, e in raw.items()
        }
        levels = {k: round(float(e.expected), 6) for k, e in raw.items()}
        return effects, f"world model {model_label or 'champion'}", levels
    return prior_effects(cand, stats, settings), "prior (no champion model)", {}


# ------------------------------------------------------------ selection inputs


def busy_shards_from(shards: list[ShardInfo], live_controls: Iterable[str] = ()) -> set[str]:
    """Shards an experiment holds: every shard in the canary role, plus the live canaries' controls."""
    return {s.id for s in shards if s.role == ShardRole.CANARY} | set(live_controls)


def changes_today(transitions: Iterable[Any], now: datetime | None = None) -> int:
    """Canaries started since 00:00 UTC today (lifecycle transitions into ``canary``)."""
    now = now or datetime.now(UTC)
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return sum(1 for t in transitions if t.dst == PromotionState.CANARY and t.at >= midnight)


# -------------------------------------------------------------------- output


def markdown_table(proposals: list[Proposal], limit: int = 15) -> str:
    """The ranked candidates as a table a person reads at a glance."""
    if not proposals:
        return "_no candidates_"
    lines = [
        "| # | shard | change | hypothesis | predicted effect (90% interval) | utility |",
        "|---:|---|---|---|---|---:|",
    ]
    for p in proposals[:limit]:
        hyp = p.hypothesis.split(". Try ")[0].replace("|", "/")
        if len(hyp) > 160:
            hyp = hyp[:157] + "..."
        effects = "; ".join(
            f"{e.kpi} {e.mean:+.3g} [{e.lo:+.3g}, {e.hi:+.3g}]"
            for e in p.predicted[:3]  # the goal's KPI first (rank_proposals orders them)
        )
        route = " (sim)" if p.evidence.get("route") == "simulate" else ""
        lines.append(
            f"| {p.rank} | {p.changeset.target} | {describe_change(p)}{route} | {hyp} | {effects or '-'} | "
            f"{p.utility:.2f} |"
        )
    if len(proposals) > limit:
        lines.append(f"\n_{len(proposals) - limit} more in latest.json_")
    return "\n".join(lines)


def write_latest(path: Path, ranking: Ranking, generated_at: datetime | None = None) -> Path:
    """``latest.json``: the ranking, atomically (a reader never sees half a file)."""
    doc = {
        "generated_at": (generated_at or datetime.now(UTC)).isoformat(),
        "model": ranking.model,
        "notes": ranking.notes,
        "hypotheses": [
            {
                "id": h.id,
                "kind": h.kind,
                "text": h.text,
                "strength": round(h.strength, 3),
                "evidence": h.evidence,
            }
            for h in ranking.hypotheses
        ],
        "candidates": ranking.candidates,
        "skipped_tried": ranking.skipped_tried,
        "proposals": [p.model_dump(mode="json") for p in ranking.proposals],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    tmp.replace(path)
    return path


def read_latest(path: Path) -> list[Proposal]:
    """The proposals of a ``latest.json`` (what the canary loop can read outside Dagster)."""
    doc = json.loads(Path(path).read_text())
    return [Proposal.model_validate(p) for p in doc.get("proposals", [])]
