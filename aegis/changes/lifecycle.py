"""The changeset lifecycle: propose -> policy check -> simulation gate -> canary -> promote | roll back.

Every step is idempotent (running it again returns what it recorded) and every
external side effect is journalled (see :mod:`aegis.changes.store`): an intent
row before it, an outcome row after. :meth:`Lifecycle.resume` finds steps whose
outcome is unknown after a crash, asks the backend what happened (the config
version and params tell whether a PUT applied; a snapshot whose id was never
recorded is simply retaken, an orphan costs only storage), and continues or
rolls back. Every policy Decision and every transition goes to the audit
ledger through an outbox, so a crash between the store and the ledger is
repaired on resume, never duplicated.

Only what the game backend contract can execute is executable: parameter
changes (``PUT /config``). Structural operations (retire a quest, migrate saves,
...) have no endpoint in the contract. A changeset carrying one is still
proposed and judged, so the policy's decision on it (often a deny: an actor
without the tool, active inventory deleted, ...) is recorded in the ledger;
only a verdict that would let it proceed is then refused for executability,
with a reason that says so, and the changeset ends ``rejected`` (never a silent
no-op).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aegis.changes.artifacts import build_diff, build_manifest, write_artifacts
from aegis.changes.gate import (
    DEFAULT_HOURS,
    DEFAULT_WORSEN_TOLERANCE,
    SimulationRunner,
    SimulationUnavailable,
    bands_from_policy_data,
    judge,
)
from aegis.changes.integrity import (
    DEFAULT_DRIFT_FACTOR,
    DEFAULT_DRIFT_PER_MINUTE,
    DEFAULT_FLOOR_FRACTION,
    IntegrityReport,
    Observation,
    check_exact,
    check_live,
)
from aegis.changes.playbook import DEFAULT_PAGER
from aegis.changes.slo import SloStateUnknown, WarehouseSloAlerts
from aegis.changes.states import IllegalTransition, check_transition
from aegis.changes.store import ChangeSetRecord, ChangeSetStore
from aegis.config import WORLD_PORT, AegisPaths, paths
from aegis.domain import (
    AutonomousChangeSet,
    CanaryResult,
    Decision,
    ExecutionPolicy,
    Integrity,
    OperationKind,
    PromotionState,
    ShardConfig,
    ShardInfo,
    ShardRole,
    SnapshotInfo,
    Verdict,
    WorldParams,
    utcnow,
)
from aegis.telemetry import KPI_BUCKET_MINUTES

if TYPE_CHECKING:  # aegis.policy loads the engine; the lifecycle imports it only when it decides
    from aegis.policy.context import PolicyContext

log = logging.getLogger(__name__)

S = PromotionState
LEDGER_ACTOR = "aegis-lifecycle"
EXECUTABLE_OPERATIONS = frozenset({OperationKind.SET_PARAMS})
DEFAULT_ALLOWED_TOOLS = ("set_params",)


class ChangeSetError(ValueError):
    """A changeset that cannot be carried out as given (the message says what to fix)."""


class UnknownTarget(ChangeSetError):
    """The target shard does not exist at the backend."""


class StaleChangeSet(ChangeSetError):
    """The live config no longer matches the changeset's ``before`` values."""


class Backend(Protocol):
    """The part of :class:`aegis.world.client.GameBackendClient` the lifecycle uses."""

    base_url: str

    def health(self) -> Any: ...
    def shards(self) -> list[ShardInfo]: ...
    def shard(self, shard_id: str) -> ShardInfo: ...
    def set_role(self, shard_id: str, role: ShardRole | str) -> ShardInfo: ...
    def get_config(self, shard_id: str) -> ShardConfig: ...
    def put_config(
        self, shard_id: str, params: WorldParams, *, if_match: int, idempotency_key: str | None = None
    ) -> ShardConfig: ...
    def snapshot(self, shard_id: str) -> SnapshotInfo: ...
    def restore(self, shard_id: str, snapshot_id: str) -> Any: ...
    def integrity(self, shard_id: str) -> Integrity: ...


class PolicyLike(Protocol):
    data: dict[str, Any]

    def decide(self, changeset: AutonomousChangeSet, context: Any) -> Decision: ...


class LedgerLike(Protocol):
    def record_decision(self, decision: Decision, changeset: AutonomousChangeSet, actor: str) -> Any: ...
    def record_transition(
        self,
        changeset_id: str,
        from_state: Any,
        to_state: Any,
        actor: str,
        reason: str = "",
        detail: Any = None,
    ) -> Any: ...
    def records(self, subject: str | None = None) -> list[Any]: ...
    def append(self, kind: str, subject: str, payload: dict[str, Any], actor: str) -> Any: ...


