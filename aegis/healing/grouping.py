"""From alerts to incidents to healing runs, with the storm guards.

One sensor tick (:func:`sensor_tick`) does, in order:

1. **Read** the alert inbox from the stored cursor (``AlertInbox.since``), at most
   ``MAX_ENTRIES_PER_TICK`` entries.
2. **Group**: each firing alert whose name opens a playbook belongs to the
   incident of its ``(target, problem)``; an open incident absorbs it (count
   +1), otherwise a new incident opens. An alert (fingerprint) joins one incident
   at most once, so Alertmanager's repeats and a replayed inbox add nothing.
   Resolved notifications and alert names without a playbook open nothing.
3. **Circuit breaker**: a ``(target, problem)`` that already opened
   ``breaker_max_incidents`` incidents within ``breaker_window_s`` gets no new
   run: its next incident is opened already escalated (one page, no action),
   and later alerts in the window join that one. Heal, re-fire, heal again is
   thus bounded: never a loop of actions.
4. **Launch** queued incidents under two limits: at most
   ``max_active_per_target`` running incidents per target (the rest wait their
   turn), and at most ``max_launches_per_minute`` launches overall.

The cursor, the new incidents and the launch marks commit in one transaction:
a crash between ticks re-reads nothing twice and loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from aegis.domain import utcnow
from aegis.healing.models import Incident, IncidentStatus, PlaybookBook
from aegis.healing.store import CURSOR_KEY, IncidentStore, incidents_t

MAX_ENTRIES_PER_TICK = 20_000
PAGE = 1_000
BREAKER_NOTE = "circuit breaker open"
SECURITY_PROBLEM = "security"
SECURITY_SUBJECTS = ("token:", "caller:")


@dataclass
class TickResult:
    """What one sensor tick did (the sensor logs it; tests assert on it)."""

    read: int = 0
    opened: list[Incident] = field(default_factory=list)
    absorbed: int = 0
    ignored: int = 0
    breaker: list[Incident] = field(default_factory=list)
    launch: list[Incident] = field(default_factory=list)
    cursor: int = 0


def _latest_for(conn: sa.Connection, key: str) -> Incident | None:
    row = conn.execute(
        sa.select(incidents_t.c.doc)
        .where(incidents_t.c.key == key)
        .order_by(incidents_t.c.opened_at.desc())
        .limit(1)
    ).first()
    return None if row is None else Incident.model_validate_json(row.doc)


def absorb(
    store: IncidentStore,
    conn: sa.Connection,
    book: PlaybookBook,
    target: str,
    problem: str,
    alert_name: str,
    fingerprint: str,
    received_at: datetime,
    now: datetime,
    result: TickResult,
    pending: dict[str, Incident],
    links: list[dict[str, str]] | None = None,
) -> None:
    """Group one alert into its incident (opening one, or a breaker one, when needed).

    ``links``: the caller already filtered out fingerprints linked before and inserts
    the new links in bulk (the sensor's fast path); None checks and links one by one."""
    key = f"{target}|{problem}"
    inc = pending.get(key)
    if inc is None:
        inc = store.open_for(conn, key)
    if inc is None:
        latest = _latest_for(conn, key)
        window = now - timedelta(seconds=book.limits.breaker_window_s)
        if (
            latest is not None
            and latest.status == IncidentStatus.ESCALATED
            and latest.note.startswith(BREAKER_NOTE)
            and latest.opened_at >= window
        ):
            inc = latest  # the breaker's incident absorbs the rest of the storm
        else:
            opened = store.count_opened(conn, key, window)
            inc = Incident(target=target, kind=problem, first_alert_at=received_at, opened_at=now)
            if opened >= book.limits.breaker_max_incidents:
                inc.status = IncidentStatus.ESCALATED
                inc.escalated_at = now
                inc.note = (
                    f"{BREAKER_NOTE}: {opened} incidents of {problem} on {target} within "
                    f"{book.limits.breaker_window_s:.0f} s; no automatic action until the window passes"
                )
                result.breaker.append(inc)
            else:
                result.opened.append(inc)
    if links is None:
        if not store.link_alert(conn, fingerprint, inc.id):
            result.ignored += 1
            return
    else:
        links.append({"fingerprint": fingerprint, "incident_id": inc.id})
    if inc.alert_count:
        result.absorbed += 1
    inc.alert_count += 1
    if alert_name not in inc.alerts:
        inc.alerts.append(alert_name)
    pending[key] = inc


def _episode(entry: Any) -> str:
    return f"{entry.fingerprint}#{entry.seq}"


def sensor_tick(
    store: IncidentStore, inbox: Any, book: PlaybookBook, now: datetime | None = None
) -> TickResult:
    """One tick: read the inbox, group into incidents, apply the breakers, pick the runs to launch."""
    now = now or utcnow()
    result = TickResult()
    cursor = int(store.get_state(CURSOR_KEY, "0") or 0)
    entries: list[Any] = []
    while len(entries) < MAX_ENTRIES_PER_TICK:
        page = inbox.since(cursor if not entries else entries[-1].seq, limit=PAGE)
        if not page:
            break
        entries.extend(page)
    result.read = len(entries)
    with store.tx() as conn:
        pending: dict[str, Incident] = {}
        # An alert episode is its fingerprint at its change seq: Alertmanager keeps the fingerprint
        # when the same alert fires again after resolving, and the inbox gives that a new seq.
        linked = store.linked(conn, {_episode(e) for e in entries})
        links: list[dict[str, str]] = []
        for e in entries:
            alert = e.alert
            playbook = book.for_alert(alert.name)
            if e.status != "firing" or playbook is None or _episode(e) in linked:
                result.ignored += 1
                continue
            linked.add(_episode(e))
            target = alert.labels.get("shard") or alert.target
            if playbook.problem == SECURITY_PROBLEM and not target.startswith(SECURITY_SUBJECTS):
                # SecurityRefusals counts refusals per reason, not per caller: the refusal scan of the
                # same tick opens one incident per credential or address, which containment needs.
                result.ignored += 1
                continue
            absorb(
                store,
                conn,
                book,
                target,
                playbook.problem,
                alert.name,
                _episode(e),
                e.received_at,
                now,
                result,
                pending,
                links,
            )
        store.add_links(conn, links)
        for inc in pending.values():
            store._save(conn, inc)
        if entries:
            cursor = max(cursor, entries[-1].seq)
            store.set_state(conn, CURSOR_KEY, str(cursor))
        result.cursor = cursor
        result.launch = plan_launches(store, conn, book, now)
    return result


def plan_launches(
    store: IncidentStore, conn: sa.Connection, book: PlaybookBook, now: datetime
) -> list[Incident]:
    """Queued incidents to launch now, within the per-target and the global rate limits."""
    budget = book.limits.max_launches_per_minute - store.launches_since(conn, now - timedelta(minutes=1))
    out: list[Incident] = []
    active: dict[str, int] = {}
    for inc in store.unlaunched(conn):
        if budget <= 0:
            break
        running = active.setdefault(inc.target, store.active_on(conn, inc.target))
        if running >= book.limits.max_active_per_target:
            continue
        store.mark_launched(conn, inc, now)
        active[inc.target] = running + 1
        budget -= 1
        out.append(inc)
    return out
