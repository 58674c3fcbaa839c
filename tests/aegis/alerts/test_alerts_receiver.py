"""The alert receiver over real HTTP (uvicorn on loopback), a real inbox and a real token store:
Alertmanager webhooks stored and deduplicated, resolved kept; unauthenticated, forged and
malformed deliveries refused with a reason and nothing stored; unknown names recorded and
ignored; /metrics (read scope) with the lake's quarantined batches per shard."""

from __future__ import annotations

import httpx
import pytest

from aegis.lake.manifest import Manifest, ManifestEntry
from aegis.security.tokens import TokenStore
from tests.aegis.alerts.alerting_support import Receiver, am_alert, am_payload, sqlite_rows

AM = "/v1/alerts/alertmanager"


def _nothing_stored(r: Receiver) -> None:
    assert r.inbox.latest_seq() == 0
    assert sqlite_rows(r.home.alerts_db, "deliveries") == 0


def test_webhook_stored_with_target_labels_and_values(receiver: Receiver) -> None:
    resp = receiver.post(
        AM, am_payload(am_alert(shard="eu-1", fingerprint="abc123")), receiver.token("alerts")
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["accepted"] == 1 and body["ignored_unknown"] == []
    (entry,) = receiver.inbox.firing("eu-1")
    a = entry.alert
    assert (entry.fingerprint, a.name, a.source, a.target, a.severity.value) == (
        "abc123",
        "ShardDown",
        "alertmanager",
        "eu-1",
        "critical",
    )
    assert a.labels["shard"] == "eu-1" and a.value == 0.0 and a.threshold == 1.0
    assert a.summary == "shard eu-1 is down"
    assert sqlite_rows(receiver.home.alerts_db, "deliveries") == 1


def test_repeats_dedupe_and_resolved_is_kept(receiver: Receiver) -> None:
    tok = receiver.token("alerts")
    for _ in range(3):
        assert receiver.post(AM, am_payload(am_alert(fingerprint="dup")), tok).status_code == 200
    (entry,) = receiver.inbox.all()
    assert (entry.count, entry.seq, entry.status) == (3, 1, "firing")
    resp = receiver.post(
        AM, am_payload(am_alert(fingerprint="dup", status="resolved"), status="resolved"), tok
    )
    assert resp.status_code == 200
    (entry,) = receiver.inbox.all()
    assert (entry.status, entry.seq, entry.count) == ("resolved", 2, 4)
    assert entry.alert.ends_at is not None and receiver.inbox.firing() == []


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ({}, 401, "missing"),
        ({"Authorization": "Bearer aegis.tk-000000000000.forgedforgedforgedforged"}, 401, None),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, None),
    ],
)
def test_unauthenticated_and_forged_callers_are_refused(
    receiver: Receiver, headers: dict[str, str], status: int, reason: str | None
) -> None:
    resp = httpx.post(receiver.url + AM, json=am_payload(am_alert()), headers=headers, timeout=10)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"] == "unauthorized" and resp.json()["message"]
    if reason:
        assert resp.json()["details"]["reason"] == reason
    _nothing_stored(receiver)


def test_a_token_without_the_alerts_scope_is_forbidden(receiver: Receiver) -> None:
    resp = receiver.post(AM, am_payload(am_alert()), receiver.token("read"))
    assert resp.status_code == 403 and resp.json()["error"] == "forbidden"
    store = TokenStore(aegis_paths=receiver.home)
    revoked = store.issue(["alerts"], label="to revoke")
    store.revoke(revoked.id, reason="test")
    resp = receiver.post(AM, am_payload(am_alert()), revoked.token)
    assert resp.status_code in (401, 403)
    store.close()
    _nothing_stored(receiver)


