"""CloudWatch alarms through SNS into the receiver (real HTTP): subscription confirmation, signature
verification with a locally generated certificate (v1 SHA1 and v2 SHA256), certificate and
SubscribeURL host pinning, replays, and the alerts token as SNS can send it (basic auth)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from aegis.alerts.receiver import create_app
from aegis.alerts.sns import NOTIFICATION_FIELDS, SUBSCRIPTION_FIELDS, SnsVerifier
from aegis.config import AegisPaths
from tests.aegis.alerts.alerting_support import Receiver, sqlite_rows, start_receiver, stop_receiver

REGION = "eu-west-1"
TOPIC = f"arn:aws:sns:{REGION}:123456789012:aegis-prod-alarms-{REGION}"
CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
SUBSCRIBE_URL = f"https://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=tok"
SNS = "/v1/alerts/sns"


class FakeAws:
    """Signs like SNS with a local key; serves the certificate and records every URL fetched."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sns.{REGION}.amazonaws.com")])
        now = datetime.now(UTC)
        self.cert_pem = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .sign(self.key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )
        self.fetched: list[str] = []

    def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        if url == CERT_URL:
            return self.cert_pem
        return b"<ConfirmSubscriptionResponse/>"

    def sign(self, msg: dict[str, str], version: str = "1") -> dict[str, str]:
        msg = {**msg, "SignatureVersion": version, "SigningCertURL": msg.get("SigningCertURL", CERT_URL)}
        fields = NOTIFICATION_FIELDS if msg["Type"] == "Notification" else SUBSCRIPTION_FIELDS
        canonical = "".join(f"{k}\n{msg[k]}\n" for k in fields if k in msg).encode()
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        msg["Signature"] = base64.b64encode(self.key.sign(canonical, padding.PKCS1v15(), algorithm)).decode()
        return msg


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def alarm_message(
    state: str = "ALARM", shard: str = "eu-1", name: str = "aegis-prod-ShardDown-eu-1"
) -> dict[str, str]:
    alarm = {
        "AlarmName": name,
        "AlarmDescription": f"shard {shard} stopped ticking",
        "AWSAccountId": "123456789012",
        "NewStateValue": state,
        "NewStateReason": "Threshold Crossed: 1 datapoint [0.0] was less than the threshold (1.0).",
        "StateChangeTime": "2026-12-06T01:00:00.000+0000",
        "Region": "EU (Ireland)",
        "AlarmArn": f"arn:aws:cloudwatch:{REGION}:123456789012:alarm:{name}",
        "OldStateValue": "OK",
        "Trigger": {
            "MetricName": "ShardUp",
            "Namespace": "Aegis/World",
            "Statistic": "MINIMUM",
            "Dimensions": [{"name": "shard", "value": shard}],
            "Threshold": 1.0,
            "ComparisonOperator": "LessThanThreshold",
        },
    }
    return {
        "Type": "Notification",
        "MessageId": f"m-{state}-{shard}",
        "TopicArn": TOPIC,
        "Subject": f'{state}: "{name}" in EU (Ireland)',
        "Message": json.dumps(alarm),
        "Timestamp": _now(),
        "UnsubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe",
    }


def subscription(subscribe_url: str = SUBSCRIBE_URL) -> dict[str, str]:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": "sub-1",
        "Token": "tok",
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": subscribe_url,
        "Timestamp": _now(),
    }


@pytest.fixture
def aws() -> FakeAws:
    return FakeAws()


@pytest.fixture
def sns_receiver(aegis_home: AegisPaths, aws: FakeAws) -> Iterator[Receiver]:
    r = start_receiver(aegis_home, verifier=SnsVerifier(fetch=aws.fetch))
    try:
        yield r
    finally:
        stop_receiver(r)


def _post(r: Receiver, msg: dict[str, str], auth: str | None = "bearer") -> httpx.Response:
    headers = {"x-amz-sns-message-type": msg["Type"], "Content-Type": "text/plain; charset=UTF-8"}
    if auth == "bearer":
        headers["Authorization"] = f"Bearer {r.token('alerts')}"
    elif auth == "basic":  # what SNS sends for https://aegis:TOKEN@host/v1/alerts/sns
        headers["Authorization"] = "Basic " + base64.b64encode(f"aegis:{r.token('alerts')}".encode()).decode()
    return httpx.post(r.url + SNS, content=json.dumps(msg), headers=headers, timeout=10)


def test_subscription_confirmation_visits_the_pinned_subscribe_url(
    sns_receiver: Receiver, aws: FakeAws
) -> None:
    resp = _post(sns_receiver, aws.sign(subscription()), auth="basic")
    assert resp.status_code == 200, resp.text
    assert resp.json()["confirmed"] == TOPIC
    assert aws.fetched == [CERT_URL, SUBSCRIBE_URL]


def test_a_subscribe_url_off_aws_is_never_visited(sns_receiver: Receiver, aws: FakeAws) -> None:
    resp = _post(sns_receiver, aws.sign(subscription("https://evil.example/confirm")))
    assert resp.status_code == 400 and resp.json()["details"]["reason"] == "subscription"
    assert "https://evil.example/confirm" not in aws.fetched


