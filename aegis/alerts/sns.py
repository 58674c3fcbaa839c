"""Amazon SNS HTTP(S) deliveries: message model, signature verification, CloudWatch alarms.

SNS signs every message it posts (``SignatureVersion`` 1: SHA1withRSA, 2:
SHA256withRSA) over a canonical string of some of its fields, with a
certificate it publishes at ``SigningCertURL``.  A forged message can point that
URL anywhere, so before anything is fetched the URL must be ``https`` on
``sns.<region>.amazonaws.com`` for the region of the message's ``TopicArn``
(AWS's own guidance); the same pin guards the ``SubscribeURL`` a subscription
confirmation asks us to visit, so the receiver never becomes an open proxy.

Fetching is injectable (:class:`SnsVerifier` ``fetch``): tests sign with a
locally generated certificate and serve it through that function; production
uses HTTPS with certificate validation and caches certificates by URL.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import BaseModel, ConfigDict, Field

from aegis.domain import Alert, AlertStatus, Severity

SNS_HOST_RE = re.compile(r"^sns\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
TOPIC_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)*:sns:([a-z0-9-]+):[0-9]{12}:[A-Za-z0-9_.-]{1,256}$")
FETCH_TIMEOUT_S = 5.0
MAX_CERT_BYTES = 64 * 1024
MAX_MESSAGE_AGE = timedelta(hours=1)  # SNS retries for up to an hour; older is a replay
MAX_CLOCK_SKEW = timedelta(minutes=5)
NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
SUBSCRIPTION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")

# CloudWatch alarms of infrastructure/aegis_infra/alerting.py -> the alert names Aegis knows.
CLOUDWATCH_METRIC_ALERTS = {
    "AuroraGlobalDBReplicationLag": "ReplicaLagHigh",
    "DeliveryToS3.Success": "TelemetryDeliveryFailing",
    "DeliveryToS3.DataFreshness": "TelemetryDeliveryStale",
    "StatusCheckFailed": "GpuNodeUnhealthy",
}
SHARD_DIMENSIONS = ("shard", "Shard", "ShardId", "shard_id")


class SnsError(ValueError):
    """A message SNS would not have sent: bad signature, bad URL, stale, malformed."""


class SnsMessage(BaseModel):
    """The JSON body SNS posts to an HTTP(S) endpoint."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    type: Literal["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"] = Field(alias="Type")
    message_id: str = Field(alias="MessageId", min_length=1, max_length=200)
    topic_arn: str = Field(alias="TopicArn", pattern=TOPIC_ARN_RE.pattern)
    message: str = Field(alias="Message", max_length=262_144)
    timestamp: datetime = Field(alias="Timestamp")
    signature_version: Literal["1", "2"] = Field(alias="SignatureVersion")
    signature: str = Field(alias="Signature", min_length=1, max_length=4096)
    signing_cert_url: str = Field(alias="SigningCertURL", max_length=2048)
    subject: str | None = Field(None, alias="Subject")
    subscribe_url: str | None = Field(None, alias="SubscribeURL", max_length=2048)
    token: str | None = Field(None, alias="Token", max_length=2048)

    @property
    def region(self) -> str:
        m = TOPIC_ARN_RE.match(self.topic_arn)
        assert m is not None  # validated by the field pattern
        return m.group(2)

    def canonical(self) -> bytes:
        """The string SNS signs: ``name\\nvalue\\n`` for each signed field present, in order."""
        fields = NOTIFICATION_FIELDS if self.type == "Notification" else SUBSCRIPTION_FIELDS
        raw = self.model_dump(by_alias=True)
        raw["Timestamp"] = self._raw_timestamp
        out = []
        for name in fields:
            value = raw.get(name)
            if value is None:
                if name == "Subject":
                    continue
                raise SnsError(f"the {self.type} lacks {name}")
            out.append(f"{name}\n{value}\n")
        return "".join(out).encode()

    _raw_timestamp: str = ""

    @classmethod
    def parse(cls, body: dict[str, Any]) -> SnsMessage:
        msg = cls.model_validate(body)
        msg._raw_timestamp = str(body.get("Timestamp", ""))  # signed as sent, not as re-rendered
        return msg


