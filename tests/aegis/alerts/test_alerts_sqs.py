"""Production alarms from SQS (moto's in-process AWS): raw and SNS-wrapped CloudWatch alarms are
stored in the inbox before they are deleted from the queue; a message that is not an alarm stays
on the queue (for its dead-letter queue); a repeat after a crash is one alert counted twice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from aegis.alerts.inbox import AlertInbox
from aegis.alerts.sqs import pull_once

REGION = "eu-west-1"


def _alarm(state: str = "ALARM", name: str = "aegis-prod-replica-lag-eu-west-1-3f2a") -> dict[str, Any]:
    return {
        "AlarmName": name,
        "AlarmArn": f"arn:aws:cloudwatch:{REGION}:123456789012:alarm:{name}",
        "NewStateValue": state,
        "NewStateReason": "Threshold Crossed",
        "StateChangeTime": "2026-12-06T01:00:00.000+0000",
        "Trigger": {
            "MetricName": "AuroraGlobalDBReplicationLag",
            "Dimensions": [{"name": "DBClusterIdentifier", "value": "aegis-eu"}],
            "Threshold": 60000,
        },
    }


@pytest.fixture
def sqs() -> Iterator[tuple[Any, str]]:
    with mock_aws():
        client = boto3.client("sqs", region_name=REGION)
        url = client.create_queue(QueueName="aegis-alerts")["QueueUrl"]
        yield client, url


def _left(client: Any, url: str) -> int:
    attrs = client.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_alarms_move_from_the_queue_to_the_inbox(sqs: tuple[Any, str], tmp_path: Path) -> None:
    client, url = sqs
    inbox = AlertInbox(f"sqlite:///{tmp_path / 'alerts.db'}")
    client.send_message(QueueUrl=url, MessageBody=json.dumps(_alarm()))  # raw delivery
    envelope = {
        "Type": "Notification",
        "MessageId": "m2",
        "Message": json.dumps(_alarm("OK", "aegis-prod-ShardDown-eu-1")),
    }
    client.send_message(QueueUrl=url, MessageBody=json.dumps(envelope))  # SNS-wrapped
    client.send_message(QueueUrl=url, MessageBody="not an alarm")
    result = pull_once(client, url, inbox, REGION, wait_s=0)
    assert (result.received, result.stored, len(result.skipped)) == (3, 2, 1)
    names = {(e.alert.name, e.status, e.alert.target) for e in inbox.all()}
    assert names == {("ReplicaLagHigh", "firing", "aegis-eu"), ("ShardDown", "resolved", "aegis-eu")}
    assert all(e.alert.labels["region"] == REGION for e in inbox.all())
    assert _left(client, url) == 1  # only the bad message stays (in flight, then back, then the DLQ)


def test_a_redelivered_alarm_is_one_alert(sqs: tuple[Any, str], tmp_path: Path) -> None:
    client, url = sqs
    inbox = AlertInbox(f"sqlite:///{tmp_path / 'alerts.db'}")
    for _ in range(2):  # as if a puller crashed after the commit and before the delete
        client.send_message(QueueUrl=url, MessageBody=json.dumps(_alarm()))
        pull_once(client, url, inbox, REGION, wait_s=0)
    (entry,) = inbox.all()
    assert entry.count == 2 and entry.status == "firing" and _left(client, url) == 0
