"""The canary loop: start a canary from the best proposal, judge it live, promote in waves or roll back.

Everything here is plain Python over the changeset lifecycle (no Dagster): the
Dagster assets and sensors in ``assets/canary.py`` and the CLI call the same
:class:`CanaryLoop`, so what the UI shows, what ``aegis canary status`` prints
and what acts on a verdict are one code path.

Why each rule:

- **Fair controls.** The judge compares the canary with control shards; shards
  in other regions peak at other hours, so :func:`aegis.canary.judge.choose_controls`
  picks them (same region first, then similar diurnal phase). Controls are
  stored with the changeset (``canary_specs``) so a replay, the CLI and a later
  audit judge against the same shards.
- **Exclusion.** A live canary's shard and its controls are busy: no second
  experiment starts on them, and nothing starts while a promotion rollout is
  running (the rollout touches every shard).
- **Verdict -> action.** ``promote`` promotes and rolls out; ``rollback`` and
  ``inconclusive`` restore the pre-change snapshot (an experiment that cannot
  show the change is safe within its budget is not kept); ``continue`` past the
  budget is treated as inconclusive.
- **Progressive rollout.** The remaining shards get the change in waves
  (:data:`WAVE_FRACTIONS` of them cumulatively, smallest shards first: an early
  wave risks fewer players). Each shard is its own changeset (policy check,
  simulation gate when asked, snapshot, guarded PUT, integrity check, rollback
  artifacts) and a wave is promoted only when every shard of it applied and
  verified; otherwise the wave's applied shards are restored from their
  snapshots and the rollout stops.
- **Idempotent.** Every step goes through the lifecycle's journal; wave
  children have deterministic ids, the rollout's progress is stored, and every
  ledger event has a unique key, so a retried or killed run repeats nothing.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from aegis import warehouse as warehouse_db
from aegis.changes.lifecycle import finite
from aegis.changes.store import CanarySpecRecord, ChangeSetNotFound, ChangeSetRecord
from aegis.domain import (
    PARAM_BOUNDS,
    TERMINAL_STATES,
    AutonomousChangeSet,
    ExecutionPolicy,
    ParamChange,
    PromotionState,
    ReflectionRecord,
    ResourceLimits,
    ShardInfo,
    WorldParams,
    utcnow,
)

if TYPE_CHECKING:
    from aegis.canary.judge import CanarySpec, Judgement, JudgeSettings
    from aegis.changes.lifecycle import Lifecycle
    from aegis.proposals.model import Proposal

log = logging.getLogger(__name__)

S = PromotionState
PROMOTER_ACTOR = "aegis-promoter"
# Cumulative share of the remaining shards after each wave (first wave ~a quarter, then half, then all).
WAVE_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 1.0)
# A rollout of a change the canary proved is one changeset per shard; the promoter's hourly
# limit must let one rollout of a large fleet through (the proposer keeps the default limit).
PROMOTER_MAX_CHANGES_PER_HOUR = 64
DEFAULT_CONTROLS = 3
DEFAULT_DAILY_BUDGET = 6
# Candidates one launch tries when the gates reject the best ones.
MAX_LAUNCH_ATTEMPTS = 3
# Buckets of pre-change history read with the canary data (the judge's pre-period and the
# control choice); 2 game days of 5-minute buckets.
PRE_PERIOD_BUCKETS = 576
KPI_TABLE = "fct_shard_kpis"
WAVE_CHILD_MARK = "-w"

Action = Literal["promote", "rollback", "wait"]


class LoopError(ValueError):
    """A loop request that cannot be carried out as asked (the message says why)."""


def promoter_policy() -> ExecutionPolicy:
    """The ExecutionPolicy of the promotion waves' actor: parameter changes only, any shard."""
    return ExecutionPolicy(
        actor=PROMOTER_ACTOR,
        allowed_tools=["set_params"],
        data_scope=["*"],
        limits=ResourceLimits(max_changes_per_hour=PROMOTER_MAX_CHANGES_PER_HOUR),
    )


# ----------------------------------------------------------------- pure planning


