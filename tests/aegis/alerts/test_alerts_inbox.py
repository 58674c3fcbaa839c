"""The alert inbox (real SQLite file): dedup by fingerprint, resolved kept, change sequence,
unknown names recorded but not handed to consumers, durable settings, concurrent writers."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from aegis.alerts.cli import alerts
from aegis.alerts.inbox import AlertInbox, fingerprint_of
from aegis.config import AegisPaths
from aegis.domain import Alert, AlertStatus

T0 = datetime(2026, 12, 6, tzinfo=UTC)


def _inbox(tmp_path: Path) -> AlertInbox:
    return AlertInbox(f"sqlite:///{tmp_path / 'alerts.db'}")


def _alert(name: str = "ShardDown", target: str = "eu-1", status: str = "firing", **kw: object) -> Alert:
    return Alert(
        source="alertmanager",
        name=name,
        target=target,
        status=AlertStatus(status),
        labels={"alertname": name, "shard": target},
        starts_at=kw.pop("starts_at", T0),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def test_repeat_updates_resolved_keeps_refire_is_a_new_change(tmp_path: Path) -> None:
    inbox = _inbox(tmp_path)
    (first,) = inbox.put([_alert(fingerprint="fp1")])
    assert (first.seq, first.status, first.count, first.known) == (1, "firing", 1, True)
    (again,) = inbox.put([_alert(fingerprint="fp1", value=3.0)])
    assert (again.seq, again.count) == (1, 2)  # a repeat is not a change: no new seq
    assert again.last_seen >= first.last_seen and again.alert.value == 3.0
    assert again.alert.id == first.alert.id  # one id per fingerprint
    assert inbox.since(1) == []
    (resolved,) = inbox.put([_alert(status="resolved", fingerprint="fp1")])
    assert (resolved.seq, resolved.status, resolved.count) == (2, "resolved", 3)
    assert resolved.resolved_at is not None
    assert inbox.firing() == [] and inbox.get("fp1") is not None  # kept
    (refire,) = inbox.put([_alert(fingerprint="fp1", starts_at=T0 + timedelta(minutes=9))])
    assert (refire.seq, refire.status, refire.resolved_at) == (3, "firing", None)
    assert [e.seq for e in inbox.since(0)] == [3] and inbox.latest_seq() == 3


def test_a_late_resolved_for_an_older_firing_does_not_close_the_newer_one(tmp_path: Path) -> None:
    inbox = _inbox(tmp_path)
    inbox.put([_alert(fingerprint="fp", starts_at=T0 + timedelta(minutes=5))])
    (late,) = inbox.put([_alert(status="resolved", fingerprint="fp", starts_at=T0)])
    assert late.status == "firing" and late.count == 2


def test_derived_fingerprint_is_stable_and_label_sensitive(tmp_path: Path) -> None:
    a, b = _alert(), _alert()
    assert a.id != b.id and fingerprint_of(a) == fingerprint_of(b)
    c = _alert(target="eu-2")
    assert fingerprint_of(c) != fingerprint_of(a)
    inbox = _inbox(tmp_path)
    entries = inbox.put([a, b, c])
    assert [e.count for e in entries] == [2, 2, 1] and len(inbox.all()) == 2


def test_unknown_names_are_recorded_not_handed_on(tmp_path: Path) -> None:
    inbox = _inbox(tmp_path)
    entries = inbox.put([_alert(name="SomethingNew", target="eu-3"), _alert()], source_payload={"x": 1})
    assert [e.known for e in entries] == [False, True]
    assert [e.alert.name for e in inbox.since(0)] == ["ShardDown"]
    assert [e.alert.name for e in inbox.since(0, include_unknown=True)] == ["SomethingNew", "ShardDown"]
    assert [e.alert.name for e in inbox.firing("eu-3", include_unknown=True)] == ["SomethingNew"]
    assert inbox.firing("eu-3") == []
    stats = inbox.stats()
    assert (stats.entries, stats.firing, stats.unknown, stats.deliveries) == (2, 2, 1, 1)


def test_durable_settings_and_reopen(tmp_path: Path) -> None:
    inbox = _inbox(tmp_path)
    inbox.put([_alert(fingerprint="keep")])
    with inbox.engine.connect() as conn:
        assert conn.exec_driver_sql("pragma journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("pragma synchronous").scalar() == 2  # FULL
    inbox.close()
    reopened = _inbox(tmp_path)
    assert reopened.get("keep") is not None and reopened.latest_seq() == 1


def test_concurrent_writers_lose_nothing_and_never_share_a_seq(tmp_path: Path) -> None:
    inboxes = [_inbox(tmp_path) for _ in range(4)]  # four engines: like four receiver processes
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for j in range(25):
                inboxes[i].put([_alert(target=f"s{i}-{j}", fingerprint=f"fp-{i}-{j}")])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    entries = inboxes[0].since(0)
    assert len(entries) == 100
    assert sorted(e.seq for e in entries) == list(range(1, 101))


def test_cli_lists_the_inbox(aegis_home: AegisPaths) -> None:
    assert CliRunner().invoke(alerts, ["list"]).output.strip() == "no firing alerts"
    inbox = AlertInbox()
    inbox.put([_alert(fingerprint="a"), _alert(name="Mystery", target="eu-9")])
    inbox.put([_alert(status="resolved", fingerprint="a")])
    inbox.close()
    firing = CliRunner().invoke(alerts, ["list"])
    assert firing.exit_code == 0 and "Mystery" not in firing.output and "no firing alerts" in firing.output
    everything = CliRunner().invoke(alerts, ["list", "--all"])
    assert "resolved" in everything.output and "unknown name: recorded, ignored" in everything.output
    doc = json.loads(CliRunner().invoke(alerts, ["list", "--all", "--json"]).output)
    assert [(e["alert"]["name"], e["status"], e["known"]) for e in doc] == [
        ("Mystery", "firing", False),
        ("ShardDown", "resolved", True),
    ]
