"""The alert source the healing sensor drains before it reads the inbox (moto in server mode, over
real HTTP, reached the way production code reaches AWS: boto3 with AWS_ENDPOINT_URL).

CloudWatch alarms published to SNS topics (raw and enveloped delivery) are drained from the queue
into the inbox; a redelivery after a crash between commit and delete is one alert; a message that
is not an alarm is left until SQS moves it to the dead-letter queue; an unreachable endpoint,
missing credentials or a missing queue raise AlertSourceUnavailable and lose nothing; a drain of
many messages stops at its deadline or its message budget with the rest still queued."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from click.testing import CliRunner

from aegis.alerts.inbox import AlertInbox
from aegis.alerts.source import (
    ENV_QUEUE_URL,
    ENV_REGION,
    AlertSourceConfigError,
    AlertSourceUnavailable,
    LocalAlertSource,
    SqsAlertSource,
)
from aegis.cli import cli
from aegis.config import AegisPaths
from tests.moto_support import moto_environment
from tests.support import free_port

REGION = "eu-west-1"
ACCOUNT = "123456789012"


def _alarm(state: str = "ALARM", name: str = "aegis-prod-ShardDown-eu-1") -> str:
    return json.dumps(
        {
            "AlarmName": name,
            "AlarmArn": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}",
            "NewStateValue": state,
            "NewStateReason": "Threshold Crossed",
            "StateChangeTime": "2026-12-06T01:00:00.000+0000",
            "Trigger": {
                "MetricName": "StatusCheckFailed",
                "Dimensions": [{"name": "shard", "value": "eu-1"}],
                "Threshold": 1,
            },
        }
    )


class Aws:
    """The moto server of one test, with clients that reach it through AWS_ENDPOINT_URL."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.sns = boto3.client("sns", region_name=REGION)

    def queue(self, name: str = "aegis-alerts", visibility_s: int = 120, dlq: bool = False) -> str:
        attrs = {"VisibilityTimeout": str(visibility_s)}
        if dlq:
            dlq_url = self.sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
            dlq_arn = self.arn(dlq_url)
            attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})
        return self.sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]

    def arn(self, url: str) -> str:
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

    def counts(self, url: str) -> tuple[int, int]:
        """(visible, in flight) messages on the queue."""
        a = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])

    def send(self, url: str, bodies: list[str]) -> list[str]:
        ids: list[str] = []
        for i in range(0, len(bodies), 10):
            entries = [{"Id": str(j), "MessageBody": b} for j, b in enumerate(bodies[i : i + 10])]
            resp = self.sqs.send_message_batch(QueueUrl=url, Entries=entries)
            assert not resp.get("Failed")
            ids += [s["MessageId"] for s in sorted(resp["Successful"], key=lambda s: int(s["Id"]))]
        return ids


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    with moto_environment(monkeypatch, REGION) as endpoint:
        yield Aws(endpoint)


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[AlertInbox]:
    box = AlertInbox(f"sqlite:///{tmp_path / 'alerts.db'}")
    try:
        yield box
    finally:
        box.close()


def test_alarms_through_sns_raw_and_enveloped_are_drained_into_the_inbox(aws: Aws, inbox: AlertInbox) -> None:
    url = aws.queue()
    for topic, raw in (("alarms-raw", "true"), ("alarms-enveloped", "false")):
        arn = aws.sns.create_topic(Name=topic)["TopicArn"]
        aws.sns.subscribe(
            TopicArn=arn, Protocol="sqs", Endpoint=aws.arn(url), Attributes={"RawMessageDelivery": raw}
        )
    aws.sns.publish(TopicArn=f"arn:aws:sns:{REGION}:{ACCOUNT}:alarms-raw", Message=_alarm())
    lag = _alarm("OK", "aegis-prod-replica-lag").replace("StatusCheckFailed", "AuroraGlobalDBReplicationLag")
    aws.sns.publish(TopicArn=f"arn:aws:sns:{REGION}:{ACCOUNT}:alarms-enveloped", Message=lag)
    bodies = [
        m["Body"]
        for m in aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)[
            "Messages"
        ]
    ]
    assert sorted(json.loads(b).get("Type", "raw") for b in bodies) == ["Notification", "raw"]

    source = SqsAlertSource(url, REGION)
    assert isinstance(source, SqsAlertSource) and source.region == REGION
    assert source.client.meta.endpoint_url == aws.endpoint  # boto3 honours AWS_ENDPOINT_URL itself
    result = source.drain(inbox)
    assert (result.received, result.stored, result.deleted, result.skipped) == (2, 2, 2, [])
    assert result.stopped == "empty"
    got = {(e.alert.name, e.status, e.alert.target, e.alert.source) for e in inbox.all()}
    assert got == {
        ("ShardDown", "firing", "eu-1", "cloudwatch"),
        ("ReplicaLagHigh", "resolved", "eu-1", "cloudwatch"),
    }
    assert aws.counts(url) == (0, 0)