def action_for(verdict: str, buckets_observed: int, max_buckets: int) -> Action:
    """What a live verdict asks the loop to do."""
    if verdict == "promote":
        return "promote"
    if verdict in ("rollback", "inconclusive"):
        return "rollback"
    if buckets_observed >= max_buckets:  # the budget is spent without a decision: inconclusive
        return "rollback"
    return "wait"


def plan_waves(
    canary: str, shards: list[ShardInfo], fractions: tuple[float, ...] = WAVE_FRACTIONS
) -> list[list[str]]:
    """The remaining shards (up, not the canary) split into progressive waves, smallest shards first."""
    if not fractions or any(not 0 < f <= 1 for f in fractions) or list(fractions) != sorted(fractions):
        raise LoopError(f"wave fractions must rise within (0, 1], got {fractions}")
    remaining = sorted(
        (s for s in shards if s.id != canary and s.status == "up"), key=lambda s: (s.players_total, s.id)
    )
    n = len(remaining)
    waves: list[list[str]] = []
    taken = 0
    for i, frac in enumerate(fractions):
        upto = n if i == len(fractions) - 1 else min(n, max(taken + 1, math.ceil(frac * n)))
        if upto > taken:
            waves.append([s.id for s in remaining[taken:upto]])
            taken = upto
    return waves


def wave_child_id(parent_id: str, wave: int, shard: str) -> str:
    return f"{parent_id}{WAVE_CHILD_MARK}{wave}-{shard}"


def _shift(
    before: float | list[float], delta_before: Any, delta_after: Any, bounds: tuple[float, float]
) -> Any:
    lo, hi = bounds
    if isinstance(before, list):
        return [
            round(min(hi, max(lo, b + (a - d))), 9)
            for b, d, a in zip(before, delta_before, delta_after, strict=True)
        ]
    return round(min(hi, max(lo, before + (delta_after - delta_before))), 9)


def wave_changeset(
    parent: AutonomousChangeSet, shard: str, live: WorldParams, wave: int
) -> AutonomousChangeSet | None:
    """The parent's change carried to ``shard``: the same shift of each parameter from the shard's own
    live values (shards explore and differ; an absolute copy of the canary's values would be a
    different change), clipped to the parameter bounds. None when nothing would change."""
    diff: dict[str, ParamChange] = {}
    for name, change in parent.diff.items():
        current = getattr(live, name)
        after = _shift(current, change.before, change.after, PARAM_BOUNDS[name])
        if after != current:
            diff[name] = ParamChange(before=current, after=after)
    if not diff:
        return None
    return AutonomousChangeSet(
        id=wave_child_id(parent.id, wave, shard),
        actor=PROMOTER_ACTOR,
        kind=parent.kind,
        target=shard,
        goal_id=parent.goal_id,
        diff=diff,
        rationale=f"promotion wave {wave} of canary {parent.id} (judged on {parent.target})",
        risk_score=parent.risk_score,
    )


def judge_spec(spec: CanarySpecRecord) -> CanarySpec | None:
    """The judge's view of a stored spec (None until the change applied and the start is known)."""
    from aegis.canary.judge import CanarySpec

    if spec.start is None:
        return None
    return CanarySpec(
        canary=spec.canary, controls=spec.controls, start=spec.start, max_buckets=spec.max_buckets
    )


def read_kpis(
    warehouse: Path, shards: list[str] | None = None, since: Any = None, wait_s: float = 60.0
) -> pd.DataFrame:
    """Rows of ``fct_shard_kpis`` (optionally for some shards, from ``since``), read in one short look.

    The connection is read-only, under the warehouse's shared lock (:mod:`aegis.warehouse`),
    and closed at once: dbt needs the file's write lock for the next build. A warehouse
    still locked after ``wait_s`` or missing raises :class:`WarehouseUnavailable`.
    """
    import duckdb

    if not warehouse_db.available(warehouse):
        raise WarehouseUnavailable(f"warehouse {warehouse} does not exist yet (the marts were never built)")
    where, params = [], []
    if shards:
        where.append(f"shard_id in ({', '.join('?' for _ in shards)})")
        params.extend(shards)
    if since is not None:
        where.append("bucket_start >= ?")
        params.append(since)
    sql = f"select * from main.{KPI_TABLE}" + (f" where {' and '.join(where)}" if where else "")
    sql += " order by bucket_start, shard_id"
    try:
        con = warehouse_db.connect(warehouse, wait_s=wait_s)
    except duckdb.Error as exc:
        raise WarehouseUnavailable(f"warehouse {warehouse} is busy or unreadable: {exc}") from exc
    try:
        con.execute("set TimeZone = 'UTC'")
        return con.execute(sql, params).df()
    except duckdb.Error as exc:
        raise WarehouseUnavailable(f"cannot read {KPI_TABLE} from {warehouse}: {exc}") from exc
    finally:
        con.close()


