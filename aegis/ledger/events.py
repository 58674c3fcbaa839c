"""Ledger records for decisions made outside the changeset lifecycle (model promotions).

A champion move changes what every later proposal and canary relies on, so it
is a decision like any other: it goes into the signed ledger as a ``model``
record, next to the MLflow tags that say the same thing.
"""

from __future__ import annotations

from typing import Any

from aegis.domain import AuditRecord
from aegis.ledger.ledger import Ledger

MODEL_KIND = "model"
CHAMPION_ALIAS = "champion"
EVALUATION_ACTOR = "model-evaluation"


def record_model_promotion(
    model: str,
    version: str,
    previous_version: str | None,
    reason: str,
    details: dict[str, Any] | None = None,
    *,
    actor: str = EVALUATION_ACTOR,
    ledger: Ledger | None = None,
) -> AuditRecord:
    """Record that ``model`` version ``version`` became the champion (replacing ``previous_version``).

    The subject is ``<model>@champion``, so ``aegis audit show --changeset
    aegis-world-model@champion`` lists every champion move. ``ledger`` defaults
    to the local ledger (opened and closed here).
    """
    if not version:
        raise ValueError("a promotion names the version promoted")
    payload = {
        "summary": (
            f"world model {model} version {version} became the {CHAMPION_ALIAS} "
            f"(before: {previous_version or 'none'}): {reason}"
        ),
        "model": model,
        "alias": CHAMPION_ALIAS,
        "version": str(version),
        "previous_version": str(previous_version) if previous_version else None,
        "reason": reason,
        "details": details or {},
    }
    own = ledger is None
    target = ledger if ledger is not None else Ledger()
    try:
        return target.append(MODEL_KIND, f"{model}@{CHAMPION_ALIAS}", payload, actor)
    finally:
        if own:
            target.dispose()