@pytest.mark.parametrize("version", ["1", "2"])
def test_signed_alarm_then_ok_is_one_alert_firing_then_resolved(
    sns_receiver: Receiver, aws: FakeAws, version: str
) -> None:
    resp = _post(sns_receiver, aws.sign(alarm_message("ALARM"), version))
    assert resp.status_code == 200, resp.text
    (entry,) = sns_receiver.inbox.firing("eu-1")
    a = entry.alert
    assert (a.source, a.name, a.target, a.threshold, entry.known) == (
        "cloudwatch",
        "ShardDown",
        "eu-1",
        1.0,
        True,
    )
    assert a.labels["region"] == REGION and a.summary == "shard eu-1 stopped ticking"
    resp = _post(sns_receiver, aws.sign(alarm_message("OK"), version), auth="basic")
    assert resp.status_code == 200
    (entry,) = sns_receiver.inbox.all()
    assert entry.status == "resolved" and entry.count == 2
    # INSUFFICIENT_DATA is acknowledged and stores no alert
    resp = _post(sns_receiver, aws.sign(alarm_message("INSUFFICIENT_DATA"), version))
    assert resp.status_code == 200 and resp.json()["accepted"] == 0


def test_infrastructure_alarms_map_to_known_names(sns_receiver: Receiver, aws: FakeAws) -> None:
    msg = alarm_message(name="aegis-prod-replica-lag-eu-west-1-3f2a")
    alarm = json.loads(msg["Message"])
    alarm["Trigger"] = {
        "MetricName": "AuroraGlobalDBReplicationLag",
        "Dimensions": [{"name": "DBClusterIdentifier", "value": "aegis-eu"}],
        "Threshold": 60000,
    }
    msg["Message"] = json.dumps(alarm)
    assert _post(sns_receiver, aws.sign(msg)).status_code == 200
    (entry,) = sns_receiver.inbox.firing()
    assert (entry.alert.name, entry.alert.target, entry.known) == ("ReplicaLagHigh", "aegis-eu", True)


def _refused(r: Receiver, resp: httpx.Response, status: int, reason: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["details"]["reason"] == reason
    assert r.inbox.latest_seq() == 0 and sqlite_rows(r.home.alerts_db, "deliveries") == 0


def test_altered_message_is_refused(sns_receiver: Receiver, aws: FakeAws) -> None:
    msg = aws.sign(alarm_message())
    msg["Message"] = msg["Message"].replace("eu-1", "eu-2")
    _refused(sns_receiver, _post(sns_receiver, msg), 403, "signature")


def test_a_certificate_off_aws_is_refused_before_it_is_fetched(sns_receiver: Receiver, aws: FakeAws) -> None:
    for url in (
        "https://evil.example/cert.pem",
        f"http://sns.{REGION}.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com/cert.pem",  # another region than the topic's
        f"https://sns.{REGION}.amazonaws.com.evil.example/cert.pem",
    ):
        msg = aws.sign({**alarm_message(), "SigningCertURL": url})
        _refused(sns_receiver, _post(sns_receiver, msg), 403, "signature")
    assert aws.fetched == []


def test_a_stale_message_is_a_replay(sns_receiver: Receiver, aws: FakeAws) -> None:
    old = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    _refused(
        sns_receiver, _post(sns_receiver, aws.sign({**alarm_message(), "Timestamp": old})), 403, "signature"
    )


def test_a_key_that_is_not_the_certificates_is_refused(sns_receiver: Receiver, aws: FakeAws) -> None:
    other = FakeAws()
    _refused(sns_receiver, _post(sns_receiver, other.sign(alarm_message())), 403, "signature")


def test_unauthenticated_and_malformed_sns_posts(sns_receiver: Receiver, aws: FakeAws) -> None:
    resp = _post(sns_receiver, aws.sign(alarm_message()), auth=None)
    assert resp.status_code == 401
    bad = aws.sign(alarm_message())
    del bad["TopicArn"]
    _refused(sns_receiver, _post(sns_receiver, bad), 400, "invalid")
    not_alarm = aws.sign({**alarm_message(), "Message": "hello"})
    _refused(sns_receiver, _post(sns_receiver, not_alarm), 400, "invalid")
    assert sqlite_rows(sns_receiver.home.alerts_db, "alerts") == 0


def test_skipping_verification_is_local_only(aegis_home: AegisPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    r = start_receiver(aegis_home, sns_skip_verify=True)
    try:
        unsigned = {**alarm_message(), "SignatureVersion": "1", "Signature": "bm90IHNpZ25lZA==",
                    "SigningCertURL": "https://evil.example/cert.pem"}  # fmt: skip
        assert _post(r, unsigned).status_code == 200  # accepted unsigned: local testing only
        assert [e.alert.name for e in r.inbox.firing("eu-1")] == ["ShardDown"]
        assert _post(r, unsigned, auth=None).status_code == 401  # the token is still required
        monkeypatch.setenv("AEGIS_PROFILE", "prod")
        with pytest.raises(ValueError, match="cannot be skipped"):
            create_app(r.inbox, r.store, sns_skip_verify=True, aegis_paths=aegis_home)
    finally:
        stop_receiver(r)