def newest_bucket(warehouse: Path) -> str | None:
    """The newest ``bucket_start`` in ``fct_shard_kpis`` as ISO text (None: empty or unreadable)."""
    import duckdb

    if not warehouse_db.available(warehouse):
        return None
    try:
        con = warehouse_db.connect(warehouse, wait_s=warehouse_db.SENSOR_WAIT_S)
    except duckdb.Error:
        return None
    try:
        con.execute("set TimeZone = 'UTC'")
        row = con.execute(f"select max(bucket_start) from main.{KPI_TABLE}").fetchone()
    except duckdb.Error:
        return None
    finally:
        con.close()
    if row is None or row[0] is None:
        return None
    return (
        pd.Timestamp(row[0]).tz_localize("UTC").isoformat()
        if pd.Timestamp(row[0]).tzinfo is None
        else (pd.Timestamp(row[0]).isoformat())
    )


class WarehouseUnavailable(RuntimeError):
    """The KPI mart cannot be read now (not built yet, or a build holds the file)."""


# ----------------------------------------------------------------- the loop


@dataclass
class LiveCanary:
    record: ChangeSetRecord
    spec: CanarySpecRecord

    @property
    def id(self) -> str:
        return self.record.id


@dataclass
class LaunchOutcome:
    """What ``launch`` did: the chosen proposal (if any), the changeset as it ended, and why."""

    reason: str
    proposal: Proposal | None = None
    record: ChangeSetRecord | None = None
    controls: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "changeset_id": self.record.id if self.record else None,
            "state": self.record.state.value if self.record else None,
            "target": self.record.changeset.target if self.record else None,
            "controls": self.controls,
            "hypothesis": self.proposal.hypothesis if self.proposal else None,
        }


