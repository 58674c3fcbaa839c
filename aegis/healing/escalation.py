"""Escalation: the outgoing notification when healing gives up (a pager, a chat hook).

One JSON POST to a configurable URL: ``$AEGIS_ESCALATION_URL`` (the variable named
by ``escalation.url_env`` in ``policies/playbooks.json``), else ``escalation.url``.
The body is PagerDuty-Events-like and self-contained (incident, target, problem,
diagnosis, every action tried), so whoever is paged needs nothing else to start.
Delivery failures are returned, never raised: the escalation record is written
either way and says whether anyone was reached.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from aegis.healing.models import Escalation, Incident


def escalation_url(cfg: Escalation, override: str | None = None) -> str | None:
    if override:
        return override
    env = os.environ.get(cfg.url_env, "").strip()
    return env or cfg.url


def payload(incident: Incident, reason: str) -> dict[str, Any]:
    return {
        "event_action": "trigger",
        "dedup_key": incident.id,
        "summary": f"Aegis could not heal {incident.kind} on {incident.target}: {reason}",
        "severity": "critical",
        "source": "aegis-healing",
        "incident": incident.as_output(),
        "diagnosis": incident.diagnosis.model_dump(mode="json") if incident.diagnosis else None,
        "reason": reason,
        "runbook": f"docs/runbooks/{incident.kind.replace('_', '-')}.md",
    }


def notify(url: str | None, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """POST the escalation; returns ``{"delivered": bool, "status"|"error": ..., "url": ...}``."""
    if not url:
        return {"delivered": False, "error": "no escalation URL configured", "url": None}
    try:
        r = httpx.post(url, json=body, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return {"delivered": False, "error": f"{type(exc).__name__}: {exc}", "url": url}
    return {"delivered": r.status_code < 300, "status": r.status_code, "url": url}