def pinned_sns_url(url: str, region: str, what: str) -> str:
    """``url`` if it is https on ``sns.<region>.amazonaws.com``; else :class:`SnsError`."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    m = SNS_HOST_RE.match(host)
    if parts.scheme != "https" or m is None or m.group(1) != region or parts.port not in (None, 443):
        raise SnsError(f"{what} {url[:200]!r} is not https://sns.{region}.amazonaws.com/...: refused")
    if parts.username or parts.password:
        raise SnsError(f"{what} carries credentials: refused")
    return url


def default_fetch(url: str) -> bytes:
    with httpx.Client(timeout=FETCH_TIMEOUT_S, follow_redirects=False, verify=True) as client:
        resp = client.get(url)
        resp.raise_for_status()
        if len(resp.content) > MAX_CERT_BYTES:
            raise SnsError(f"{url}: response larger than {MAX_CERT_BYTES} bytes")
        return resp.content


class SnsVerifier:
    """Checks SNS signatures; ``fetch(url) -> bytes`` gets certificates and visits SubscribeURLs."""

    def __init__(
        self, fetch: Callable[[str], bytes] = default_fetch, now: Callable[[], datetime] | None = None
    ) -> None:
        self.fetch = fetch
        self.now = now or (lambda: datetime.now(UTC))
        self._certs: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def _certificate(self, url: str) -> x509.Certificate:
        with self._lock:
            cached = self._certs.get(url)
        if cached is not None:
            return cached
        try:
            pem = self.fetch(url)
            cert = x509.load_pem_x509_certificate(pem)
        except SnsError:
            raise
        except Exception as exc:
            raise SnsError(f"cannot get the signing certificate {url[:200]!r}: {exc}") from exc
        now = self.now()
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            raise SnsError(f"the signing certificate {url[:200]!r} is not valid now")
        with self._lock:
            self._certs[url] = cert
        return cert

    def verify(self, msg: SnsMessage) -> None:
        """Raise :class:`SnsError` unless SNS signed ``msg`` recently."""
        url = pinned_sns_url(msg.signing_cert_url, msg.region, "SigningCertURL")
        ts = msg.timestamp if msg.timestamp.tzinfo else msg.timestamp.replace(tzinfo=UTC)
        now = self.now()
        if ts > now + MAX_CLOCK_SKEW or now - ts > MAX_MESSAGE_AGE:
            raise SnsError(f"message timestamp {ts.isoformat()} is outside the accepted window (replay?)")
        cert = self._certificate(url)
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsError("the signing certificate does not hold an RSA key")
        try:
            signature = base64.b64decode(msg.signature, validate=True)
        except ValueError as exc:
            raise SnsError("Signature is not base64") from exc
        algorithm = hashes.SHA1() if msg.signature_version == "1" else hashes.SHA256()
        try:
            key.verify(signature, msg.canonical(), padding.PKCS1v15(), algorithm)
        except InvalidSignature as exc:
            raise SnsError("the SNS signature does not verify: forged or altered message") from exc

    def confirm(self, msg: SnsMessage) -> str:
        """Visit the SubscribeURL of a (verified) SubscriptionConfirmation; returns the URL."""
        if not msg.subscribe_url:
            raise SnsError("SubscriptionConfirmation without SubscribeURL")
        url = pinned_sns_url(msg.subscribe_url, msg.region, "SubscribeURL")
        try:
            self.fetch(url)
        except Exception as exc:
            raise SnsError(f"confirming the subscription at {url[:200]!r} failed: {exc}") from exc
        return url


class CloudWatchAlarm(BaseModel):
    """The JSON CloudWatch puts in ``Message`` for an alarm state change (the fields Aegis reads)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    alarm_name: str = Field(alias="AlarmName", min_length=1, max_length=255)
    alarm_description: str | None = Field(None, alias="AlarmDescription")
    alarm_arn: str | None = Field(None, alias="AlarmArn")
    new_state: Literal["ALARM", "OK", "INSUFFICIENT_DATA"] = Field(alias="NewStateValue")
    reason: str = Field("", alias="NewStateReason")
    state_change_time: datetime | None = Field(None, alias="StateChangeTime")
    region: str | None = Field(None, alias="Region")
    trigger: dict[str, Any] = Field(default_factory=dict, alias="Trigger")


def alarm_alert(alarm: CloudWatchAlarm, region: str) -> Alert | None:
    """The :class:`Alert` of a CloudWatch alarm state change; None for INSUFFICIENT_DATA."""
    if alarm.new_state == "INSUFFICIENT_DATA":
        return None
    dims: dict[str, str] = {}
    for d in alarm.trigger.get("Dimensions") or []:
        if isinstance(d, dict) and "name" in d and "value" in d:
            dims[str(d["name"])] = str(d["value"])
    metric = str(alarm.trigger.get("MetricName") or "")
    name = _alert_name(alarm.alarm_name, metric)
    target = next((dims[k] for k in SHARD_DIMENSIONS if dims.get(k)), None)
    target = target or next(iter(dims.values()), None) or region
    identity = alarm.alarm_arn or f"{region}:{alarm.alarm_name}"
    threshold = alarm.trigger.get("Threshold")
    labels = {"alertname": name, "alarm_name": alarm.alarm_name, "region": region, **dims}
    if metric:
        labels["metric"] = metric
    return Alert(
        source="cloudwatch",
        name=name,
        severity=Severity.CRITICAL,
        status=AlertStatus.FIRING if alarm.new_state == "ALARM" else AlertStatus.RESOLVED,
        target=target[:200],
        labels={k[:100]: v[:500] for k, v in labels.items()},
        threshold=float(threshold) if isinstance(threshold, int | float) else None,
        starts_at=alarm.state_change_time or datetime.now(UTC),
        summary=(alarm.alarm_description or alarm.reason or alarm.alarm_name)[:1000],
        fingerprint="cw-" + hashlib.sha256(identity.encode()).hexdigest()[:40],
    )


def _alert_name(alarm_name: str, metric: str) -> str:
    from aegis.alerts.inbox import KNOWN_ALERTS

    for token in re.split(r"[^A-Za-z0-9]+", alarm_name):
        if token in KNOWN_ALERTS:
            return token
    return CLOUDWATCH_METRIC_ALERTS.get(metric, alarm_name[:200])


def parse_alarm(message: str) -> CloudWatchAlarm:
    try:
        doc = json.loads(message)
    except json.JSONDecodeError as exc:
        raise SnsError(f"the SNS Message is not a CloudWatch alarm (not JSON: {exc.msg})") from exc
    if not isinstance(doc, dict):
        raise SnsError("the SNS Message is not a CloudWatch alarm (not a JSON object)")
    try:
        return CloudWatchAlarm.model_validate(doc)
    except ValueError as exc:
        raise SnsError(f"the SNS Message is not a CloudWatch alarm: {exc}") from exc