@pytest.mark.parametrize(
    ("body", "reason", "text"),
    [
        (b"{not json", "not_json", "not JSON"),
        (b"", "empty", "empty body"),
        (b"[1, 2]", "invalid", "Alertmanager v4"),
        ({**am_payload(am_alert()), "version": "3"}, "invalid", "version"),
        ({**am_payload(am_alert()), "alerts": []}, "invalid", "alerts"),
        (am_payload({**am_alert(), "labels": {"shard": "eu-1"}}), "invalid", "alertname"),
        (am_payload({**am_alert(), "status": "exploded"}), "invalid", "status"),
        (am_payload({**am_alert(), "startsAt": "yesterday"}), "invalid", "startsAt"),
        (
            am_payload(am_alert(fingerprint="ok"), {**am_alert(fingerprint="bad"), "fingerprint": ""}),
            "invalid",
            "",
        ),
    ],
)
def test_malformed_deliveries_get_400_with_a_reason_and_change_nothing(
    receiver: Receiver, body: object, reason: str, text: str
) -> None:
    headers = {"Authorization": f"Bearer {receiver.token('alerts')}", "Content-Type": "application/json"}
    if isinstance(body, bytes):
        resp = httpx.post(receiver.url + AM, content=body, headers=headers, timeout=10)
    else:
        resp = httpx.post(receiver.url + AM, json=body, headers=headers, timeout=10)
    assert resp.status_code == 400, resp.text
    err = resp.json()
    assert err["details"]["reason"] == reason and text in err["message"]
    _nothing_stored(receiver)  # a batch with one bad alert stores none of it


def test_unknown_alert_names_are_recorded_and_ignored(receiver: Receiver) -> None:
    tok = receiver.token("alerts")
    resp = receiver.post(AM, am_payload(am_alert(name="DiskAlmostFull", fingerprint="u1"), am_alert()), tok)
    assert resp.status_code == 200
    assert resp.json()["ignored_unknown"] == ["DiskAlmostFull"]
    assert [e.alert.name for e in receiver.inbox.since(0)] == ["ShardDown"]
    assert [e.alert.name for e in receiver.inbox.all() if not e.known] == ["DiskAlmostFull"]
    assert httpx.get(receiver.url + "/v1/health", timeout=5).json()["status"] == "ok"


def test_an_alert_without_a_shard_gets_a_target(receiver: Receiver) -> None:
    alert = am_alert(name="SecurityRefusals", reason="invalid")
    alert["labels"] = {"alertname": "SecurityRefusals", "reason": "invalid", "target": "world"}  # type: ignore[assignment]
    assert receiver.post(AM, am_payload(alert), receiver.token("alerts")).status_code == 200
    (entry,) = receiver.inbox.firing()
    assert entry.alert.target == "world"


def test_foreign_host_header_is_refused(receiver: Receiver) -> None:
    resp = httpx.post(
        receiver.url + AM,
        json=am_payload(am_alert()),
        headers={"Authorization": f"Bearer {receiver.token('alerts')}", "Host": "evil.example"},
        timeout=10,
    )
    assert resp.status_code == 400
    _nothing_stored(receiver)


def test_metrics_need_read_and_count_alerts_and_quarantined_batches(receiver: Receiver) -> None:
    assert httpx.get(receiver.url + "/metrics", timeout=5).status_code == 401
    manifest = Manifest(receiver.home)
    for i, (shard, status, q) in enumerate(
        [("eu-1", "rejected", 40), ("eu-1", "partial", 3), ("us-2", "ok", 0)]
    ):
        src = f"landing/telemetry/date=2026-12-06/hour=00/shard={shard}/batch-{i}.parquet"
        no, _ = manifest.register(f"b{i}", src, 100, None)
        bronze = 40 - q if status != "rejected" else 0
        fields = (no, f"b{i}", src, 100, status, 40, bronze, q, 0) + (None,) * 6
        manifest.record(ManifestEntry(*fields))
    receiver.post(AM, am_payload(am_alert()), receiver.token("alerts"))
    receiver.post(AM, {"version": "4"}, receiver.token("alerts"))
    resp = httpx.get(receiver.url + "/metrics", headers={"Authorization": f"Bearer {receiver.token('read')}"})
    assert resp.status_code == 200
    text = resp.text
    assert 'aegis_lake_quarantined_batches_total{shard="eu-1"} 2.0' in text
    assert 'aegis_lake_quarantined_rows_total{shard="eu-1"} 43.0' in text
    assert 'shard="us-2"' not in text
    assert 'aegis_alerts_received_total{known="true",source="alertmanager",status="firing"} 1.0' in text
    assert 'aegis_alerts_rejected_total{reason="invalid"} 1.0' in text
    assert 'aegis_alerts_inbox{status="firing"} 1.0' in text
    assert 'aegis_refused_requests_total{reason="missing"} 1' in text
