"""Production alarms from the SQS queue into the inbox: one receive, stored, then deleted.

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

:func:`pull_once` is one receive; :class:`aegis.alerts.source.SqsAlertSource`
loops it under a deadline for the healing sensor and ``aegis alerts pull-sqs``.
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
    """What one receive (or a drain of several) did; every count is of SQS messages but ``stored``."""

    received: int = 0
    stored: int = 0  # alerts committed to the inbox
    deleted: int = 0  # messages deleted after that commit
    skipped: list[str] = field(default_factory=list)  # message ids left for the dead-letter queue
    undeleted: list[str] = field(default_factory=list)  # stored, but SQS refused the delete: redelivered
    receives: int = 0  # ReceiveMessage calls made
    stopped: str = ""  # why a drain stopped: "empty", "max_messages" or "deadline"


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
    client: Any,
    queue_url: str,
    inbox: AlertInbox,
    region: str,
    wait_s: int = WAIT_S,
    *,
    max_messages: int = MAX_MESSAGES,
    into: PullResult | None = None,
) -> PullResult:
    """Receive up to ``max_messages`` (at most 10), store their alerts in one commit, then delete them.

    ``into`` accumulates over several calls and is updated step by step, so a
    caller that catches an error mid-way still knows what was stored and deleted.
    The batch is stored in state-change order: a standard queue does not keep
    order, and an ``OK`` stored before the ``ALARM`` it ends would leave the alert
    firing.  boto3 errors propagate (nothing is deleted that was not committed).
    """
    result = into if into is not None else PullResult()
    resp = client.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=max(1, min(MAX_MESSAGES, max_messages)),
        WaitTimeSeconds=wait_s,
    )
    result.receives += 1
    messages = resp.get("Messages", [])
    result.received += len(messages)
    alerts: list[Alert] = []
    stored_ids: list[str] = []
    done: list[dict[str, str]] = []
    done_ids: list[str] = []
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
            stored_ids.append(msg["MessageId"])
        done.append({"Id": str(len(done)), "ReceiptHandle": msg["ReceiptHandle"]})
        done_ids.append(msg["MessageId"])
    if alerts:
        alerts.sort(key=lambda a: a.starts_at)  # stable: equal times keep their queue order
        payload = {"source": "sqs", "queue": queue_url, "messages": len(alerts), "message_ids": stored_ids}
        inbox.put(alerts, source_payload=payload)
        result.stored += len(alerts)
    if done:  # only after the commit above
        resp = client.delete_message_batch(QueueUrl=queue_url, Entries=done)
        failed = resp.get("Failed", [])
        for f in failed:  # stored already: a redelivery is counted once more, never lost
            message_id = done_ids[int(f["Id"])]
            log.warning("SQS refused to delete message %s: %s", message_id, f.get("Message", f.get("Code")))
            result.undeleted.append(message_id)
        result.deleted += len(done) - len(failed)
    return result
