"""Security incidents from refused calls (``TokenStore.refusals()``).

Two patterns open one (a :class:`~aegis.domain.SecurityIncident`, recorded in the
ledger, and an incident of problem ``security`` that the ``security`` playbook
contains):

- a call with a **revoked or rotated-out credential** (one is enough: whoever
  holds it should not), and
- **repeated refusals** from one credential or address: ``REFUSAL_THRESHOLD``
  within ``REFUSAL_WINDOW_S``.

The incident's target is the credential (``token:<id>``) when the refusals name
one, else the address (``caller:<addr>``). Containment rotates the credential
(no grace) and isolates it (or the address); loopback addresses are never
isolated, since the platform's own services call from there: such an incident
is escalated to a person instead.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aegis.domain import SecurityIncident, Severity, utcnow
from aegis.healing.grouping import TickResult, absorb
from aegis.healing.models import Diagnosis, Incident, PlaybookBook
from aegis.healing.store import SECURITY_CURSOR_KEY, IncidentStore

REFUSAL_THRESHOLD = 5
REFUSAL_WINDOW_S = 300.0
PROTECTED_CALLERS = frozenset({"127.0.0.1", "::1", "localhost", "testclient", "unknown"})
PROBLEM = "security"
ALERT_NAME = "SecurityRefusals"
HOST_REFUSAL_STATUS = 400
CONTAINED = frozenset({"isolated"})


def _subject(refusal: Any) -> str:
    return f"token:{refusal.token_id}" if refusal.token_id else f"caller:{refusal.caller}"


def scan_refusals(
    store: IncidentStore, tokens: Any, book: PlaybookBook, ledger: Any | None = None
) -> TickResult:
    """Open security incidents from the refusals recorded since the stored cursor."""
    now = utcnow()
    result = TickResult()
    cursor = int(store.get_state(SECURITY_CURSOR_KEY, "0") or 0)
    window = now - timedelta(seconds=REFUSAL_WINDOW_S)
    # Refusals of an isolated caller are the containment working, not a new incident.
    recent = [
        r
        for r in tokens.refusals(since=window)
        if r.status != HOST_REFUSAL_STATUS and r.reason not in CONTAINED
    ]
    new = [r for r in recent if r.seq > cursor]
    result.read = len(new)
    if not new:
        return result
    by_subject: dict[str, list[Any]] = {}
    ended = _last_ended(store, {_subject(r) for r in new})
    for r in recent:
        subject = _subject(r)
        if subject in ended and r.at <= ended[subject]:
            continue  # already dealt with by the subject's previous incident
        by_subject.setdefault(subject, []).append(r)
    triggered: dict[str, tuple[str, Any]] = {}
    for r in new:
        subject = _subject(r)
        if r not in by_subject.get(subject, []):
            continue
        if r.revoked:
            triggered.setdefault(subject, ("revoked credential used", r))
        elif len(by_subject[subject]) >= REFUSAL_THRESHOLD:
            triggered.setdefault(
                subject, (f"{len(by_subject[subject])} refused calls in {REFUSAL_WINDOW_S:.0f} s", r)
            )
    with store.tx() as conn:
        pending: dict[str, Incident] = {}
        for subject, (why, r) in triggered.items():
            fp = f"refusal:{subject}:{r.seq}"
            absorb(store, conn, book, subject, PROBLEM, ALERT_NAME, fp, r.at, now, result, pending)
            inc = pending.get(f"{subject}|{PROBLEM}")
            if inc is not None and not inc.note:
                inc.note = why
        for inc in pending.values():
            store._save(conn, inc)
        store.set_state(conn, SECURITY_CURSOR_KEY, str(max(r.seq for r in new)))
        result.cursor = max(r.seq for r in new)
    if ledger is not None:
        for inc in result.opened + result.breaker:
            sec = SecurityIncident(
                actor=inc.target,
                kind=_incident_kind(tokens, inc.target),
                severity=Severity.CRITICAL,
                detail=f"{inc.note}; incident {inc.id}",
            )
            ledger.append(
                kind="security",
                subject=inc.id,
                payload={
                    **sec.model_dump(mode="json"),
                    "summary": f"security incident on {inc.target}: {inc.note}",
                },
                actor="aegis-healer",
            )
    return result


def _incident_kind(tokens: Any, subject: str) -> Any:
    """The SecurityIncident kind for the subject's refusals: a forged secret is a signature failure,
    calls beyond the credential's scope a scope violation, anything else (a revoked or rotated-out
    credential, unknown tokens) a policy violation."""
    reasons = {r.reason for r in tokens.refusals(since=utcnow() - timedelta(seconds=REFUSAL_WINDOW_S))
               if _subject(r) == subject}  # fmt: skip
    if "forged" in reasons:
        return "signature_failure"
    if reasons == {"scope"}:
        return "scope_violation"
    return "policy_violation"


def _last_ended(store: IncidentStore, subjects: set[str]) -> dict[str, Any]:
    """When each subject's latest finished security incident ended (resolved or escalated)."""
    out: dict[str, Any] = {}
    for inc in store.incidents():
        if inc.kind != PROBLEM or inc.target not in subjects:
            continue
        end = inc.resolved_at or inc.escalated_at
        if end is not None and (inc.target not in out or end > out[inc.target]):
            out[inc.target] = end
    return out


def diagnose_security(inc: Incident, tokens: Any) -> Diagnosis:
    """Who was refused, how, and what to contain: the credential and/or the address."""
    kind, _, ident = inc.target.partition(":")
    window = utcnow() - timedelta(seconds=REFUSAL_WINDOW_S)
    mine = [r for r in tokens.refusals(since=window) if _subject(r) == inc.target]
    token_id = ident if kind == "token" else None
    addresses = sorted({r.caller for r in mine})
    isolate: str | None = token_id or (ident if ident not in PROTECTED_CALLERS else None)
    evidence: dict[str, Any] = {
        "token_id": token_id,
        "isolate": isolate,
        "refusals": len(mine),
        "revoked_used": any(r.revoked for r in mine),
        "reasons": sorted({r.reason for r in mine}),
        "paths": sorted({r.path for r in mine})[:20],
        "addresses": addresses,
    }
    if token_id:
        info = tokens.get(token_id)
        evidence["token_state"] = info.state() if info is not None else "unknown"
        evidence["token_scopes"] = info.scopes if info is not None else []
    cause = "revoked_credential" if evidence["revoked_used"] else "repeated_refusals"
    summary = (
        f"{len(mine)} refused call(s) by {inc.target} ({', '.join(evidence['reasons'])}) from "
        f"{', '.join(addresses) or 'unknown'}"
        + ("; a revoked credential was used" if evidence["revoked_used"] else "")
    )
    if isolate is None:
        summary += "; the address is the platform's own (loopback): not isolated automatically"
    return Diagnosis(probable_cause=cause, summary=summary, evidence=evidence)
