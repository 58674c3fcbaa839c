"""One healing tick without Dagster: what the sensor decides, then the runs it would launch,
healed in this process (``aegis incidents tick``, the tests, the benchmark's in-process path).

The Dagster sensor (``assets/healing.py``) calls :func:`decide` and launches one run
per incident instead of healing inline.
"""

from __future__ import annotations

import logging
from typing import Any

from aegis.healing.grouping import TickResult, sensor_tick
from aegis.healing.models import Incident, PlaybookBook
from aegis.healing.playbooks import load_playbooks
from aegis.healing.store import IncidentStore

log = logging.getLogger(__name__)


def decide(
    store: IncidentStore,
    book: PlaybookBook,
    inbox: Any | None = None,
    tokens: Any | None = None,
    ledger: Any | None = None,
) -> tuple[TickResult, list[Incident]]:
    """Read alerts and refusals, open incidents, and pick the ones to launch now."""
    if inbox is None:
        from aegis.alerts.inbox import AlertInbox

        inbox = AlertInbox()
    result = sensor_tick(store, inbox, book)
    if tokens is not False:
        try:
            from aegis.healing.security import scan_refusals

            if tokens is None:
                from aegis.security.tokens import TokenStore

                tokens = TokenStore()
            sec = scan_refusals(store, tokens, book, ledger)
            result.opened.extend(sec.opened)
            result.breaker.extend(sec.breaker)
            if sec.opened:
                with store.tx() as conn:
                    from aegis.domain import utcnow
                    from aegis.healing.grouping import plan_launches

                    result.launch.extend(plan_launches(store, conn, book, utcnow()))
        except Exception:
            log.exception("the refusal scan failed; alert-driven healing goes on")
    return result, result.launch


def tick_and_heal(world_url: str, store: IncidentStore | None = None, **healer_kw: Any) -> list[Incident]:
    """One tick, then heal every launched incident here; returns them as they ended."""
    from aegis.healing.backend import RemediationBackend
    from aegis.healing.engine import Healer

    store = store or IncidentStore()
    book = healer_kw.pop("book", None) or load_playbooks()
    _, launch = decide(store, book, healer_kw.pop("inbox", None), healer_kw.pop("tokens", None))
    out = []
    with RemediationBackend(world_url) as backend:
        healer = Healer(backend, store=store, book=book, **healer_kw)
        for inc in launch:
            out.append(healer.heal(inc.id))
    return out