def test_an_explicit_endpoint_url_needs_no_environment(
    aws: Aws, inbox: AlertInbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = aws.queue()
    aws.send(url, [_alarm()])
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert SqsAlertSource(url, REGION).client.meta.endpoint_url == f"https://sqs.{REGION}.amazonaws.com"
    result = SqsAlertSource(url, REGION, endpoint_url=aws.endpoint).drain(inbox)
    assert (result.stored, result.deleted) == (1, 1) and [e.alert.name for e in inbox.all()] == ["ShardDown"]


def test_a_crash_between_commit_and_delete_redelivers_one_alert(
    aws: Aws, inbox: AlertInbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = aws.queue(visibility_s=1)
    aws.send(url, [_alarm()])
    source = SqsAlertSource(url, REGION)

    def lost_connection(**_: Any) -> Any:
        raise EndpointConnectionError(endpoint_url=aws.endpoint)

    monkeypatch.setattr(source.client, "delete_message_batch", lost_connection)
    with pytest.raises(AlertSourceUnavailable) as err:
        source.drain(inbox)
    assert (err.value.result.stored, err.value.result.deleted) == (1, 0) and err.value.queue_url == url
    assert aws.counts(url) == (0, 1)  # committed, and still on the queue
    time.sleep(1.2)  # the visibility timeout: SQS hands the message out again
    aws.send(url, [_alarm()])  # and CloudWatch repeats itself too
    result = SqsAlertSource(url, REGION).drain(inbox)
    assert (result.received, result.deleted) == (2, 2)
    (entry,) = inbox.all()
    assert entry.count == 3 and entry.status == "firing" and aws.counts(url) == (0, 0)


def test_a_message_that_is_not_an_alarm_stays_for_the_dead_letter_queue(aws: Aws, inbox: AlertInbox) -> None:
    url = aws.queue(visibility_s=1, dlq=True)
    poison, _ = aws.send(url, ['{"hello": "not an alarm"}', _alarm()])
    source = SqsAlertSource(url, REGION)
    result = source.drain(inbox)
    assert (result.received, result.stored, result.deleted, result.skipped) == (2, 1, 1, [poison])
    assert aws.counts(url) == (0, 1)  # not deleted: in flight until its visibility timeout
    time.sleep(1.2)
    assert source.drain(inbox).received == 0  # past maxReceiveCount: SQS moved it on
    (dead,) = aws.sqs.receive_message(QueueUrl=url.replace("aegis-alerts", "aegis-alerts-dlq"))["Messages"]
    assert dead["MessageId"] == poison and dead["Body"] == '{"hello": "not an alarm"}'
    assert [e.alert.name for e in inbox.all()] == ["ShardDown"]


def test_an_unreachable_endpoint_raises_and_loses_nothing(aws: Aws, inbox: AlertInbox) -> None:
    url = aws.queue()
    aws.send(url, [_alarm(name=f"aegis-prod-ShardDown-eu-{i}") for i in range(3)])
    dead = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(AlertSourceUnavailable) as err:
        SqsAlertSource(url, REGION, endpoint_url=dead).drain(inbox)
    elapsed = time.monotonic() - start
    assert url in str(err.value) and "EndpointConnectionError" in err.value.cause
    assert elapsed < 10, f"a dead endpoint took {elapsed:.1f} s"  # connect timeout 2 s, one retry
    assert inbox.all() == [] and aws.counts(url) == (3, 0)
    assert SqsAlertSource(url, REGION).drain(inbox).stored == 3


def test_missing_credentials_or_queue_raise_and_lose_nothing(
    aws: Aws, inbox: AlertInbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = aws.queue()
    aws.send(url, [_alarm()])
    missing = f"{aws.endpoint}/{ACCOUNT}/no-such-queue"
    with pytest.raises(AlertSourceUnavailable, match="no-such-queue") as err:
        SqsAlertSource(missing, REGION).drain(inbox)
    assert "NonExistentQueue" in err.value.cause or "QueueDoesNotExist" in err.value.cause
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(AlertSourceUnavailable, match="NoCredentialsError") as err:
        SqsAlertSource(url, REGION).drain(inbox)
    assert err.value.queue_url == url and inbox.all() == [] and aws.counts(url) == (1, 0)


def test_a_drain_of_many_messages_keeps_to_its_deadline_and_budget(aws: Aws, inbox: AlertInbox) -> None:
    url = aws.queue()
    total = 300
    aws.send(url, [_alarm(name=f"aegis-prod-ShardDown-eu-{i}") for i in range(total)])
    source = SqsAlertSource(url, REGION)

    deadline = 0.5
    start = time.monotonic()
    result = source.drain(inbox, max_messages=1000, deadline_s=deadline)
    elapsed = time.monotonic() - start
    assert result.stopped == "deadline" and 0 < result.received < total
    # no receive starts after the deadline; the one running then finishes (a few tenths of a
    # second on moto under load, bounded by the client's 2 s connect / 5 s read timeouts)
    assert elapsed < deadline + 3.0, f"drain took {elapsed:.2f} s for a {deadline} s deadline"
    assert result.stored == result.deleted == result.received == len(inbox.all())
    assert sum(aws.counts(url)) == total - result.deleted  # the rest is still queued

    one = source.drain(inbox, max_messages=1000, deadline_s=0)  # a deadline already passed: one receive
    assert (one.receives, one.received, one.stopped) == (1, 10, "deadline")
    budget = source.drain(inbox, max_messages=25, deadline_s=60)
    assert (budget.receives, budget.received, budget.stopped) == (3, 25, "max_messages")
    assert len(inbox.all()) == result.stored + 35 and sum(aws.counts(url)) == total - len(inbox.all())


def test_the_local_source_has_nothing_to_pull_and_the_queue_url_names_the_region(inbox: AlertInbox) -> None:
    from assets.resources.healing import HealingResource

    local = HealingResource().alert_source()
    assert isinstance(local, LocalAlertSource)
    assert local.drain(inbox).received == 0 and inbox.stats().deliveries == 0  # the receiver fills it
    # the queue lives in the control region, which a failover moves away from the primary region
    moved = f"https://sqs.us-west-2.amazonaws.com/{ACCOUNT}/aegis-alerts"
    source = HealingResource(alert_queue_url=moved, region="eu-west-1").alert_source()
    assert isinstance(source, SqsAlertSource) and source.region == "us-west-2"
    # a sensor ticking every few seconds reuses one source (and its boto3 client) per queue
    assert HealingResource(alert_queue_url=moved, region="eu-west-1").alert_source() is source
    with pytest.raises(AlertSourceConfigError, match="empty"):
        SqsAlertSource(" ", "eu-west-1")


def test_pull_sqs_once_drains_the_queue_of_the_environment(
    aws: Aws, aegis_home: AegisPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = aws.queue()
    aws.send(url, [_alarm(), "not an alarm"])
    monkeypatch.setenv(ENV_QUEUE_URL, url)
    monkeypatch.setenv(ENV_REGION, REGION)
    out = CliRunner().invoke(cli, ["alerts", "pull-sqs", "--once"])
    assert out.exit_code == 0, out.output
    assert "received 2, stored 1, left 1 for the DLQ" in out.output
    box = AlertInbox()
    try:
        assert [e.alert.name for e in box.all()] == ["ShardDown"]
    finally:
        box.close()
    dead = f"http://127.0.0.1:{free_port()}"
    out = CliRunner().invoke(cli, ["alerts", "pull-sqs", "--once", "--endpoint-url", dead])
    assert out.exit_code == 1 and f"alert queue {url} is unavailable" in out.output
