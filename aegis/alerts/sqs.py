"""Production alarms from the SQS queue into the inbox (``aegis alerts pull-sqs``).

In production CloudWatch alarms reach Aegis through SNS topics (one per region)
that deliver, raw, into one SQS queue (``infrastructure/aegis_infra/alerting.py``):
the queue is the durable buffer, and only those topics may write to it (its
queue policy), so a message body is the CloudWatch alarm JSON itself.  A
subscription without raw delivery wraps it in the SNS envelope; both are read.

A message is deleted from the queue only after its alert is committed to the
inbox: a crash in between redelivers it, and the inbox's fingerprint dedup
turns the repeat into a count.  A message that is not an alarm is left alone:
after the queue's ``maxReceiveCount`` SQS moves it to the dead-letter queue,
where a person can read it.  Nothing is lost either way.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from aegis.alerts.inbox import AlertInbox
from aegis.alerts.sns import SnsError, alarm_alert, parse_alarm
from aegis.domain import Alert

log = logging.getLogger(__name__)

MAX_MESSAGES = 10  # SQS's maximum per receive
WAIT_S = 20  # long polling, as the queue's receive_wait_time_seconds
ALARM_ARN_REGION = re.compile(r"^arn:aws[a-z-]*:cloudwatch:([a-z0-9-]+):")


@dataclass
class PullResult:
    received: int = 0
    stored: int = 0
    skipped: list[str] = field(default_factory=list)  # message ids left for the dead-letter queue


def message_alert(body: str, default_region: str) -> Alert | None:
    """The alert of one queue message (raw alarm JSON or an SNS envelope); None: no alert to store."""
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise SnsError(f"message body is not JSON: {exc.msg}") from exc
    if isinstance(doc, dict) and doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        doc_text = doc["Message"]
    else:
        doc_text = body
    alarm = parse_alarm(doc_text)
    m = ALARM_ARN_REGION.match(alarm.alarm_arn or "")
    return alarm_alert(alarm, m.group(1) if m else default_region)


def pull_once(
    client: Any, queue_url: str, inbox: AlertInbox, region: str, wait_s: int = WAIT_S
) -> PullResult:
    """Receive up to 10 messages, store their alerts in one commit, then delete them."""
    resp = client.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=MAX_MESSAGES, WaitTimeSeconds=wait_s
    )
    messages = resp.get("Messages", [])
    result = PullResult(received=len(messages))
    alerts: list[Alert] = []
    done: list[dict[str, str]] = []
    for msg in messages:
        try:
            alert = message_alert(msg["Body"], region)
        except (SnsError, ValueError) as exc:
            log.warning(
                "SQS message %s is not a CloudWatch alarm (left for the DLQ): %s", msg["MessageId"], exc
            )
            result.skipped.append(msg["MessageId"])
            continue
        if alert is not None:
            alerts.append(alert)
        done.append({"Id": str(len(done)), "ReceiptHandle": msg["ReceiptHandle"]})
    if alerts:
        inbox.put(alerts, source_payload={"source": "sqs", "queue": queue_url, "messages": len(alerts)})
        result.stored = len(alerts)
    if done:  # only after the commit above
        client.delete_message_batch(QueueUrl=queue_url, Entries=done)
    return result