class CanaryLoop:
    """Launch, judge, act, roll out and reflect, over one :class:`~aegis.changes.lifecycle.Lifecycle`."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        settings: JudgeSettings | None = None,
        fractions: tuple[float, ...] = WAVE_FRACTIONS,
    ) -> None:
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self._settings = settings
        self.fractions = fractions
        lifecycle.config.actor_policies.setdefault(PROMOTER_ACTOR, promoter_policy())

    @property
    def settings(self) -> JudgeSettings:
        if self._settings is None:
            from aegis.canary.judge import JudgeSettings

            self._settings = JudgeSettings.from_policy_data(self.lifecycle.policy.data)
        return self._settings

    # ------------------------------------------------------------- state

    def live(self) -> list[LiveCanary]:
        """Canaries under judgement: a spec, and the changeset in ``canary``."""
        out = []
        for spec in self.store.canary_specs():
            rec = self.store.get(spec.changeset_id)
            if rec.state == S.CANARY:
                out.append(LiveCanary(rec, spec))
        return out

    def rollouts_running(self) -> list[str]:
        return [
            s.changeset_id
            for s in self.store.canary_specs()
            if (s.rollout or {}).get("status") in ("pending", "running")
        ]

    def busy_shards(self) -> set[str]:
        busy: set[str] = set()
        for c in self.live():
            busy.add(c.spec.canary)
            busy.update(c.spec.controls)
        return busy

    def changes_today(self) -> int:
        """Canaries applied in the last 24 hours (a candidate the gates rejected changed nothing)."""
        since = utcnow() - timedelta(days=1)
        return sum(1 for s in self.store.canary_specs() if s.created_at >= since and s.start is not None)

    # ------------------------------------------------------------- launch

    def launch(
        self,
        proposals: list[Proposal],
        kpis: pd.DataFrame,
        shards: list[ShardInfo],
        *,
        daily_budget: int = DEFAULT_DAILY_BUDGET,
        n_controls: int = DEFAULT_CONTROLS,
        max_buckets: int | None = None,
    ) -> LaunchOutcome:
        """Start a canary for the best proposal that may start now (or say why none).

        A candidate the policy or the simulation gate rejects (or whose config
        went stale) is recorded and reflected on, and the next best is tried, up
        to :data:`MAX_LAUNCH_ATTEMPTS` in one call; a proposal already tried
        (its id is in the store) is never tried again.
        """
        running = self.rollouts_running()
        if running:
            return LaunchOutcome(f"promotion rollout of {', '.join(running)} in progress; no new canary")
        tried = {r.id for r in self.store.changesets()}
        outcome = LaunchOutcome("no proposal tried")
        reasons: list[str] = []
        for _ in range(MAX_LAUNCH_ATTEMPTS):
            left = [p for p in proposals if p.changeset.id not in tried]
            outcome = self._launch_one(left, kpis, shards, daily_budget, n_controls, max_buckets)
            if outcome.record is None or outcome.record.state == S.CANARY:
                break
            tried.add(outcome.record.id)
            reasons.append(outcome.reason)
        if reasons and (outcome.record is None or outcome.record.state != S.CANARY):
            outcome.reason = "; ".join([*reasons, outcome.reason] if outcome.record is None else reasons)
        elif reasons:
            outcome.reason = f"{outcome.reason} (after {len(reasons)} rejected: {'; '.join(reasons)})"
        return outcome

    def _launch_one(
        self,
        proposals: list[Proposal],
        kpis: pd.DataFrame,
        shards: list[ShardInfo],
        daily_budget: int,
        n_controls: int,
        max_buckets: int | None,
    ) -> LaunchOutcome:
        from aegis.canary.judge import choose_controls
        from aegis.proposals.model import select_next
        from aegis.reflection.records import relative_predictions

        busy = self.busy_shards()
        proposal = select_next(proposals, busy, self.changes_today(), daily_budget)
        if proposal is None:
            return LaunchOutcome(
                f"no proposal may start: {len(proposals)} untried proposal(s), busy shards {sorted(busy)}, "
                f"{self.changes_today()} of {daily_budget} changes today"
            )
        cs = proposal.changeset
        free = [s for s in shards if s.id not in busy and s.id != cs.target and s.status == "up"]
        if not free:
            return LaunchOutcome(f"no free control shard for {cs.target}", proposal)
        controls = choose_controls(
            kpis, cs.target, [*free, *[s for s in shards if s.id == cs.target]], n_controls
        )
        controls = [c for c in controls if c != cs.target]
        if not controls:
            return LaunchOutcome(f"no fair control shard found for {cs.target}", proposal)
        budget = max_buckets or self.settings.default_max_buckets
        self.lifecycle.record_event(
            cs.id,
            "proposal",
            f"proposal-chosen:{cs.id}",
            f"Proposal chosen (rank {proposal.rank}, utility {proposal.utility:.3g}) for shard {cs.target}: "
            f"{proposal.hypothesis}",
            goal_id=proposal.goal_id,
            utility=proposal.utility,
            predicted=[p.model_dump(mode="json") for p in proposal.predicted],
        )
        predicted = [p.model_dump(mode="json") for p in proposal.predicted]
        doc: dict[str, Any] = {
            "hypothesis": proposal.hypothesis,
            "goal_id": proposal.goal_id,
            "utility": proposal.utility,
            "rank": proposal.rank,
            "evidence": proposal.evidence,
            "predicted": predicted,
            "predicted_relative": relative_predictions(predicted, kpis, cs.target),
        }
        rec = self.lifecycle.launch_canary(cs, controls, budget, doc)
        if rec.state in TERMINAL_STATES:
            self.reflect(rec.id)
        return LaunchOutcome(
            f"changeset {rec.id} is {rec.state.value}: {rec.reason or ''}", proposal, rec, controls
        )

    # ------------------------------------------------------------- judgement

    def judge_one(self, canary: LiveCanary, kpis: pd.DataFrame, trace: bool = False) -> Judgement | None:
        """Judge one live canary on ``kpis`` and store the judgement.

        None when it cannot be judged yet: not applied, or too little data (the
        judge's input error is stored as the reason, so ``status`` shows it).
        """
        from aegis.canary.judge import JudgeInputError, judge

        spec = judge_spec(canary.spec)
        if spec is None:
            return None
        try:
            j = judge(kpis, spec, self.settings, trace=trace)
        except JudgeInputError as exc:
            log.warning("canary %s cannot be judged yet: %s", canary.id, exc)
            waiting = {"verdict": "continue", "buckets_observed": 0, "decided_at": None, "metrics": []}
            self.store.update_canary_spec(
                canary.id, judgement={**waiting, "reason": f"cannot be judged yet: {exc}"}, judged_at=utcnow()
            )
            return None
        self.store.update_canary_spec(
            canary.id, judgement=finite(j.model_dump(mode="json")), judged_at=utcnow()
        )
        return j

    def judge_live(self, kpis: pd.DataFrame) -> dict[str, Judgement]:
        out = {}
        for canary in self.live():
            j = self.judge_one(canary, kpis)
            if j is not None:
                out[canary.id] = j
        return out

    def step(self, kpis: pd.DataFrame) -> dict[str, str]:
        """Finish interrupted work, judge every live canary, act on the decided ones: id -> action."""
        self.resume_rollouts()
        actions: dict[str, str] = {}
        for cs_id, j in self.judge_live(kpis).items():
            actions[cs_id] = self.act(cs_id, j)
        self.reflect_all()
        return actions

    def act(self, changeset_id: str, j: Judgement) -> Action:
        """Carry out what the verdict asks (idempotent: a finished canary is left as it is)."""
        spec = self._spec(changeset_id)
        rec = self.store.get(changeset_id)
        action = action_for(j.verdict, j.buckets_observed, spec.max_buckets)
        if action == "wait":
            return action
        verdict = j.verdict if j.verdict != "continue" else "inconclusive"
        if rec.state == S.CANARY:  # the judgement that decides is the one the reflection reads
            self.store.update_canary_spec(
                changeset_id, judgement=finite(j.model_dump(mode="json")), judged_at=utcnow()
            )
        self.lifecycle.record_event(
            changeset_id,
            "canary",
            f"verdict:{changeset_id}",
            f"Canary {changeset_id} on {spec.canary} judged {verdict} after {j.buckets_observed} of "
            f"{spec.max_buckets} buckets: {j.reason}",
            event="verdict",
            verdict=verdict,
            buckets_observed=j.buckets_observed,
            decided_at=j.decided_at.isoformat() if j.decided_at else None,
            metrics=[m.model_dump(mode="json") for m in j.metrics],
        )
        if action == "rollback":
            if rec.state == S.CANARY:
                self.roll_back(changeset_id, f"canary verdict {verdict}: {j.reason}")
        elif rec.state in (S.CANARY, S.PROMOTED):
            self.promote(changeset_id, j)
        self.reflect(changeset_id)
        return action

    def roll_back(self, changeset_id: str, reason: str) -> ChangeSetRecord:
        """Restore the pre-change snapshot (integrity verified by the lifecycle) and record it."""
        rec = self.lifecycle.roll_back(changeset_id, reason, mode="snapshot")
        out = self.store.step(changeset_id, "rollback")
        checks = (out.outcome or {}) if out else {}
        self.lifecycle.record_event(
            changeset_id,
            "canary",
            f"rollback:{changeset_id}",
            f"Canary {changeset_id} rolled back on {rec.changeset.target} from its pre-change snapshot; "
            f"integrity {'verified' if checks.get('ok') else 'NOT verified'}: {reason}",
            event="rollback",
            integrity_ok=bool(checks.get("ok")),
            violations=checks.get("violations", []),
        )
        return rec

    def promote(self, changeset_id: str, j: Judgement | None = None, by: str = "judge") -> ChangeSetRecord:
        """Promote the canary (its config must still be in force) and roll it out in waves."""
        from aegis.canary.judge import to_canary_result

        rec = self.store.get(changeset_id)
        spec = self.store.canary_spec(changeset_id)
        if spec is None:  # a canary started by hand (``aegis changeset run``): the rollout needs a spec row
            if rec.state not in (S.CANARY, S.PROMOTED):
                raise LoopError(
                    f"changeset {changeset_id} is {rec.state.value}; only a canary can be promoted"
                )
            spec = self.store.put_canary_spec(
                changeset_id, rec.changeset.target, [], 1, {"note": "started without a judged canary"}
            )
        if rec.state == S.CANARY:
            result = None
            js = judge_spec(spec)
            if j is not None and js is not None:
                result = to_canary_result(j, js)
            if spec.rollout is None:
                # marked before the promotion: a kill between the two still leaves a rollout to finish
                self.store.update_canary_spec(changeset_id, rollout={"status": "pending"})
            try:
                self.lifecycle.promote(changeset_id, result)
            except Exception:
                if self.store.get(changeset_id).state != S.PROMOTED:
                    self.store.update_canary_spec(changeset_id, rollout=None)
                raise
            if by != "judge":
                self.lifecycle.record_event(
                    changeset_id,
                    "canary",
                    f"manual-promote:{changeset_id}",
                    f"Canary {changeset_id} promoted by hand ({by}) on {spec.canary}",
                    event="manual_promote",
                    by=by,
                )
        elif rec.state != S.PROMOTED:
            raise LoopError(f"changeset {changeset_id} is {rec.state.value}; only a canary can be promoted")
        self.roll_out(changeset_id)
        self.reflect(changeset_id)
        return self.store.get(changeset_id)

    # ------------------------------------------------------------- rollout

    def roll_out(self, changeset_id: str) -> dict[str, Any]:
        """Carry a promoted canary to the remaining shards, wave by wave (resumable)."""
        spec = self._spec(changeset_id)
        parent = self.store.get(changeset_id)
        rollout = dict(spec.rollout or {})
        if rollout.get("status") in ("done", "stopped"):
            return rollout
        if rollout.get("status", "pending") == "pending":
            # shards under another live experiment (its canary or its controls) are left out: a
            # wave there would change that experiment's shards under it
            busy = self.busy_shards()
            shards = self.lifecycle.backend.shards()
            waves = plan_waves(spec.canary, [s for s in shards if s.id not in busy], self.fractions)
            rollout = {
                "skipped_busy": sorted(busy - {spec.canary}),
                "status": "running",
                "waves": waves,
                "done": [],
                "children": {},
                "started_at": utcnow().isoformat(),
            }
            self.store.update_canary_spec(changeset_id, rollout=rollout)
        for n, shards in enumerate(rollout["waves"], start=1):
            if n in rollout["done"]:
                continue
            ok, detail = self._run_wave(parent.changeset, n, shards)
            rollout["children"].update(detail["children"])
            self.lifecycle.record_event(
                changeset_id,
                "canary",
                f"wave:{changeset_id}:{n}",
                (
                    f"Promotion wave {n} of {len(rollout['waves'])} for {changeset_id}: "
                    + (
                        f"applied to {', '.join(detail['applied']) or 'no shard'} with integrity verified"
                        if ok
                        else f"FAILED ({'; '.join(detail['failures'])}); rolled back "
                        f"{', '.join(detail['rolled_back']) or 'nothing'} and stopped the rollout"
                    )
                ),
                event="promotion_wave",
                wave=n,
                ok=ok,
                **detail,
            )
            if not ok:
                rollout.update(status="stopped", failed_wave=n, failures=detail["failures"])
                self.store.update_canary_spec(changeset_id, rollout=rollout)
                return rollout
            rollout["done"].append(n)
            self.store.update_canary_spec(changeset_id, rollout=rollout)
        rollout["status"] = "done"
        rollout["ended_at"] = utcnow().isoformat()
        self.store.update_canary_spec(changeset_id, rollout=rollout)
        return rollout

    def resume_rollouts(self) -> None:
        for cs_id in self.rollouts_running():
            if self.store.get(cs_id).state == S.PROMOTED:
                self.roll_out(cs_id)

    def _run_wave(
        self, parent: AutonomousChangeSet, wave: int, shards: list[str]
    ) -> tuple[bool, dict[str, Any]]:
        """Apply a wave's per-shard changesets; promote them all only when all applied and verified."""
        from aegis.changes.gate import SimulationUnavailable
        from aegis.changes.lifecycle import ChangeSetError
        from aegis.changes.states import IllegalTransition
        from aegis.world.client import GameBackendError

        children: dict[str, str] = {}
        failures: list[str] = []
        skipped: list[str] = []
        records: list[ChangeSetRecord] = []
        for shard in shards:
            child_id = wave_child_id(parent.id, wave, shard)
            try:
                child = self.store.get(child_id).changeset
            except ChangeSetNotFound:
                live = self.lifecycle.backend.get_config(shard).params
                made = wave_changeset(parent, shard, live, wave)
                if made is None:
                    skipped.append(shard)
                    continue
                child = made
            children[shard] = child.id
            try:
                rec = self.lifecycle.run(child)
            except (ChangeSetError, IllegalTransition, SimulationUnavailable, GameBackendError) as exc:
                failures.append(f"{shard}: {exc}")
                break
            records.append(rec)
            if rec.state not in (S.CANARY, S.PROMOTED):
                failures.append(f"{shard}: {rec.state.value}: {rec.reason}")
                break  # the rest of the wave is not touched
        rolled_back: list[str] = []
        if failures:
            for rec in records:
                if self.store.get(rec.id).state == S.CANARY:
                    try:
                        self.lifecycle.roll_back(
                            rec.id, f"promotion wave {wave} of {parent.id} failed", "snapshot"
                        )
                        rolled_back.append(rec.changeset.target)
                    except (ChangeSetError, IllegalTransition, GameBackendError) as exc:
                        failures.append(f"{rec.changeset.target}: rollback failed: {exc}")
            for rec in records:
                self.reflect(rec.id)
            return False, {
                "children": children,
                "applied": [],
                "failures": failures,
                "rolled_back": rolled_back,
                "skipped": skipped,
            }
        applied = []
        for rec in records:
            self.lifecycle.promote(rec.id)
            applied.append(rec.changeset.target)
            self.reflect(rec.id)
        return True, {
            "children": children,
            "applied": applied,
            "failures": [],
            "rolled_back": [],
            "skipped": skipped,
        }

    # ------------------------------------------------------------- reflection

    def reflect(self, changeset_id: str) -> ReflectionRecord | None:
        """The reflection of a finished changeset (stored and recorded once)."""
        from aegis.reflection.records import build_reflection, reflection_summary

        rec = self.store.get(changeset_id)
        if rec.state not in TERMINAL_STATES:
            return None
        spec = self.store.canary_spec(changeset_id)
        transitions = self.store.transitions(changeset_id)
        refl = build_reflection(rec, spec, transitions)
        if self.store.put_reflection(changeset_id, refl.model_dump(mode="json")):
            self.lifecycle.record_event(
                changeset_id,
                "reflection",
                f"reflection:{changeset_id}",
                reflection_summary(refl),
                reflection=refl.model_dump(mode="json"),
            )
        return refl

    def reflect_all(self) -> int:
        """Reflect every finished changeset that has no reflection yet; how many were added."""
        have = {r["changeset_id"] for r in self.store.reflections()}
        n = 0
        for rec in self.store.changesets(set(TERMINAL_STATES)):
            if rec.id not in have and self.reflect(rec.id) is not None:
                n += 1
        return n

    # ------------------------------------------------------------- helpers

    def _spec(self, changeset_id: str) -> CanarySpecRecord:
        spec = self.store.canary_spec(changeset_id)
        if spec is None:
            self.store.get(changeset_id)  # ChangeSetNotFound when it does not exist at all
            raise LoopError(
                f"changeset {changeset_id} has no canary spec (controls, start, budget): it was not started "
                "as a judged canary"
            )
        return spec
