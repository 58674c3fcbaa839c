"""The alert receiver: Alertmanager webhooks and CloudWatch alarms (via SNS) into the inbox.

``POST /v1/alerts/alertmanager`` takes Alertmanager's webhook (version 4),
``POST /v1/alerts/sns`` takes what an SNS HTTP(S) subscription posts (the
subscription confirmation, then CloudWatch alarm notifications).  Every caller
needs a token with the ``alerts`` scope (SNS, which cannot send a bearer token,
passes it as the password of HTTP basic auth in the subscription URL).

The contract with senders: a 2xx means the alerts are on disk
(:meth:`AlertInbox.put` commits with ``synchronous=FULL`` before the handler
returns), so a sender that got one may forget them; anything else means
"nothing was stored, retry or fix".  Unauthenticated calls get 401/403, a body
that is not a well-formed webhook gets 400 with the reason, and an alert whose
name Aegis does not know is recorded and answered 200 (``ignored``): a new rule
in Prometheus must never make Alertmanager retry forever or crash the receiver.

``GET /metrics`` (``read`` scope) counts what came in and was refused, the
inbox, and the lake's quarantined batches per shard (read from the ingest
manifest), which the ``TelemetryQuarantineSpike`` rule watches.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aegis.alerts.inbox import AlertInbox, InboxEntry
from aegis.alerts.sns import SnsError, SnsMessage, SnsVerifier, alarm_alert, parse_alarm
from aegis.config import AegisPaths, current_profile, paths
from aegis.domain import Alert, AlertStatus, Severity
from aegis.security.auth import (
    STATE_COUNTER,
    Caller,
    allowed_host_set,
    error_body,
    install_auth,
    refusal_metrics,
    require_scope,
)
from aegis.security.tokens import AuthError, TokenStore

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_ALERTS_PER_CALL = 10_000
MAX_LABEL_CHARS = 1024
ZERO_TIME_PREFIX = "0001-01-01"  # Alertmanager's endsAt of a firing alert
DEFAULT_TARGET = "aegis"
TARGET_LABELS = ("shard", "target", "instance", "job")
ENV_SNS_SKIP_VERIFY = "AEGIS_SNS_SKIP_VERIFY"
MANIFEST_DB = Path("ingest") / "manifest.db"
SHARD_IN_PATH = re.compile(r"shard=([^/\\]+)")
STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


# ------------------------------------------------------------------ the webhook


class AmAlert(BaseModel):
    """One alert of an Alertmanager webhook."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, Annotated[str, Field(max_length=MAX_LABEL_CHARS)]]
    annotations: dict[str, Annotated[str, Field(max_length=8 * MAX_LABEL_CHARS)]] = Field(
        default_factory=dict
    )
    starts_at: datetime = Field(alias="startsAt")
    ends_at: str | None = Field(None, alias="endsAt")
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: str = Field(min_length=1, max_length=128)


