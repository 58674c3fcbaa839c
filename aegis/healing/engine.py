"""The healing run: diagnose one incident, then walk its playbook.

For every step: build the action as an ``AutonomousChangeSet`` of kind
``healing`` and ask the policy engine (Rego) first; run it only on ``auto``;
re-read the SLIs until the step's checks hold for ``hold_reads`` consecutive
reads (resolved) or its timeout passes (next action, ``on_failure``). When the
chain ends in ``escalate``, the incident is escalated: an escalation record in
the ledger and an outgoing webhook. Every step is a signed ledger record of kind
``healing`` (payload with a plain-words ``summary``), and the run ends with a
:class:`~aegis.domain.ReflectionRecord` (ledger kind ``reflection``).

Loop guards inside a run: a step chain longer than twice the playbook is cut
(a cycle in the data), and the per-target action breaker
(``limits.max_actions_per_target_hour``) escalates instead of acting again.
The policy's own rate limit (``changes_in_last_hour`` against the healer's
ExecutionPolicy) is a second, independent guard.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from aegis.domain import (
    AutonomousChangeSet,
    ChangeKind,
    Decision,
    ExecutionPolicy,
    Operation,
    OperationKind,
    ParamChange,
    PromotionState,
    ReflectionRecord,
    ResourceLimits,
    Verdict,
    WorldParams,
    utcnow,
)
from aegis.healing import escalation
from aegis.healing.diagnosis import diagnose
from aegis.healing.models import (
    TERMINAL,
    ActionOutcome,
    Incident,
    IncidentAction,
    IncidentStatus,
    Playbook,
    PlaybookAction,
    PlaybookBook,
    Verification,
)
from aegis.healing.playbooks import load_playbooks
from aegis.healing.store import IncidentStore

log = logging.getLogger(__name__)

HEALER = "aegis-healer"
# Backend remediation endpoint action per operation kind.
REMEDIATION_ACTIONS: dict[OperationKind, str] = {
    OperationKind.FAILOVER: "failover",
    OperationKind.RESTART_SHARD: "restart",
    OperationKind.SHED_LOAD: "shed_load",
    OperationKind.FREEZE_TRADING: "freeze_trading",
    OperationKind.ISOLATE_TELEMETRY: "isolate_telemetry",
}
SECURITY_OPERATIONS = (OperationKind.ROTATE_CREDENTIAL, OperationKind.ISOLATE_CALLER)
SECURITY_REGION = "control-plane"
WITHDRAWN = ("revoked", "rotated", "grace")


class StepFailed(RuntimeError):
    """An action could not be applied (the call failed or its precondition is missing)."""


class Healer:
    """Runs healing for incidents in the store against one game backend."""

    def __init__(
        self,
        backend: Any,
        store: IncidentStore | None = None,
        book: PlaybookBook | None = None,
        policy: Any | None = None,
        ledger: Any | None = None,
        changes_store: Any | None = None,
        tokens: Any | None = None,
        escalation_url: str | None = None,
        lifecycle_factory: Callable[[], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.backend = backend
        self.store = store or IncidentStore()
        self.book = book or load_playbooks()
        if policy is None:
            from aegis.policy.engine import PolicyEngine

            policy = PolicyEngine()
        self.policy = policy
        if ledger is None:
            from aegis.ledger.ledger import Ledger

            ledger = Ledger()
        self.ledger = ledger
        self.changes_store = changes_store
        self._tokens = tokens
        self.escalation_url = escalation_url
        self.lifecycle_factory = lifecycle_factory
        self.sleep = sleep

    # ------------------------------------------------------------------ helpers

    @property
    def tokens(self) -> Any:
        if self._tokens is None:
            from aegis.security.tokens import TokenStore

            self._tokens = TokenStore()
        return self._tokens

    def _ledger(self, inc: Incident, step: str, summary: str, **payload: Any) -> None:
        try:
            self.ledger.append(
                kind="healing",
                subject=inc.id,
                payload={
                    "step": step,
                    "target": inc.target,
                    "problem": inc.kind,
                    "summary": summary,
                    **payload,
                },
                actor=HEALER,
            )
        except Exception:  # the ledger is the record; failing to write it must be loud, not fatal
            log.exception("could not write the healing ledger record %s of %s", step, inc.id)

    def _record(self, inc: Incident, action: IncidentAction) -> Incident:
        return self.store.add_action(inc.id, action)

    def _actor(self) -> ExecutionPolicy:
        tools = sorted({a.operation.value for p in self.book.playbooks for a in p.actions} | {"set_params"})
        return ExecutionPolicy(
            actor=HEALER,
            allowed_tools=tools,
            data_scope=["*"],
            limits=ResourceLimits(max_changes_per_hour=self.book.limits.max_actions_per_target_hour * 2),
        )

    # ------------------------------------------------------------------ run

    def heal(self, incident_id: str) -> Incident:
        """Diagnose and heal one incident; returns it as stored at the end (idempotent on terminal ones)."""
        inc = self.store.get(incident_id)
        if inc.status in TERMINAL:
            return inc
        playbook = self.book.get(inc.kind)
        if playbook is None:
            return self._escalate(inc, f"no playbook for problem {inc.kind!r}")
        self._ledger(
            inc,
            "opened",
            f"incident {inc.id} opened: {inc.kind} on {inc.target} ({inc.alert_count} alert(s): "
            f"{', '.join(inc.alerts) or 'none'})",
            alerts=inc.alerts,
        )
        diag = self._diagnose(inc)
        inc = self.store.update(inc.id, diagnosis=diag)
        self._ledger(inc, "diagnosis", diag.summary, diagnosis=diag.model_dump(mode="json"))

        step: str = playbook.actions[0].name
        budget = 2 * len(playbook.actions)
        resolved = False
        while step not in ("escalate", "resolve") and budget > 0:
            budget -= 1
            action = playbook.action(step)
            assert action is not None  # load_playbooks checked every name
            ok = self._run_action(inc.id, playbook, action)
            inc = self.store.get(inc.id)
            if inc.status in TERMINAL:
                return inc
            if ok is None:  # skipped: its condition did not hold; the chain goes on as on failure
                step = action.on_failure
            elif ok:
                resolved = True
                step = action.on_success
            else:
                resolved = False
                step = action.on_failure
        if step == "resolve" and resolved:
            return self._resolve(inc)
        reason = "every playbook action failed" if budget > 0 else "the playbook chain did not end (a cycle?)"
        return self._escalate(self.store.get(inc.id), reason)

    def _diagnose(self, inc: Incident) -> Any:
        if inc.kind == "security":
            from aegis.healing.security import diagnose_security

            return diagnose_security(inc, self.tokens)
        return diagnose(inc, self.backend, self.book.limits.suspect_window_s, self.changes_store)

    def _record_step(
        self,
        inc: Incident,
        action: PlaybookAction,
        outcome: ActionOutcome,
        detail: dict[str, Any],
        at: datetime | None = None,
    ) -> Incident:
        """Record one outcome of a playbook action on the incident (its name and operation)."""
        step = IncidentAction(
            name=action.name, outcome=outcome, operation=action.operation.value, detail=detail
        )
        return self._record(inc, step if at is None else step.model_copy(update={"at": at}))

    def _run_action(self, incident_id: str, playbook: Playbook, action: PlaybookAction) -> bool | None:
        """One step: condition, breaker, policy, apply, verify. True verified, False not, None skipped."""
        inc = self.store.get(incident_id)
        diag = inc.diagnosis
        if action.when == "suspect_changeset" and (diag is None or diag.suspect_changeset is None):
            self._record_step(inc, action, ActionOutcome.SKIPPED, {"why": "no suspect changeset"})
            return None
        recent = self.store.actions_since(inc.target, utcnow() - timedelta(hours=1))
        if recent >= self.book.limits.max_actions_per_target_hour:
            self._escalate(
                inc,
                f"action breaker open: {recent} remediations on {inc.target} in the last hour "
                f"(limit {self.book.limits.max_actions_per_target_hour})",
            )
            return False
        prepared = self._judge_action(inc, action, recent)
        if prepared is None:
            return False
        changeset, extra, decision = prepared
        try:
            self.ledger.record_decision(decision, changeset, HEALER)
        except Exception:
            log.exception("could not record the policy decision of %s", changeset.id)
        if decision.verdict != Verdict.AUTO:
            self._record_denial(inc, action, changeset, decision)
            return False
        applied = self._apply_action(inc, action, changeset, extra, decision)
        if applied is None:
            return False
        return self._verify_action(applied, action, extra)

    def _judge_action(
        self, inc: Incident, action: PlaybookAction, recent: int
    ) -> tuple[AutonomousChangeSet, dict[str, Any], Decision] | None:
        """The action as a changeset and the policy's decision on it; None (recorded) when either fails."""
        try:
            changeset, extra = self._changeset(inc, action)
            decision = self.policy.decide(changeset, self._context(inc, changeset, recent))
        except Exception as exc:  # no changeset or no decision (backend unreachable, ...): never act blind
            self._record_step(inc, action, ActionOutcome.FAILED, {"error": f"{type(exc).__name__}: {exc}"})
            self._ledger(
                inc,
                "action",
                f"{action.name} on {inc.target} could not be prepared or judged: {exc}",
                action=action.name,
            )
            return None
        return changeset, extra, decision

    def _record_denial(
        self, inc: Incident, action: PlaybookAction, changeset: AutonomousChangeSet, decision: Decision
    ) -> None:
        """The policy did not answer auto: the action is not run, on the incident and in the ledger."""
        self._record_step(
            inc,
            action,
            ActionOutcome.DENIED,
            {"verdict": decision.verdict.value, "explanation": decision.explanation},
        )
        self._ledger(
            inc,
            "action",
            f"{action.name} on {inc.target} not run: the policy answered {decision.verdict.value} "
            f"({decision.rule or 'no rule'})",
            action=action.name,
            decision_id=decision.id,
            changeset_id=changeset.id,
        )

    def _apply_action(
        self,
        inc: Incident,
        action: PlaybookAction,
        changeset: AutonomousChangeSet,
        extra: dict[str, Any],
        decision: Decision,
    ) -> Incident | None:
        """Apply an approved action and record it (contained from the first one); None (recorded) on failure."""
        try:
            result = self._apply(inc, action, changeset, extra)
        except Exception as exc:
            self._record_step(
                inc,
                action,
                ActionOutcome.FAILED,
                {"error": f"{type(exc).__name__}: {exc}", "changeset_id": changeset.id},
            )
            self._ledger(
                inc,
                "action",
                f"{action.name} on {inc.target} failed: {exc}",
                action=action.name,
                changeset_id=changeset.id,
            )
            return None
        applied_at = utcnow()
        inc = self._record_step(
            inc,
            action,
            ActionOutcome.APPLIED,
            {"changeset_id": changeset.id, "decision_id": decision.id, "result": result},
            at=applied_at,
        )
        if inc.contained_at is None:
            inc = self.store.update(inc.id, contained_at=applied_at, status=IncidentStatus.CONTAINED)
        self._ledger(
            inc,
            "action",
            f"{action.name} applied on {inc.target} (policy {decision.verdict.value}, changeset {changeset.id})",
            action=action.name,
            changeset_id=changeset.id,
            decision_id=decision.id,
            result=result,
        )
        return inc

    def _verify_action(self, inc: Incident, action: PlaybookAction, extra: dict[str, Any]) -> bool:
        """Read the SLIs after an applied action until they hold or time out; record and ledger the outcome."""
        ok, last, reads = self._verify(inc, action.verify, extra)
        self._record(
            inc,
            IncidentAction(
                name=f"verify:{action.name}",
                outcome=ActionOutcome.VERIFIED if ok else ActionOutcome.UNVERIFIED,
                detail={"checks": [c.describe() for c in action.verify.checks], "last": last, "reads": reads},
            ),
        )
        self._ledger(
            inc,
            "verification",
            f"after {action.name}, {inc.target}: "
            + ("SLIs back inside their objective" if ok else "SLIs still outside their objective")
            + f" ({'; '.join(c.describe() for c in action.verify.checks)}; {reads} reads)",
            action=action.name,
            verified=ok,
            signals=last,
        )
        return ok

    # ------------------------------------------------------------------ the action as a changeset

    def _changeset(self, inc: Incident, action: PlaybookAction) -> tuple[AutonomousChangeSet, dict[str, Any]]:
        args = dict(action.args)
        extra: dict[str, Any] = {}
        diff: dict[str, ParamChange] = {}
        ops: list[Operation] = []
        if action.operation == OperationKind.ROLLBACK_CHANGESET:
            assert inc.diagnosis is not None and inc.diagnosis.suspect_changeset is not None
            args["changeset_id"] = inc.diagnosis.suspect_changeset
        if action.operation in SECURITY_OPERATIONS:
            ev = inc.diagnosis.evidence if inc.diagnosis else {}
            if action.operation == OperationKind.ROTATE_CREDENTIAL:
                if not ev.get("token_id"):
                    raise StepFailed("no credential to rotate: the refusals carry no token id")
                args["token_id"] = ev["token_id"]
            else:
                if not ev.get("isolate"):
                    raise StepFailed("no caller to isolate: the address is the platform's own (loopback)")
                args["caller"] = ev["isolate"]
            extra.update(ev)
        if action.operation == OperationKind.SET_PARAMS:
            cfg = self.backend.get_config(inc.target)
            current = cfg.params.model_dump()
            after = dict(current)
            for name, rel in action.diff.items():
                before = current[name]
                after[name] = (
                    [round(v * (1 + rel), 6) for v in before]
                    if isinstance(before, list)
                    else round(before * (1 + rel), 6)
                )
                diff[name] = ParamChange(before=before, after=after[name])
            extra["params"] = WorldParams.model_validate(after)
            extra["if_match"] = cfg.version
        else:
            ops.append(Operation(kind=action.operation, args=args))
        cs = AutonomousChangeSet(
            actor=HEALER,
            kind=ChangeKind.HEALING,
            target=inc.target,
            diff=diff,
            operations=ops,
            rationale=f"incident {inc.id} ({inc.kind}): playbook action {action.name}",
        )
        extra["args"] = args
        return cs, extra

    def _context(self, inc: Incident, cs: AutonomousChangeSet, recent: int) -> Any:
        from aegis.policy.context import PolicyContext, ShardContext

        if inc.kind == "security":
            shard = ShardContext(shard_id=inc.target, region=SECURITY_REGION)
        else:
            shard = ShardContext.from_shard_info(self.backend.shard(inc.target))
        return PolicyContext(actor=self._actor(), shard=shard, changes_in_last_hour=recent)

    def _apply(
        self, inc: Incident, action: PlaybookAction, cs: AutonomousChangeSet, extra: dict[str, Any]
    ) -> Any:
        op = action.operation
        args = extra["args"]
        if op in REMEDIATION_ACTIONS:
            return self.backend.remediate(
                inc.target,
                REMEDIATION_ACTIONS[op],
                reason=args.get("reason", ""),
                share=args.get("share"),
                incident_id=inc.id,
            )
        if op == OperationKind.ROLLBACK_CHANGESET:
            lifecycle = self._lifecycle()
            rec = lifecycle.roll_back(
                args["changeset_id"],
                reason=f"incident {inc.id}: {args.get('reason', '')}",
                mode=args.get("mode", "config"),
            )
            return {"changeset_id": rec.id, "state": rec.state.value}
        if op == OperationKind.SET_PARAMS:
            cfg = self.backend.put_config(inc.target, extra["params"], extra["if_match"])
            return {
                "config_version": cfg.version,
                "diff": {k: v.model_dump(mode="json") for k, v in cs.diff.items()},
            }
        if op == OperationKind.ROTATE_CREDENTIAL:
            token_id = args["token_id"]
            info = self.tokens.get(token_id)
            if info is not None and info.state() in WITHDRAWN:
                return {"token_id": token_id, "already": info.state()}
            # No grace: a credential behind a security incident must stop working now.
            new = self.tokens.rotate(token_id, actor=HEALER, grace=timedelta(0))
            _renew_service_tokens()
            return {"token_id": token_id, "replaced_by": new.id}
        if op == OperationKind.ISOLATE_CALLER:
            self.tokens.isolate(
                args["caller"], reason=f"incident {inc.id}: {args.get('reason', '')}", actor=HEALER
            )
            return {"caller": args["caller"]}
        raise StepFailed(f"operation {op.value} has no executor")

    def _lifecycle(self) -> Any:
        if self.lifecycle_factory is not None:
            return self.lifecycle_factory()
        from aegis.changes.lifecycle import Lifecycle
        from aegis.world.client import GameBackendClient

        return Lifecycle(GameBackendClient(self.backend.base_url), store=self.changes_store)

    # ------------------------------------------------------------------ verification

    def _read_signals(self, inc: Incident, extra: dict[str, Any]) -> dict[str, Any]:
        if inc.kind == "security":
            out: dict[str, Any] = {}
            token_id = extra.get("token_id")
            if token_id:
                info = self.tokens.get(token_id)
                out["credential_rotated"] = info is not None and info.state() in WITHDRAWN
            caller = extra.get("isolate")
            out["caller_isolated"] = bool(caller) and bool(self.tokens.is_isolated(caller))
            return out
        return dict(self.backend.signals(inc.target))

    def _verify(
        self, inc: Incident, spec: Verification, extra: dict[str, Any]
    ) -> tuple[bool, dict[str, Any] | None, int]:
        """Re-read the SLIs until every check holds ``hold_reads`` times in a row, or the timeout."""
        deadline = time.monotonic() + spec.timeout_s
        streak = reads = 0
        last: dict[str, Any] | None = None
        while True:
            try:
                last = self._read_signals(inc, extra)
                good = all(c.holds(last) for c in spec.checks)
            except Exception as exc:  # an unreadable SLI is not a healthy one
                last, good = {"error": str(exc)}, False
            reads += 1
            streak = streak + 1 if good else 0
            if streak >= spec.hold_reads:
                return True, _jsonable(last), reads
            if time.monotonic() >= deadline:
                return False, _jsonable(last), reads
            self.sleep(spec.interval_s)

    # ------------------------------------------------------------------ endings

    def _resolve(self, inc: Incident) -> Incident:
        now = utcnow()
        inc = self.store.update(inc.id, status=IncidentStatus.RESOLVED, resolved_at=now)
        self._ledger(
            inc,
            "resolved",
            f"incident {inc.id} resolved: {inc.kind} on {inc.target} healed by "
            f"{_last_applied(inc) or 'no action'}, verified",
        )
        self._reflect(inc)
        return inc

    def _escalate(self, inc: Incident, reason: str) -> Incident:
        now = utcnow()
        inc = self.store.update(inc.id, status=IncidentStatus.ESCALATED, escalated_at=now, note=reason)
        url = escalation.escalation_url(self.book.escalation, self.escalation_url)
        sent = escalation.notify(url, escalation.payload(inc, reason), self.book.escalation.timeout_s)
        inc = self._record(
            inc,
            IncidentAction(
                name="escalate", outcome=ActionOutcome.ESCALATED, at=now, detail={"reason": reason, **sent}
            ),
        )
        self._ledger(
            inc,
            "escalation",
            f"incident {inc.id} escalated ({reason}); "
            + (
                f"notified {url}"
                if sent.get("delivered")
                else f"notification not delivered: {sent.get('error') or sent.get('status')}"
            ),
            reason=reason,
            notification=sent,
        )
        self._reflect(inc)
        return inc

    def _reflect(self, inc: Incident) -> None:
        applied = [a for a in inc.actions if a.operation and a.outcome != ActionOutcome.SKIPPED]
        observed: dict[str, float] = {"actions_tried": float(len(applied))}
        if inc.contained_at:
            observed["seconds_to_containment"] = (inc.contained_at - inc.opened_at).total_seconds()
        if inc.resolved_at:
            observed["seconds_to_resolution"] = (inc.resolved_at - inc.opened_at).total_seconds()
        lessons = []
        for a in inc.actions:
            if a.name.startswith("verify:"):
                lessons.append(f"{a.name.removeprefix('verify:')}: {a.outcome.value}")
            elif a.outcome in (ActionOutcome.DENIED, ActionOutcome.FAILED):
                lessons.append(
                    f"{a.name}: {a.outcome.value} ({a.detail.get('error') or a.detail.get('verdict')})"
                )
        if inc.status == IncidentStatus.ESCALATED:
            lessons.append(f"escalated: {inc.note}; extend the {inc.kind} playbook if a person found the fix")
        elif len(applied) > 1:
            lessons.append(
                f"the first action did not suffice; consider starting the {inc.kind} playbook with {_last_applied(inc)}"
            )
        refl = ReflectionRecord(
            changeset_id=inc.id,
            outcome=PromotionState.PROMOTED
            if inc.status == IncidentStatus.RESOLVED
            else PromotionState.REJECTED,
            expected={"actions_to_resolve": 1.0},
            observed=observed,
            lessons=lessons,
        )
        try:
            self.ledger.append(
                kind="reflection",
                subject=inc.id,
                payload={
                    **refl.model_dump(mode="json"),
                    "summary": f"incident {inc.id} ({inc.kind} on {inc.target}) ended {inc.status.value} after "
                    f"{len(applied)} action(s)",
                },
                actor=HEALER,
            )
        except Exception:
            log.exception("could not record the reflection of %s", inc.id)


def _renew_service_tokens() -> None:
    """If the rotated credential was one of the platform's own, mint its file anew (never logged)."""
    try:
        from aegis.security.secrets import ensure_service_tokens

        ensure_service_tokens()
    except Exception:
        log.exception("could not renew the platform's service tokens after a rotation")


def _last_applied(inc: Incident) -> str | None:
    names = [a.name for a in inc.actions if a.operation and a.outcome == ActionOutcome.APPLIED]
    return names[-1] if names else None


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))