@dataclass
class LifecycleConfig:
    """Knobs of the lifecycle; policy thresholds are NOT here (they live in policies/data.json)."""

    simulation_hours: float = DEFAULT_HOURS
    simulation_seed: int | None = None
    worsen_tolerance: float = DEFAULT_WORSEN_TOLERANCE
    floor_fraction: float = DEFAULT_FLOOR_FRACTION
    drift_factor: float = DEFAULT_DRIFT_FACTOR
    drift_per_minute: float = DEFAULT_DRIFT_PER_MINUTE
    pager: str = DEFAULT_PAGER
    actor_policies: dict[str, ExecutionPolicy] = field(default_factory=dict)
    # Alerts firing on a target (``target -> list[Alert]``; raise SloStateUnknown when unknown).
    # None means nobody is asked and the trace says so; the CLI and the Dagster resource pass
    # ``warehouse_slo_alerts()``, which reads fct_slo_burn from the warehouse.
    firing_alerts: Callable[[str], list[Any]] | None = None
    # KPI predictions for the policy (e.g. the world model's); none means the policy
    # sends every change touching economy/experience params to the simulation gate.
    predict: Callable[[AutonomousChangeSet], dict[str, float]] | None = None
    # Facts a changeset file states that the world cannot measure (predictions, budget,
    # alerts, players share, recent changes): merged into the measured context with
    # PolicyContext.merged_with, which never relaxes a measured fact. It applies to every
    # changeset this lifecycle decides, so ``aegis changeset run FILE`` builds one per file.
    given_context: PolicyContext | None = None

    def actor_policy(self, actor: str) -> ExecutionPolicy:
        """The actor's ExecutionPolicy; unknown actors get parameter changes only (least privilege)."""
        if actor in self.actor_policies:
            return self.actor_policies[actor]
        return ExecutionPolicy(actor=actor, allowed_tools=list(DEFAULT_ALLOWED_TOOLS), data_scope=["*"])


def unexecutable_operations(changeset: AutonomousChangeSet) -> list[str]:
    """The operation kinds of ``changeset`` the game backend contract cannot execute (sorted)."""
    return sorted({op.kind.value for op in changeset.operations} - {k.value for k in EXECUTABLE_OPERATIONS})