class AmWebhook(BaseModel):
    """Alertmanager's webhook payload, version 4."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    group_key: str = Field("", alias="groupKey")
    truncated_alerts: int = Field(0, alias="truncatedAlerts", ge=0)
    alerts: list[AmAlert] = Field(min_length=1, max_length=MAX_ALERTS_PER_CALL)
    external_url: str = Field("", alias="externalURL")


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def _severity(text: str | None) -> Severity:
    try:
        return Severity((text or "").lower())
    except ValueError:
        return Severity.WARNING


def am_alert(a: AmAlert) -> Alert:
    """Alertmanager's alert as Aegis's :class:`Alert`; ``shard`` is the target."""
    name = a.labels.get("alertname", "").strip()
    if not name:
        raise ValueError(f"alert {a.fingerprint} has no alertname label")
    target = next((a.labels[k].strip() for k in TARGET_LABELS if a.labels.get(k, "").strip()), DEFAULT_TARGET)
    ends = None
    if a.status == "resolved" and a.ends_at and not a.ends_at.startswith(ZERO_TIME_PREFIX):
        ends = datetime.fromisoformat(a.ends_at.replace("Z", "+00:00"))
    summary = a.annotations.get("summary") or a.annotations.get("description") or ""
    return Alert(
        source="alertmanager",
        name=name[:200],
        severity=_severity(a.labels.get("severity")),
        status=AlertStatus(a.status),
        target=target[:200],
        labels=dict(a.labels),
        value=_float(a.annotations.get("value")),
        threshold=_float(a.annotations.get("threshold")),
        starts_at=a.starts_at if a.starts_at.tzinfo else a.starts_at.replace(tzinfo=UTC),
        summary=summary[:2000],
        fingerprint=a.fingerprint,
        ends_at=ends,
    )


# --------------------------------------------------------------------- metrics


class _LakeAndInbox:
    """A Prometheus collector over the inbox counts and the lake's quarantined batches."""

    def __init__(self, inbox: AlertInbox, aegis_paths: AegisPaths) -> None:
        self.inbox = inbox
        self.manifest = aegis_paths.lake / MANIFEST_DB

    def quarantined(self) -> dict[str, tuple[int, int]]:
        """``{shard: (batches, rows)}`` quarantined so far, from the ingest manifest (read-only)."""
        if not self.manifest.is_file():
            return {}
        out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        con = sqlite3.connect(f"file:{self.manifest}?mode=ro", uri=True, timeout=5)
        try:
            rows = con.execute(
                "select source_path, quarantined_rows from batches "
                "where status in ('partial', 'rejected') and (status = 'rejected' or quarantined_rows > 0)"
            ).fetchall()
        except sqlite3.Error as exc:
            log.warning("cannot read the ingest manifest %s: %s", self.manifest, exc)
            return {}
        finally:
            con.close()
        for path, qrows in rows:
            m = SHARD_IN_PATH.search(str(path))
            entry = out[m.group(1) if m else "unknown"]
            entry[0] += 1
            entry[1] += int(qrows or 0)
        return {k: (v[0], v[1]) for k, v in out.items()}

    def collect(self) -> Iterator[Any]:
        stats = self.inbox.stats()
        g = GaugeMetricFamily("aegis_alerts_inbox", "Alerts in the inbox by status", labels=["status"])
        g.add_metric(["firing"], stats.firing)
        g.add_metric(["resolved"], stats.resolved)
        g.add_metric(["unknown"], stats.unknown)
        yield g
        yield GaugeMetricFamily(
            "aegis_alerts_inbox_seq", "Latest change sequence of the inbox", value=stats.latest_seq
        )
        batches = CounterMetricFamily(
            "aegis_lake_quarantined_batches",
            "Telemetry batches with quarantined rows (or rejected whole), by shard, from the ingest manifest",
            labels=["shard"],
        )
        rows = CounterMetricFamily(
            "aegis_lake_quarantined_rows", "Telemetry rows quarantined, by shard", labels=["shard"]
        )
        for shard, (n_batches, n_rows) in sorted(self.quarantined().items()):
            batches.add_metric([shard], n_batches)
            rows.add_metric([shard], n_rows)
        yield batches
        yield rows


class ReceiverMetrics:
    def __init__(self, inbox: AlertInbox, aegis_paths: AegisPaths) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "aegis_alerts_received",
            "Alerts stored, by source, status and whether Aegis knows the name",
            ["source", "status", "known"],
            registry=r,
        )
        self.rejected = Counter(
            "aegis_alerts_rejected",
            "Deliveries refused with 4xx (nothing stored), by reason",
            ["reason"],
            registry=r,
        )
        self.store_seconds = Histogram(
            "aegis_alerts_store_seconds",
            "Time to store one delivery durably (commit with fsync) before the 2xx",
            buckets=STORE_BUCKETS,
            registry=r,
        )
        r.register(_LakeAndInbox(inbox, aegis_paths))

    def render(self) -> bytes:
        return generate_latest(self.registry)


# ------------------------------------------------------------------------ app


class BadDelivery(Exception):
    """A delivery refused with 400: nothing stored."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _bad(reason: str, message: str) -> JSONResponse:
    return JSONResponse(
        status_code=400,
        content={"error": "bad_request", "message": message, "details": {"reason": reason}},
    )


async def _json_body(request: Request) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadDelivery("too_large", f"body larger than {MAX_BODY_BYTES} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BadDelivery("too_large", f"body larger than {MAX_BODY_BYTES} bytes")
    if not body:
        raise BadDelivery("empty", "empty body: expected a JSON document")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadDelivery("not_json", f"body is not JSON: {exc}") from exc


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg')}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "; ".join(parts) + more


def _entries_body(entries: list[InboxEntry]) -> dict[str, Any]:
    ignored = sorted({e.alert.name for e in entries if not e.known})
    return {
        "accepted": len(entries),
        "ignored_unknown": ignored,
        "entries": [
            {
                "seq": e.seq,
                "fingerprint": e.fingerprint,
                "status": e.status,
                "count": e.count,
                "known": e.known,
            }
            for e in entries
        ],
    }


def sns_token(request: Request) -> str | None:
    """The token of an SNS delivery: Bearer, or the password of HTTP basic auth (what SNS can send)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            user_pass = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return "\x00"
        return user_pass.partition(":")[2] or "\x00"
    return "\x00" if header else None


