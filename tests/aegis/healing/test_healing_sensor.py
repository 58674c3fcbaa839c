"""The sensor's grouping and storm guards, on a real alert inbox and incident store (SQLite files)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from aegis.alerts.inbox import AlertInbox
from aegis.domain import Alert, AlertStatus, utcnow
from aegis.healing.grouping import BREAKER_NOTE, sensor_tick
from aegis.healing.models import IncidentStatus
from aegis.healing.playbooks import PlaybookError, default_path, load_playbooks
from aegis.healing.store import IncidentStore

NAMES = ("ShardDown", "TickLatencyHigh", "SLOBurnRateFast", "EconomyInflation", "TelemetryQuarantineSpike")
TARGETS = [f"shard-{i}" for i in range(20)]


@pytest.fixture
def inbox(tmp_path: Path) -> AlertInbox:
    return AlertInbox(f"sqlite:///{tmp_path / 'alerts.db'}")


@pytest.fixture
def store(tmp_path: Path) -> IncidentStore:
    return IncidentStore(f"sqlite:///{tmp_path / 'healing.db'}")


def _alert(name: str, target: str, n: int = 0, status: AlertStatus = AlertStatus.FIRING) -> Alert:
    return Alert(
        source="alertmanager",
        name=name,
        target=target,
        status=status,
        labels={"shard": target, "instance": f"i-{n}"},
    )


def test_a_storm_of_10000_alerts_yields_bounded_runs(inbox: AlertInbox, store: IncidentStore) -> None:
    book = load_playbooks()
    storm = [
        _alert(NAMES[(i // len(TARGETS)) % len(NAMES)], TARGETS[i % len(TARGETS)], i) for i in range(10_000)
    ]
    inbox.put(storm)
    first = sensor_tick(store, inbox, book)
    assert first.read == 10_000
    # 20 targets x 4 problems (TickLatencyHigh and SLOBurnRateFast are one problem: latency)
    assert len(first.opened) == 80
    assert len(store.incidents()) == 80
    assert len(first.launch) == book.limits.max_launches_per_minute
    assert len({i.target for i in first.launch}) == len(first.launch)  # one per target at a time
    incidents = store.incidents()
    assert sum(i.alert_count for i in incidents) == 10_000  # every alert is in exactly one incident
    # Later ticks within the minute launch nothing more: the rate limit holds.
    again = sensor_tick(store, inbox, book)
    assert again.read == 0 and again.launch == []
    # Part of the storm delivered again (Alertmanager repeats) opens nothing.
    inbox.put(storm[:500])
    assert sensor_tick(store, inbox, book).opened == []
    # A minute later the next batch goes out, still one per target.
    later = sensor_tick(store, inbox, book, now=utcnow() + timedelta(minutes=1, seconds=1))
    assert 0 < len(later.launch) <= book.limits.max_launches_per_minute


def test_concurrency_per_target_waits_for_the_running_incident(
    inbox: AlertInbox, store: IncidentStore
) -> None:
    book = load_playbooks()
    inbox.put([_alert("ShardDown", "s1"), _alert("EconomyInflation", "s1")])
    tick = sensor_tick(store, inbox, book)
    assert len(tick.opened) == 2 and len(tick.launch) == 1
    store.update(tick.launch[0].id, status=IncidentStatus.RESOLVED)
    assert [i.kind for i in sensor_tick(store, inbox, book).launch] == [
        i.kind for i in tick.opened if i.id != tick.launch[0].id
    ]


def test_breaker_stops_a_heal_refire_loop(inbox: AlertInbox, store: IncidentStore) -> None:
    book = load_playbooks()
    limit = book.limits.breaker_max_incidents
    t = utcnow()
    for round_ in range(limit + 3):
        # The same problem comes back with a new alert each time it was "healed".
        inbox.put([_alert("ShardDown", "loop", n=round_)])
        tick = sensor_tick(store, inbox, book, now=t + timedelta(minutes=2 * round_))
        for inc in tick.launch:
            store.update(inc.id, status=IncidentStatus.RESOLVED)
    incidents = store.incidents()
    launched = [i for i in incidents if i.status == IncidentStatus.RESOLVED]
    broken = [i for i in incidents if i.status == IncidentStatus.ESCALATED]
    assert len(launched) == limit  # no more runs after the breaker opened
    assert len(broken) == 1 and broken[0].note.startswith(BREAKER_NOTE)
    assert broken[0].alert_count == 3  # later alerts joined the breaker's incident


def test_resolved_and_unmapped_alerts_open_nothing(inbox: AlertInbox, store: IncidentStore) -> None:
    book = load_playbooks()
    inbox.put([_alert("ShardDown", "r1", status=AlertStatus.RESOLVED), _alert("ReplicaLagHigh", "db")])
    tick = sensor_tick(store, inbox, book)
    assert tick.opened == [] and tick.launch == [] and tick.ignored == 2


def test_playbooks_are_validated(tmp_path: Path) -> None:
    raw = json.loads(default_path().read_text())
    raw["playbooks"][0]["actions"][0]["on_failure"] = "reboot_everything"
    raw["playbooks"][1]["actions"][1]["operation"] = "launch_missiles"
    bad = tmp_path / "playbooks.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(PlaybookError) as err:
        load_playbooks(bad)
    assert "launch_missiles" in str(err.value)
    raw["playbooks"][1]["actions"][1]["operation"] = "shed_load"
    bad.write_text(json.dumps(raw))
    with pytest.raises(PlaybookError, match="unknown 'reboot_everything'"):
        load_playbooks(bad)


def test_every_playbook_has_its_runbook() -> None:
    root = default_path().parent.parent
    for pb in load_playbooks().playbooks:
        page = root / pb.runbook
        assert page.is_file(), f"{pb.problem}: {pb.runbook} is missing"
        text = page.read_text()
        for action in pb.actions:
            assert action.name in text, f"{pb.runbook} does not describe {action.name}"


def test_security_alert_defers_to_the_refusal_scan(inbox: AlertInbox, store: IncidentStore) -> None:
    alert = Alert(source="alertmanager", name="SecurityRefusals", target="world", labels={"reason": "scope"})
    inbox.put([alert])
    tick = sensor_tick(store, inbox, load_playbooks())
    assert tick.opened == [] and tick.ignored == 1