def warehouse_slo_alerts(aegis_paths: AegisPaths | None = None) -> WarehouseSloAlerts:
    """The default firing-alerts provider: SLO burn pages from ``fct_slo_burn`` in the local warehouse."""
    return WarehouseSloAlerts((aegis_paths or paths()).warehouse)


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (recursively).

    The ledger refuses non-finite numbers (they have no JSON form), and a judge
    metric without data has a NaN effect and an infinite interval; an event
    carrying one would block the outbox for every later record.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def bucket_ceil(t: datetime) -> datetime:
    """The start of the first KPI bucket that begins at or after ``t`` (buckets: KPI_BUCKET_MINUTES)."""
    step = KPI_BUCKET_MINUTES * 60
    ts = t.timestamp()
    return datetime.fromtimestamp(-(-ts // step) * step, tz=t.tzinfo or UTC)


def _minutes(t: datetime) -> float:
    return t.timestamp() / 60.0


def _config_dump(cfg: ShardConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


class Lifecycle:
    """Drives changesets through their states against one game backend."""

    def __init__(
        self,
        backend: Backend,
        store: ChangeSetStore | None = None,
        policy: PolicyLike | None = None,
        ledger: LedgerLike | None = None,
        simulator: SimulationRunner | None = None,
        config: LifecycleConfig | None = None,
        aegis_paths: AegisPaths | None = None,
    ) -> None:
        self.paths = aegis_paths or paths()
        self.backend = backend
        self.store = store or ChangeSetStore()
        if policy is None:
            from aegis.policy.engine import PolicyEngine

            policy = PolicyEngine()
        self.policy = policy
        if ledger is None:
            from aegis.ledger.ledger import Ledger

            ledger = Ledger()
        self.ledger = ledger
        self.simulator = simulator
        self.config = config or LifecycleConfig()

    # ================================================================== public

    def get(self, changeset_id: str) -> ChangeSetRecord:
        return self.store.get(changeset_id)

    def propose(self, changeset: AutonomousChangeSet) -> ChangeSetRecord:
        """Validate against the backend and store as ``proposed`` (re-proposing is a no-op).

        The target must exist at the backend and a diff must give valid world params.
        Operations the backend cannot execute do not stop a proposal: the policy
        judges the changeset first (:meth:`check`), so its decision is on record,
        and a verdict that would let it proceed is refused for executability there.
        """
        if not changeset.diff and not changeset.operations:
            raise ChangeSetError(
                f"changeset {changeset.id}: the diff is empty and there are no operations; nothing to change"
            )
        info = self._shard(changeset.target)
        if changeset.diff:
            cfg = self.backend.get_config(info.id)
            try:
                cfg.params.apply(changeset.diff)
            except ValueError as exc:
                raise ChangeSetError(
                    f"changeset {changeset.id}: the diff does not give valid world params: {exc}"
                ) from exc
        record, _created = self.store.add(changeset)
        return record

    def check(self, changeset_id: str) -> Decision:
        """The policy decision (recorded once; later calls return it)."""
        rec = self.store.get(changeset_id)
        slo_note = ""
        if rec.decision is not None:
            decision = rec.decision
        else:
            if rec.state != S.PROPOSED:
                raise IllegalTransition(
                    changeset_id, rec.state, S.POLICY_CHECKED, "it was never policy-checked"
                )
            context, slo_note = self._context(rec.changeset)
            decision = self.policy.decide(rec.changeset, context)
            self.store.save_decision(changeset_id, decision)  # one transaction: no crash window
        # Idempotent: repairs a store written by a version that saved the decision and queued
        # it for the ledger in two transactions (a kill between them lost it for the ledger).
        self.store.add_decision(decision)
        self._flush_ledger()
        if self.store.get(changeset_id).state == S.PROPOSED:
            reason = f"policy verdict {decision.verdict.value}"
            if slo_note:
                reason += f"; {slo_note}"
            self._transition(changeset_id, S.PROPOSED, S.POLICY_CHECKED, reason)
        if decision.verdict == Verdict.DENY and self.store.get(changeset_id).state == S.POLICY_CHECKED:
            self._transition(
                changeset_id,
                S.POLICY_CHECKED,
                S.REJECTED,
                f"denied by {decision.rule}: {decision.explanation}",
            )
        self._refuse_unexecutable(changeset_id)
        return decision

    def simulate(self, changeset_id: str) -> dict[str, Any]:
        """Run the simulation gate; ``simulated`` when it passes, ``rejected`` when it fails."""
        rec = self.store.get(changeset_id)
        if rec.simulation is not None and rec.state != S.POLICY_CHECKED:
            return rec.simulation
        refused = self._refuse_unexecutable(changeset_id)
        if refused:
            raise ChangeSetError(f"changeset {changeset_id}: {refused}")
        check_transition(changeset_id, rec.state, S.SIMULATED, rec.decision.verdict if rec.decision else None)
        if self.simulator is None:
            raise SimulationUnavailable(
                "no simulation runner configured (in-process state loader or HTTP endpoint)"
            )
        cs = rec.changeset
        outcome = self._step(
            changeset_id,
            "sim_snapshot",
            intent={"shard_id": cs.target},
            action=lambda _i: {"snapshot": self.backend.snapshot(cs.target).model_dump(mode="json")},
        )
        snap = SnapshotInfo.model_validate(outcome["snapshot"])
        cfg = self.backend.get_config(cs.target)
        params_after = self._params_after(cs, cfg)
        report = self.simulator.simulate(
            cs.target,
            snap.snapshot_id,
            params_after,
            self.config.simulation_hours,
            self.config.simulation_seed,
        )
        bands = bands_from_policy_data(self.policy.data)
        result = judge(report, bands, self.config.worsen_tolerance)
        doc = result.as_dict()
        self.store.update_fields(changeset_id, simulation=doc)
        if result.passed:
            self._transition(changeset_id, S.POLICY_CHECKED, S.SIMULATED, "simulation gate passed")
        else:
            self._transition(
                changeset_id,
                S.POLICY_CHECKED,
                S.REJECTED,
                "simulation gate failed: " + "; ".join(result.violations),
            )
        return doc

    def start_canary(self, changeset_id: str) -> ChangeSetRecord:
        """Apply the change to its target: snapshot, guarded PUT, integrity check, artifacts.

        Ends in ``canary`` when the integrity check passes, ``rolled_back`` (restored to
        the snapshot) when it fails, ``rejected`` when the config moved under us.
        """
        rec = self.store.get(changeset_id)
        if rec.state in (S.CANARY, S.PROMOTED, S.ROLLED_BACK):  # the canary already started
            return self._finish_pending_rollback(rec)
        if self._refuse_unexecutable(changeset_id):
            return self.store.get(changeset_id)
        src = rec.state
        check_transition(changeset_id, src, S.CANARY, rec.decision.verdict if rec.decision else None)
        cs = rec.changeset
        key = f"{changeset_id}:apply"
        try:
            # 1. Baseline read, canary role, pre-change snapshot.
            snap_out = self._step(
                changeset_id, "apply_snapshot", intent={"shard_id": cs.target}, action=self._take_snapshot(cs)
            )
            snapshot = SnapshotInfo.model_validate(snap_out["snapshot"])
            config_before = ShardConfig.model_validate(snap_out["config_before"])
            params_after = self._params_after(cs, config_before)
            self.store.update_fields(
                changeset_id,
                snapshot=snapshot.model_dump(mode="json"),
                config_before=_config_dump(config_before),
            )
            self._write_artifacts(changeset_id, status="applying", validation={"result": "pending"})
            # 2. The guarded, idempotent PUT.
            apply_out = self._step(
                changeset_id,
                "apply",
                intent={
                    "if_match": config_before.version,
                    "idempotency_key": key,
                    "params_before": config_before.params.model_dump(mode="json"),
                    "params_after": params_after.model_dump(mode="json"),
                },
                action=lambda i: self._put(cs.target, params_after, i["if_match"], key),
                resolve=lambda i: self._resolve_apply(cs.target, i),
            )
        except StaleChangeSet as exc:
            self._transition(changeset_id, src, S.REJECTED, str(exc))
            self._restore_role(cs.target)
            return self.store.get(changeset_id)
        if apply_out.get("failed"):
            self._transition(changeset_id, src, S.REJECTED, apply_out["failed"])
            self._restore_role(cs.target)
            return self.store.get(changeset_id)
        config_after = ShardConfig.model_validate(apply_out["config_after"])
        self.store.update_fields(changeset_id, config_after=_config_dump(config_after))

        # 3. Progression integrity.
        verify = self._step(
            changeset_id,
            "verify_apply",
            intent={"snapshot_id": snapshot.snapshot_id},
            action=lambda _i: self._verify_apply(cs, snap_out).as_dict(),
        )
        validation = {
            "result": "passed" if verify["ok"] else "failed",
            "snapshot_integrity": snapshot.integrity.model_dump(mode="json"),
            "apply": verify,
        }
        self._write_artifacts(changeset_id, status="applied", validation=validation)
        if not verify["ok"]:
            return self.roll_back(
                changeset_id,
                "integrity check failed after apply: " + "; ".join(verify["violations"]),
                mode="snapshot",
            )
        self._transition(changeset_id, src, S.CANARY, f"applied as config version {config_after.version}")
        self._write_artifacts(changeset_id, status="canary", validation=validation)
        return self.store.get(changeset_id)

    def promote(self, changeset_id: str, canary_result: CanaryResult | None = None) -> ChangeSetRecord:
        """Promote a canary whose config is still in force (idempotent).

        Rolling the params out to further shards is a new changeset per shard, each
        with its own snapshot and rollback artifacts; promotion records the verdict.
        """
        rec = self.store.get(changeset_id)
        if rec.state == S.PROMOTED:
            return rec
        check_transition(changeset_id, rec.state, S.PROMOTED, rec.decision.verdict if rec.decision else None)
        expected = ShardConfig.model_validate(rec.config_after).params if rec.config_after else None
        live = self.backend.get_config(rec.changeset.target)
        if expected is None or live.params != expected:
            raise IllegalTransition(
                changeset_id, rec.state, S.PROMOTED, "the canary's config is no longer in force on the target"
            )
        fields: dict[str, Any] = {}
        if canary_result is not None:
            fields["changeset"] = rec.changeset.model_copy(update={"canary_result": canary_result})
        self._transition(changeset_id, S.CANARY, S.PROMOTED, "canary promoted", **fields)
        self._restore_role(rec.changeset.target)
        return self.store.get(changeset_id)

    def roll_back(
        self, changeset_id: str, reason: str = "manual rollback", mode: str = "snapshot"
    ) -> ChangeSetRecord:
        """Undo an applied change. ``snapshot``: restore the pre-change snapshot (player data
        equals the snapshot's exactly, progress since is discarded); ``config``: put the
        previous params back and keep player progress."""
        if mode not in ("snapshot", "config"):
            raise ChangeSetError(f"rollback mode {mode!r} is not one of: snapshot, config")
        rec = self.store.get(changeset_id)
        if rec.state == S.ROLLED_BACK:
            return rec
        check_transition(
            changeset_id, rec.state, S.ROLLED_BACK, rec.decision.verdict if rec.decision else None
        )
        applied = self.store.step(changeset_id, "apply")
        if applied is None or rec.snapshot is None:
            raise IllegalTransition(
                changeset_id, rec.state, S.ROLLED_BACK, "nothing was applied, nothing to roll back"
            )
        pending = self.store.step(changeset_id, "rollback")
        if pending is not None:
            mode = pending.intent["mode"]
            reason = pending.intent.get("reason", reason)
        cs = rec.changeset
        snapshot = SnapshotInfo.model_validate(rec.snapshot)
        config_before = ShardConfig.model_validate(rec.config_before)
        if mode == "snapshot":
            out = self._step(
                changeset_id,
                "rollback",
                intent={"mode": mode, "reason": reason, "snapshot_id": snapshot.snapshot_id},
                action=lambda _i: self._restore(cs.target, snapshot, config_before),
            )
        else:
            out = self._step(
                changeset_id,
                "rollback",
                intent={"mode": mode, "reason": reason, "idempotency_key": f"{changeset_id}:rollback-config"},
                action=lambda i: self._config_rollback(cs, config_before, i["idempotency_key"]),
            )
        verified = self.store.step(changeset_id, "verify_apply")
        validation = {
            "result": "rolled back" if out["ok"] else "ROLLBACK VERIFICATION FAILED",
            "snapshot_integrity": snapshot.integrity.model_dump(mode="json"),
            "apply": verified.outcome if verified is not None else None,
            "rollback": out,
        }
        self._write_artifacts(changeset_id, status="rolled_back", validation=validation)
        if not out["ok"]:
            raise ChangeSetError(
                f"changeset {changeset_id}: rollback ran but its verification failed: {'; '.join(out['violations'])}; "
                f"follow {self.paths.changesets / changeset_id / 'playbook.md'}"
            )
        self._transition(changeset_id, rec.state, S.ROLLED_BACK, f"{reason} (rollback mode {mode})")
        self._restore_role(cs.target)
        return self.store.get(changeset_id)

    def launch_canary(
        self,
        changeset: AutonomousChangeSet,
        controls: list[str],
        max_buckets: int,
        proposal: dict[str, Any] | None = None,
    ) -> ChangeSetRecord:
        """Propose, check, simulate when asked, and start the canary with its judging spec.

        The spec (fair controls, exposure budget, the proposal's hypothesis and
        predictions) is stored before anything is applied, so a crash leaves a
        canary that can still be judged; the start bucket is set once the change
        applied (the first KPI bucket wholly under it, from the backend's game
        time of the new config). Idempotent: a second call continues or returns.
        """
        self.propose(changeset)
        self.store.put_canary_spec(changeset.id, changeset.target, controls, max_buckets, proposal)
        rec = self.advance(changeset.id)
        if rec.state == S.CANARY:
            self._mark_canary_started(rec)
        return self.store.get(changeset.id)

    def _mark_canary_started(self, rec: ChangeSetRecord) -> None:
        spec = self.store.canary_spec(rec.id)
        if spec is None or rec.config_after is None:
            return
        if spec.start is None:
            applied_at = ShardConfig.model_validate(rec.config_after).updated_at
            self.store.update_canary_spec(rec.id, start=bucket_ceil(applied_at))
            spec = self.store.canary_spec(rec.id)
            assert spec is not None
        hypothesis = (spec.proposal or {}).get("hypothesis") or rec.changeset.rationale
        self.record_event(
            rec.id,
            "canary",
            f"canary-started:{rec.id}",
            f"Canary started: changeset {rec.id} changes {', '.join(sorted(rec.changeset.diff))} on shard "
            f"{spec.canary}, judged against {', '.join(spec.controls)} for at most {spec.max_buckets} "
            f"KPI buckets from {spec.start.isoformat() if spec.start else '?'}"
            + (f"; hypothesis: {hypothesis}" if hypothesis else ""),
            event="canary_started",
            canary=spec.canary,
            controls=spec.controls,
            start=spec.start.isoformat() if spec.start else None,
            max_buckets=spec.max_buckets,
        )

    def record_event(self, changeset_id: str, kind: str, key: str, summary: str, **payload: Any) -> bool:
        """Record a loop event (canary, verdict, wave, reflection) in the ledger exactly once.

        The event goes to the store's outbox first (unique ``key``), then to the
        ledger; a crash in between is repaired by the next flush, never duplicated.
        """
        created = self.store.add_event(changeset_id, kind, key, finite({"summary": summary, **payload}))
        self._flush_ledger()
        return created

    def run(self, changeset: AutonomousChangeSet) -> ChangeSetRecord:
        """Propose and drive up to canary start or rejection."""
        self.propose(changeset)
        return self.advance(changeset.id)

    def advance(self, changeset_id: str) -> ChangeSetRecord:
        """Continue one changeset from wherever it is, up to canary start (or an end state)."""
        rec = self.store.get(changeset_id)
        if rec.state == S.PROPOSED:
            self.check(changeset_id)
        # check refuses what cannot be executed; again here for a crash between its two transitions
        self._refuse_unexecutable(changeset_id)
        rec = self.store.get(changeset_id)
        if rec.state == S.POLICY_CHECKED and rec.decision is not None:
            started = self.store.step(changeset_id, "apply_snapshot") is not None
            if rec.decision.verdict == Verdict.SIMULATE and not started:
                self.simulate(changeset_id)
                rec = self.store.get(changeset_id)
        if rec.state in (S.POLICY_CHECKED, S.SIMULATED):
            return self.start_canary(changeset_id)
        return self._finish_pending_rollback(rec)

    def resume(self) -> list[ChangeSetRecord]:
        """After a crash: repair the ledger outbox and finish every changeset left mid-way."""
        self._flush_ledger()
        out = []
        for rec in self.store.changesets({S.PROPOSED, S.POLICY_CHECKED, S.SIMULATED, S.CANARY}):
            try:
                done = self.advance(rec.id)
                if done.state == S.CANARY:  # a launch killed between the apply and its start record
                    self._mark_canary_started(done)
                out.append(done)
            except (ChangeSetError, IllegalTransition, SimulationUnavailable) as exc:
                log.error("resume %s: %s", rec.id, exc)
                out.append(self.store.get(rec.id))
        return out

    def _refuse_unexecutable(self, changeset_id: str) -> str | None:
        """Reject a changeset the policy let through whose operations the backend cannot execute.

        Runs after the policy decision is recorded (a deny is rejected by the policy
        first and keeps its own reason), so the ledger holds what the policy said
        about the changeset; the refusal is the ``rejected`` transition's reason.
        Returns that reason when it rejected the changeset now, else None.
        """
        rec = self.store.get(changeset_id)
        unsupported = unexecutable_operations(rec.changeset)
        if not unsupported or rec.state not in (S.POLICY_CHECKED, S.SIMULATED):
            return None
        verdict = rec.decision.verdict.value if rec.decision else "none"
        reason = (
            f"not executable: the policy verdict is {verdict}, but operation(s) {unsupported} cannot be "
            "executed through the game backend contract (it exposes config PUTs only; executable: "
            f"{sorted(k.value for k in EXECUTABLE_OPERATIONS)}); the decision stays on record"
        )
        self._transition(changeset_id, rec.state, S.REJECTED, reason)
        return reason

    # ================================================================== steps

    def _step(
        self,
        changeset_id: str,
        name: str,
        intent: dict[str, Any],
        action: Callable[[dict[str, Any]], dict[str, Any]],
        resolve: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> dict[str, Any]:
        """Run a journalled side effect once: intent, effect, outcome.

        A step found at ``intent`` (outcome unknown) is resolved with ``resolve`` when
        given (``None`` = it did not happen), else performed again with its recorded
        intent (steps without a resolver are safe to repeat).
        """
        prev = self.store.step(changeset_id, name)
        if prev is not None and prev.status in ("done", "failed"):
            return prev.outcome or {}
        if prev is not None and prev.status == "intent":
            intent = prev.intent
            if resolve is not None:
                found = resolve(intent)
                if found is not None:
                    self.store.write_outcome(changeset_id, name, found, ok=not found.get("failed"))
                    return found
        self.store.write_intent(changeset_id, name, intent)
        outcome = action(intent)
        self.store.write_outcome(changeset_id, name, outcome, ok=not outcome.get("failed"))
        return outcome

    def _take_snapshot(self, cs: AutonomousChangeSet) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def action(_intent: dict[str, Any]) -> dict[str, Any]:
            # Canary shards are excluded from exploration: nothing else tunes the target meanwhile.
            self.backend.set_role(cs.target, ShardRole.CANARY)
            h0 = self.backend.health()
            i0 = self.backend.integrity(cs.target)
            cfg = self.backend.get_config(cs.target)
            snap = self.backend.snapshot(cs.target)
            if snap.config_version != cfg.version:  # the config moved between the two reads
                cfg = self.backend.get_config(cs.target)
                if snap.config_version != cfg.version:
                    raise StaleChangeSet(
                        f"config of {cs.target} keeps moving (snapshot at v{snap.config_version}, now v{cfg.version})"
                    )
            return {
                "snapshot": snap.model_dump(mode="json"),
                "config_before": _config_dump(cfg),
                "baseline": {"integrity": i0.model_dump(mode="json"), "game_time": h0.game_time.isoformat()},
            }

        return action

    def _params_after(self, cs: AutonomousChangeSet, cfg: ShardConfig) -> WorldParams:
        """The full param set to PUT; refuses when the live ``before`` values differ from the proposal's."""
        stale = []
        for name, change in cs.diff.items():
            live = getattr(cfg.params, name)
            if live != change.before:
                stale.append(f"{name} is {live}, the changeset expected {change.before}")
        if stale:
            raise StaleChangeSet(
                f"the config of {cs.target} (version {cfg.version}) changed since the proposal: {'; '.join(stale)}"
            )
        return cfg.params.apply(cs.diff)

    def _put(self, shard_id: str, params: WorldParams, if_match: int, key: str) -> dict[str, Any]:
        from aegis.world.client import IdempotencyConflict, StaleConfigVersion

        try:
            cfg = self.backend.put_config(shard_id, params, if_match=if_match, idempotency_key=key)
        except StaleConfigVersion as exc:
            live = self.backend.get_config(shard_id)
            return {
                "failed": f"config of {shard_id} moved under us (expected version {if_match}, now {live.version}); "
                "not reapplied blindly: propose again against the new config",
                "live_version": live.version,
                "detail": exc.message,
            }
        except IdempotencyConflict as exc:
            return {"failed": f"idempotency key {key} was used with another request: {exc.message}"}
        return {"config_after": _config_dump(cfg)}

    def _resolve_apply(self, shard_id: str, intent: dict[str, Any]) -> dict[str, Any] | None:
        """Outcome unknown: did the PUT apply? The backend's config tells."""
        live = self.backend.get_config(shard_id)
        after = WorldParams.model_validate(intent["params_after"])
        before = WorldParams.model_validate(intent["params_before"])
        if live.version > intent["if_match"] and live.params == after:
            return {
                "config_after": _config_dump(live),
                "resolved": "applied before the crash (read from the backend)",
            }
        if live.version == intent["if_match"] and live.params == before:
            return None  # never applied: the same idempotent PUT is safe to send now
        return {
            "failed": f"config of {shard_id} diverged while the apply outcome was unknown "
            f"(expected v{intent['if_match']} or our params, found v{live.version} with other params)",
            "live_version": live.version,
        }

    def _verify_apply(self, cs: AutonomousChangeSet, snap_out: dict[str, Any]) -> IntegrityReport:
        snapshot = SnapshotInfo.model_validate(snap_out["snapshot"])
        base = snap_out["baseline"]
        h1 = self.backend.health()
        after = self.backend.integrity(cs.target)
        h2 = self.backend.health()
        still = h1.game_time == h2.game_time == snapshot.game_time
        before_obs = Observation(snapshot.integrity, _minutes(snapshot.game_time), tick=0)
        after_obs = Observation(after, _minutes(h2.game_time), tick=0 if still else 1)
        baseline = Observation(
            Integrity.model_validate(base["integrity"]), _minutes(datetime.fromisoformat(base["game_time"]))
        )
        return check_live(
            cs,
            baseline,
            before_obs,
            after_obs,
            floor_fraction=self.config.floor_fraction,
            drift_factor=self.config.drift_factor,
            drift_per_minute=self.config.drift_per_minute,
        )

    def _restore(self, shard_id: str, snapshot: SnapshotInfo, config_before: ShardConfig) -> dict[str, Any]:
        result = self.backend.restore(shard_id, snapshot.snapshot_id)
        report = check_exact(snapshot.integrity, result.integrity, "rollback restore")
        live = self.backend.get_config(shard_id)
        if live.params != config_before.params:
            report.violations.append(
                f"after the restore the config of {shard_id} is not the pre-change config"
            )
            report.ok = False
        report.checks.append("config: params equal the pre-change params")
        return {**report.as_dict(), "restored_config_version": live.version}

    def _config_rollback(
        self, cs: AutonomousChangeSet, config_before: ShardConfig, key: str
    ) -> dict[str, Any]:
        live = self.backend.get_config(cs.target)
        integrity_before = self.backend.integrity(cs.target)
        h0 = self.backend.health()
        if live.params != config_before.params:
            cfg = self.backend.put_config(
                cs.target, config_before.params, if_match=live.version, idempotency_key=key
            )
        else:
            cfg = live
        h1 = self.backend.health()
        after = self.backend.integrity(cs.target)
        report = check_live(
            cs.model_copy(update={"operations": []}),
            None,
            Observation(integrity_before, _minutes(h0.game_time), tick=0),
            Observation(after, _minutes(h1.game_time), tick=1),
            floor_fraction=self.config.floor_fraction,
            drift_factor=self.config.drift_factor,
            drift_per_minute=self.config.drift_per_minute,
        )
        return {**report.as_dict(), "restored_config_version": cfg.version}

    def _finish_pending_rollback(self, rec: ChangeSetRecord) -> ChangeSetRecord:
        """A rollback whose intent was journalled but whose transition never happened."""
        if rec.state in (S.CANARY, S.POLICY_CHECKED, S.SIMULATED):
            pending = self.store.step(rec.id, "rollback")
            verify = self.store.step(rec.id, "verify_apply")
            if pending is not None:
                return self.roll_back(
                    rec.id, pending.intent.get("reason", "resumed rollback"), pending.intent["mode"]
                )
            if verify is not None and verify.status == "done" and not (verify.outcome or {}).get("ok", True):
                return self.roll_back(rec.id, "integrity check failed after apply (resumed)", "snapshot")
        return rec

    def _restore_role(self, shard_id: str) -> None:
        try:
            self.backend.set_role(shard_id, ShardRole.CONTROL)
        except Exception as exc:  # the role is bookkeeping for exploration; never fail a rollback for it
            log.warning("could not set %s back to control: %s", shard_id, exc)

    # ================================================================== helpers

    def _shard(self, shard_id: str) -> ShardInfo:
        from aegis.world.client import NotFound

        try:
            return self.backend.shard(shard_id)
        except NotFound as exc:
            known = exc.details.get("known") or exc.details.get("known_shards")
            if not known:
                known = [s.id for s in self.backend.shards()]
            raise UnknownTarget(
                f"target shard {shard_id!r} not found at the backend; known shards: {known}"
            ) from exc

    def _context(self, cs: AutonomousChangeSet) -> tuple[PolicyContext, str]:
        """The PolicyContext for ``cs``, and a note for the trace when the SLO state is not known.

        What the lifecycle measures (the shard, its players share, the alerts, the
        actor's recent changes, the known shards) is completed by the configured
        ``given_context`` without being relaxed. The actor's ExecutionPolicy stays
        the configured one (``actor_policies``, ``--actor-policy``): a changeset
        file cannot grant its own actor tools or scope.
        """
        from aegis.policy.context import PolicyContext, ShardContext

        info = self._shard(cs.target)
        shards = self.backend.shards()
        total = sum(s.players_total for s in shards)
        since = utcnow() - timedelta(hours=1)
        recent = len(
            [
                t
                for t in self.store.transitions()
                if t.dst == S.CANARY and t.at >= since and self._actor_of(t.changeset_id) == cs.actor
            ]
        )
        alerts, slo_note = self._firing_alerts(cs.target)
        context = PolicyContext(
            actor=self.config.actor_policy(cs.actor),
            shard=ShardContext.from_shard_info(info),
            canary_players_share=min(1.0, info.players_total / total) if total else 1.0,
            firing_alerts=alerts,
            predicted=self.config.predict(cs) if self.config.predict else {},
            changes_in_last_hour=recent,
            known_shards=[s.id for s in shards],
        )
        given = self.config.given_context
        if given is not None:
            context = context.merged_with(given).model_copy(update={"actor": context.actor})
        return context, slo_note

    def _firing_alerts(self, target: str) -> tuple[list[Any], str]:
        """Alerts firing on ``target``; when they cannot be known: none, a warning and a note for the trace.

        An unknown SLO state does not block the change (a warehouse that was never
        built would otherwise stop everything); it is logged and written into the
        policy-checked transition's reason, so the ledger shows the policy decided
        without it.
        """
        provider = self.config.firing_alerts
        if provider is None:
            return [], "SLO state unknown: no firing-alerts provider configured"
        try:
            return list(provider(target)), ""
        except SloStateUnknown as exc:
            log.warning("deciding on %s without SLO alerts: SLO state unknown: %s", target, exc)
            return [], f"SLO state unknown: {exc}"

    def _actor_of(self, changeset_id: str) -> str:
        return self.store.get(changeset_id).changeset.actor

    def _transition(
        self, changeset_id: str, src: PromotionState, dst: PromotionState, reason: str, **fields: Any
    ) -> None:
        self.store.transition(changeset_id, src, dst, reason, **fields)
        self._flush_ledger()

    def _flush_ledger(self) -> None:
        """Append every decision and transition the ledger does not have yet (the outbox)."""
        pending_t = self.store.transitions(unrecorded=True)
        pending_d = self.store.unrecorded_decisions()
        pending_e = self.store.events(unrecorded=True)
        if not pending_t and not pending_d and not pending_e:
            return
        subjects = (
            {t.changeset_id for t in pending_t}
            | {d.changeset_id for d in pending_d}
            | {e.changeset_id for e in pending_e}
        )
        existing: dict[tuple[str, str], int] = {}
        for subject in subjects:
            for r in self.ledger.records(subject):
                if r.kind == "transition" and "transition_id" in (r.payload.get("detail") or {}):
                    existing[("t", str(r.payload["detail"]["transition_id"]))] = r.seq
                elif r.kind == "decision":
                    existing[("d", str(r.payload.get("decision", {}).get("id")))] = r.seq
                elif "event_key" in r.payload:
                    existing[("e", str(r.payload["event_key"]))] = r.seq
        for e in pending_e:
            seq = existing.get(("e", e.key))
            if seq is None:
                seq = self.ledger.append(
                    e.kind, e.changeset_id, {**e.payload, "event_key": e.key}, LEDGER_ACTOR
                ).seq
            self.store.mark_event_recorded(e.id, seq)
        for d in pending_d:
            seq = existing.get(("d", d.id))
            if seq is None:
                seq = self.ledger.record_decision(
                    d, self.store.get(d.changeset_id).changeset, LEDGER_ACTOR
                ).seq
            self.store.mark_decision_recorded(d.id, seq)
        for t in pending_t:
            seq = existing.get(("t", str(t.id)))
            if seq is None:
                seq = self.ledger.record_transition(
                    t.changeset_id, t.src, t.dst, LEDGER_ACTOR, t.reason, {"transition_id": t.id}
                ).seq
            self.store.mark_transition_recorded(t.id, seq)

    def _write_artifacts(self, changeset_id: str, status: str, validation: dict[str, Any]) -> None:
        rec = self.store.get(changeset_id)
        if rec.snapshot is None or rec.config_before is None:
            return
        cs = rec.changeset
        config_before = ShardConfig.model_validate(rec.config_before)
        params_after = config_before.params.apply(cs.diff)
        manifest = build_manifest(cs, rec.snapshot, rec.config_before, params_after, rec.config_after, status)
        diff = build_diff(cs, config_before.params, params_after)
        written = write_artifacts(
            self.paths.changesets,
            cs,
            manifest=manifest,
            diff=diff,
            validation={"changeset_id": changeset_id, **validation},
            backend_url=getattr(self.backend, "base_url", f"http://127.0.0.1:{WORLD_PORT}"),
            pager=self.config.pager,
        )
        for kind, (path, digest) in written.items():
            self.store.put_artifact(changeset_id, kind, Path(path), digest)