def sns_caller(request: Request) -> Caller:
    """The ``alerts`` scope for SNS deliveries: a bearer token or the basic-auth password."""
    address = request.client.host if request.client else "unknown"
    store_ = request.app.state.aegis_get_store()
    try:
        info = store_.verify(sns_token(request), "alerts", address, path=request.url.path)
    except AuthError as exc:
        getattr(request.app.state, STATE_COUNTER).add(exc.reason)
        raise
    return Caller(token_id=info.id, scopes=info.scopes, address=address)


# Module level: FastAPI resolves the string annotations of the handlers against module globals.
ALERTS_CALLER = require_scope("alerts")
READ_CALLER = require_scope("read")
STATE_RECEIVER = "aegis_alert_receiver"


@dataclass
class ReceiverState:
    """What the handlers share: set on the app by :func:`create_app`, handed to them by :func:`get_receiver`."""

    inbox: AlertInbox
    metrics: ReceiverMetrics
    sns: SnsVerifier
    sns_skip_verify: bool

    def store(self, alerts: list[Alert], payload: dict[str, Any]) -> list[InboxEntry]:
        """Put ``alerts`` into the inbox durably and count them (blocking: call it in the thread pool)."""
        t0 = time.perf_counter()
        entries = self.inbox.put(alerts, source_payload=payload)
        self.metrics.store_seconds.observe(time.perf_counter() - t0)
        for e in entries:
            self.metrics.received.labels(
                source=e.alert.source, status=e.status, known=str(e.known).lower()
            ).inc()
            if not e.known:
                log.warning(
                    "alert %r (target %s) is not one Aegis acts on: recorded, ignored",
                    e.alert.name,
                    e.alert.target,
                )
        return entries


async def get_receiver(request: Request) -> ReceiverState:
    """The app's :class:`ReceiverState` (async: resolved on the event loop, no thread-pool hop)."""
    state: ReceiverState = getattr(request.app.state, STATE_RECEIVER)
    return state


Receiver = Annotated[ReceiverState, Depends(get_receiver)]


def _bad_delivery(request: Request, exc: BadDelivery) -> JSONResponse:
    """A refused delivery: counted by reason, answered 400 with the reason."""
    state: ReceiverState = getattr(request.app.state, STATE_RECEIVER)
    state.metrics.rejected.labels(reason=exc.reason).inc()
    return _bad(exc.reason, exc.message)


def _sns_message(doc: Any, header_type: str | None) -> SnsMessage:
    """The SNS message in ``doc``; its ``Type`` must agree with the ``x-amz-sns-message-type`` header."""
    if not isinstance(doc, dict):
        raise BadDelivery("invalid", "not an SNS message (not a JSON object)")
    try:
        msg = SnsMessage.parse(doc)
    except ValidationError as exc:
        raise BadDelivery("invalid", f"not an SNS message: {_validation_message(exc)}") from exc
    if header_type and header_type != msg.type:
        raise BadDelivery("invalid", f"x-amz-sns-message-type {header_type!r} differs from Type {msg.type!r}")
    return msg


# Handlers carry no docstrings on purpose: they would become the OpenAPI descriptions.
router = APIRouter(tags=["alerts"])


@router.get("/v1/health")
def health(receiver: Receiver) -> dict[str, Any]:
    return {"status": "ok", "latest_seq": receiver.inbox.latest_seq()}


@router.get("/metrics", response_class=Response, dependencies=[Depends(READ_CALLER)])
def prometheus_metrics(request: Request, receiver: Receiver) -> Response:
    body = receiver.metrics.render() + refusal_metrics(request.app).encode()
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)


