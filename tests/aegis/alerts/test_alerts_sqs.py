"""Production alarms from SQS, one receive at a time (moto in server mode, over real HTTP): raw and
SNS-wrapped CloudWatch alarms are stored in the inbox before they are deleted from the queue; a
message that is not an alarm stays on the queue (for its dead-letter queue); a repeat after a crash
is one alert counted twice; a batch is stored in state-change order; a delete SQS refuses is
reported, and the message comes back rather than being lost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from aegis.alerts.inbox import AlertInbox
from aegis.alerts.sqs import pull_once
from tests.moto_support import moto_environment

REGION = "eu-west-1"


def _alarm(
    state: str = "ALARM",
    name: str = "aegis-prod-replica-lag-eu-west-1-3f2a",
    at: str = "2026-12-06T01:00:00.000+0000",
) -> dict[str, Any]:
    return {
        "AlarmName": name,
        "AlarmArn": f"arn:aws:cloudwatch:{REGION}:123456789012:alarm:{name}",
        "NewStateValue": state,
        "NewStateReason": "Threshold Crossed",
        "StateChangeTime": at,
        "Trigger": {
            "MetricName": "AuroraGlobalDBReplicationLag",
            "Dimensions": [{"name": "DBClusterIdentifier", "value": "aegis-eu"}],
            "Threshold": 60000,
        },
    }


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    with moto_environment(monkeypatch, REGION):
        client = boto3.client("sqs", region_name=REGION)
        url = client.create_queue(QueueName="aegis-alerts")["QueueUrl"]
        yield client, url


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[AlertInbox]:
    box = AlertInbox(f"sqlite:///{tmp_path / 'alerts.db'}")
    try:
        yield box
    finally:
        box.close()


def _left(client: Any, url: str) -> int:
    attrs = client.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_alarms_move_from_the_queue_to_the_inbox(sqs: tuple[Any, str], inbox: AlertInbox) -> None:
    client, url = sqs
    client.send_message(QueueUrl=url, MessageBody=json.dumps(_alarm()))  # raw delivery
    envelope = {
        "Type": "Notification",
        "MessageId": "m2",
        "Message": json.dumps(_alarm("OK", "aegis-prod-ShardDown-eu-1")),
    }
    client.send_message(QueueUrl=url, MessageBody=json.dumps(envelope))  # SNS-wrapped
    bad_id = client.send_message(QueueUrl=url, MessageBody="not an alarm")["MessageId"]
    result = pull_once(client, url, inbox, REGION, wait_s=0)
    assert (result.received, result.stored, result.deleted, result.skipped) == (3, 2, 2, [bad_id])
    assert result.receives == 1 and result.undeleted == []
    names = {(e.alert.name, e.status, e.alert.target) for e in inbox.all()}
    assert names == {("ReplicaLagHigh", "firing", "aegis-eu"), ("ShardDown", "resolved", "aegis-eu")}
    assert all(e.alert.labels["region"] == REGION for e in inbox.all())
    assert _left(client, url) == 1  # only the bad message stays (in flight, then back, then the DLQ)


def test_a_redelivered_alarm_is_one_alert(sqs: tuple[Any, str], inbox: AlertInbox) -> None:
    client, url = sqs
    for _ in range(2):  # as if a puller crashed after the commit and before the delete
        client.send_message(QueueUrl=url, MessageBody=json.dumps(_alarm()))
        pull_once(client, url, inbox, REGION, wait_s=0)
    (entry,) = inbox.all()
    assert entry.count == 2 and entry.status == "firing" and _left(client, url) == 0


def test_a_batch_is_stored_in_state_change_order(sqs: tuple[Any, str], inbox: AlertInbox) -> None:
    """A standard queue may hand over the OK before the ALARM it ends: the alarm must end resolved."""
    client, url = sqs
    client.send_message(QueueUrl=url, MessageBody=json.dumps(_alarm("OK", at="2026-12-06T01:05:00.000+0000")))
    client.send_message(
        QueueUrl=url, MessageBody=json.dumps(_alarm("ALARM", at="2026-12-06T01:00:00.000+0000"))
    )
    result = pull_once(client, url, inbox, REGION, wait_s=0)
    assert (result.received, result.stored) == (2, 2)
    (entry,) = inbox.all()
    assert entry.status == "resolved" and entry.count == 2


class _RefusingOneDelete:
    """The real client, except that the first entry of each delete batch carries a stale receipt."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def receive_message(self, **kwargs: Any) -> Any:
        return self._client.receive_message(**kwargs)

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> Any:
        entries = [dict(e) for e in Entries]
        entries[0]["ReceiptHandle"] = "stale-" + entries[0]["ReceiptHandle"]
        return self._client.delete_message_batch(QueueUrl=QueueUrl, Entries=entries)


def test_a_refused_delete_is_reported_and_the_message_stays(sqs: tuple[Any, str], inbox: AlertInbox) -> None:
    client, url = sqs
    first = client.send_message(QueueUrl=url, MessageBody=json.dumps(_alarm()))["MessageId"]
    client.send_message(QueueUrl=url, MessageBody=json.dumps(_alarm(name="aegis-prod-ShardDown-eu-1")))
    result = pull_once(_RefusingOneDelete(client), url, inbox, REGION, wait_s=0)
    assert (result.received, result.stored, result.deleted, result.undeleted) == (2, 2, 1, [first])
    assert len(inbox.all()) == 2 and _left(client, url) == 1  # stored, and still on the queue
