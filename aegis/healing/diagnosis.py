"""Diagnosis: why an incident probably happened, from the facts at hand.

The order of suspicion follows what a platform engineer asks first:

1. **A recent change.** A changeset rolled out on the target within
   ``suspect_window_s`` before the incident is the first suspect (most
   regressions follow a deploy); one still in canary can be rolled back.
2. **An injected or known fault.** ``GET /v1/faults`` names the faults acting on
   the target (chaos experiments, a crash the backend knows about).
3. **Load.** The target's signals: load near capacity points at overload.
4. **Telemetry quality.** Quarantined batches of the target in the lake.

Every fact consulted goes into ``evidence`` whether it pointed anywhere or not,
so the ledger shows what the diagnosis knew, not only what it concluded.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aegis.config import AegisPaths, paths
from aegis.domain import PromotionState, utcnow
from aegis.healing.models import Diagnosis, Incident

SUSPECT_STATES = (PromotionState.CANARY, PromotionState.PROMOTED)
HIGH_LOAD = 0.9
PROBLEM_FAULTS = {
    "shard_down": ("shard_crash",),
    "latency": ("latency_spike",),
    "economy": ("duplication_exploit",),
    "telemetry": ("corrupt_telemetry",),
}


def suspect_changesets(target: str, window_s: float, store: Any | None = None) -> list[dict[str, Any]]:
    """Changesets on ``target`` that went live (canary or promoted) within the window, newest first."""
    if store is None:
        from aegis.changes.store import ChangeSetStore

        store = ChangeSetStore()
    since = utcnow() - timedelta(seconds=window_s)
    out = []
    for rec in store.changesets(set(SUSPECT_STATES)):
        if rec.changeset.target != target or rec.updated_at < since:
            continue
        out.append(
            {
                "id": rec.id,
                "state": rec.state.value,
                "updated_at": rec.updated_at.isoformat(),
                "minutes_before": round((utcnow() - rec.updated_at).total_seconds() / 60.0, 2),
                "params": sorted(rec.changeset.diff),
            }
        )
    return sorted(out, key=lambda r: r["updated_at"], reverse=True)


def quarantine_count(target: str, aegis_paths: AegisPaths | None = None) -> int:
    """Quarantined telemetry files whose path names the target (the lake's quarantine area)."""
    root = (aegis_paths or paths()).quarantine
    if not root.is_dir():
        return 0
    return sum(1 for p in root.rglob("*") if p.is_file() and target in str(p.relative_to(root)))


def diagnose(
    incident: Incident,
    backend: Any | None,
    window_s: float,
    changes_store: Any | None = None,
    aegis_paths: AegisPaths | None = None,
) -> Diagnosis:
    """Correlate the incident with changes, faults, signals and quarantine counts."""
    evidence: dict[str, Any] = {"alerts": incident.alerts, "alert_count": incident.alert_count}
    try:
        suspects = suspect_changesets(incident.target, window_s, changes_store)
    except Exception as exc:  # the changeset store is evidence, not a dependency of healing
        suspects = []
        evidence["changesets_error"] = f"{type(exc).__name__}: {exc}"
    evidence["recent_changesets"] = suspects
    faults: list[str] = []
    signals: dict[str, Any] | None = None
    if backend is not None:
        try:
            faults = sorted({f["kind"] for f in backend.faults() if f.get("shard_id") == incident.target})
            evidence["faults"] = faults
        except Exception as exc:
            evidence["faults_error"] = str(exc)
        try:
            signals = backend.signals(incident.target)
            evidence["signals"] = {
                k: signals.get(k)
                for k in ("status", "load", "tick_ms_last", "players_online", "capacity", "gold_per_player")
            }
        except Exception as exc:
            evidence["signals_error"] = str(exc)
    evidence["quarantined_files"] = quarantine_count(incident.target, aegis_paths)

    suspect = suspects[0] if suspects else None
    expected = PROBLEM_FAULTS.get(incident.kind, ())
    matching = [f for f in faults if f in expected]
    if suspect is not None:
        cause = "changeset"
        summary = (
            f"{incident.kind} on {incident.target} began {suspect['minutes_before']} min after changeset "
            f"{suspect['id']} ({suspect['state']}, params {', '.join(suspect['params']) or 'none'}): first suspect"
        )
        if matching:
            summary += f"; fault(s) {', '.join(matching)} also act on the shard"
    elif matching:
        cause = f"fault:{matching[0]}"
        summary = f"{incident.kind} on {incident.target}: the backend reports fault {', '.join(matching)}"
    elif signals is not None and float(signals.get("load", 0.0)) >= HIGH_LOAD:
        cause = "load"
        summary = f"{incident.kind} on {incident.target}: load {signals['load']:.2f} of capacity"
    else:
        cause = "unknown"
        summary = f"{incident.kind} on {incident.target}: no recent change, no known fault; playbook runs as written"
    return Diagnosis(
        probable_cause=cause,
        summary=summary,
        suspect_changeset=suspect["id"] if suspect else None,
        faults=faults,
        evidence=evidence,
    )