@router.post("/v1/alerts/alertmanager")
async def alertmanager(
    request: Request, caller: Annotated[Caller, Depends(ALERTS_CALLER)], receiver: Receiver
) -> JSONResponse:
    doc = await _json_body(request)
    try:
        hook = AmWebhook.model_validate(doc)
        alerts = [am_alert(a) for a in hook.alerts]
    except ValidationError as exc:
        raise BadDelivery("invalid", f"not an Alertmanager v4 webhook: {_validation_message(exc)}") from exc
    except ValueError as exc:
        raise BadDelivery("invalid", f"not an Alertmanager v4 webhook: {exc}") from exc
    payload = {"caller": caller.token_id, "webhook": doc}
    entries = await run_in_threadpool(receiver.store, alerts, payload)
    return JSONResponse(_entries_body(entries))


@router.post("/v1/alerts/sns")
async def sns_delivery(
    request: Request, caller: Annotated[Caller, Depends(sns_caller)], receiver: Receiver
) -> JSONResponse:
    doc = await _json_body(request)
    msg = _sns_message(doc, request.headers.get("x-amz-sns-message-type"))
    if not receiver.sns_skip_verify:
        try:
            await run_in_threadpool(receiver.sns.verify, msg)
        except SnsError as exc:
            receiver.metrics.rejected.labels(reason="signature").inc()
            return JSONResponse(status_code=403, content=error_body(403, "signature", str(exc)))
    if msg.type == "SubscriptionConfirmation":
        try:
            url = await run_in_threadpool(receiver.sns.confirm, msg)
        except SnsError as exc:
            raise BadDelivery("subscription", str(exc)) from exc
        log.info("confirmed the SNS subscription to %s", msg.topic_arn)
        return JSONResponse({"confirmed": msg.topic_arn, "subscribe_url": url})
    if msg.type == "UnsubscribeConfirmation":
        log.warning("SNS says the subscription to %s was removed", msg.topic_arn)
        return JSONResponse({"unsubscribed": msg.topic_arn})
    try:
        alarm = parse_alarm(msg.message)
        alert = alarm_alert(alarm, msg.region)
    except (SnsError, ValueError) as exc:
        raise BadDelivery("invalid", str(exc)) from exc
    if alert is None:
        return JSONResponse({"accepted": 0, "ignored_state": alarm.new_state})
    payload = {"caller": caller.token_id, "sns": doc}
    entries = await run_in_threadpool(receiver.store, [alert], payload)
    return JSONResponse(_entries_body(entries))


def create_app(
    inbox: AlertInbox | None = None,
    store: TokenStore | None = None,
    *,
    verifier: SnsVerifier | None = None,
    sns_skip_verify: bool = False,
    bind_host: str = "127.0.0.1",
    allowed_hosts: list[str] | tuple[str, ...] = (),
    aegis_paths: AegisPaths | None = None,
) -> FastAPI:
    """The receiver app. ``sns_skip_verify`` (local only; refused in the prod profile) skips SNS signatures.

    Handlers are this module's :data:`router`; they get the inbox, metrics and
    SNS verifier (:class:`ReceiverState`) and the caller's scope through ``Depends``.
    """
    if sns_skip_verify and current_profile() == "prod":
        raise ValueError("SNS signature verification cannot be skipped in the prod profile")
    if sns_skip_verify:
        log.warning("SNS signature verification is OFF: any caller with an alerts token can post alarms")
    ap = aegis_paths or paths()
    the_inbox = inbox or AlertInbox()
    sns = verifier or SnsVerifier()
    metrics = ReceiverMetrics(the_inbox, ap)
    app = FastAPI(
        title="Aegis alert receiver",
        version="1",
        description="Alertmanager webhooks and CloudWatch alarms (SNS) into Aegis's durable alert inbox.",
    )
    install_auth(app, store, allowed_host_set(bind_host, list(allowed_hosts)))
    app.state.inbox = the_inbox
    app.state.metrics = metrics
    setattr(app.state, STATE_RECEIVER, ReceiverState(the_inbox, metrics, sns, sns_skip_verify))
    app.exception_handler(BadDelivery)(_bad_delivery)
    app.include_router(router)
    return app


def serve(host: str, port: int, sns_skip_verify: bool = False) -> None:
    """Run the receiver with uvicorn until interrupted (``aegis alerts serve``)."""
    import uvicorn

    app = create_app(sns_skip_verify=sns_skip_verify, bind_host=host)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
