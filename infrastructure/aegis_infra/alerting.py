"""Alerting: CloudWatch alarms -> SNS (per region) -> one SQS queue the healing sensor reads.

CloudWatch can only notify a topic in its own region, so each region has a
KMS-encrypted topic, and all topics deliver (raw) into one queue in the control
region, with a dead-letter queue for messages the sensor fails on repeatedly.
The queue accepts messages only from these topics.

Alarms: Aurora global replica lag (per secondary cluster; the RPO signal),
Firehose delivery failures and freshness (the lake's RPO signal), and GPU node
health (EC2 status checks aggregated per GPU auto scaling group).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from aegis_infra.common import child, policy_document, tags
from aegis_infra.data_plane import REPLICATOR_LAG_THRESHOLD_MS

# Alarm when a secondary lags by a minute: far inside RPO 5 minutes, time to act.
REPLICA_LAG_THRESHOLD_MS = 60_000
# Firehose buffers 300 s; data older than 600 s in the stream means delivery is stuck.
FIREHOSE_FRESHNESS_THRESHOLD_S = 600
QUEUE_RETENTION_S = 4 * 24 * 3600
QUEUE_VISIBILITY_S = 120
MAX_RECEIVES = 5


@dataclass
class AlarmTargets:
    """What to watch, per region."""

    replica_clusters: dict[str, pulumi.Input[str]] = field(default_factory=dict)  # region -> cluster id
    firehose: tuple[str, pulumi.Input[str]] | None = None  # (region, delivery stream name)
    stream_replicator: tuple[str, pulumi.Input[str]] | None = None  # (region, Lambda function name)
    gpu_asgs: dict[str, list[tuple[str, pulumi.Input[str]]]] = field(
        default_factory=dict
    )  # region -> [(pool, asg)]


@dataclass(frozen=True)
class AlertingArgs:
    env: str
    queue_region: str
    regions: list[str]
    kms_key_arns: dict[str, pulumi.Input[str]]
    targets: AlarmTargets


class Alerting(pulumi.ComponentResource):
    queue: aws.sqs.Queue
    topics: dict[str, aws.sns.Topic]

    def __init__(
        self,
        name: str,
        args: AlertingArgs,
        providers: dict[str, aws.Provider],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("aegis:infra:Alerting", name, None, opts)
        env = args.env
        qo = child(self, providers[args.queue_region])
        self.dlq = aws.sqs.Queue(
            f"{name}-alerts-dlq",
            message_retention_seconds=14 * 24 * 3600,
            sqs_managed_sse_enabled=True,
            tags=tags(env, "alerting"),
            opts=qo,
        )
        self.queue = aws.sqs.Queue(
            f"{name}-alerts",
            message_retention_seconds=QUEUE_RETENTION_S,
            visibility_timeout_seconds=QUEUE_VISIBILITY_S,
            receive_wait_time_seconds=20,
            sqs_managed_sse_enabled=True,
            redrive_policy=pulumi.Output.json_dumps(
                {"deadLetterTargetArn": self.dlq.arn, "maxReceiveCount": MAX_RECEIVES}
            ),
            tags=tags(env, "alerting"),
            opts=qo,
        )
        self.topics = {}
        for region in args.regions:
            self.topics[region] = aws.sns.Topic(
                f"{name}-alarms-{region}",
                kms_master_key_id=args.kms_key_arns[region],
                tags=tags(env, "alerting"),
                opts=child(self, providers[region]),
            )
        topic_arns = [t.arn for t in self.topics.values()]
        aws.sqs.QueuePolicy(
            f"{name}-alerts-policy",
            queue_url=self.queue.url,
            policy=pulumi.Output.all(self.queue.arn, *topic_arns).apply(
                lambda a: policy_document(
                    [
                        {
                            "Sid": "OnlyAegisAlarmTopics",
                            "Effect": "Allow",
                            "Principal": {"Service": "sns.amazonaws.com"},
                            "Action": "sqs:SendMessage",
                            "Resource": a[0],
                            "Condition": {"ArnEquals": {"aws:SourceArn": list(a[1:])}},
                        }
                    ]
                )
            ),
            opts=qo,
        )
        for region, topic in self.topics.items():
            aws.sns.TopicSubscription(
                f"{name}-to-queue-{region}",
                topic=topic.arn,
                protocol="sqs",
                endpoint=self.queue.arn,
                raw_message_delivery=True,
                opts=child(self, providers[region]),
            )
        self._alarms(name, args, providers)
        self.register_outputs({"queueUrl": self.queue.url})

    def _alarm(
        self, name: str, region: str, providers: dict[str, aws.Provider], env: str, **kw: object
    ) -> aws.cloudwatch.MetricAlarm:
        topic = self.topics[region].arn
        return aws.cloudwatch.MetricAlarm(
            name,
            alarm_actions=[topic],
            ok_actions=[topic],
            tags=tags(env, "alerting"),
            opts=child(self, providers[region]),
            **kw,  # type: ignore[arg-type]
        )

    def _alarms(self, name: str, args: AlertingArgs, providers: dict[str, aws.Provider]) -> None:
        t = args.targets
        self._replica_lag_alarms(name, args.env, t, providers)
        self._firehose_alarms(name, args.env, t, providers)
        self._stream_replicator_alarm(name, args.env, t, providers)
        self._gpu_health_alarms(name, args.env, t, providers)

    def _replica_lag_alarms(
        self, name: str, env: str, t: AlarmTargets, providers: dict[str, aws.Provider]
    ) -> None:
        """Aurora global replica lag, per secondary cluster: the database's RPO signal."""
        for region, cluster_id in t.replica_clusters.items():
            self._alarm(
                f"{name}-replica-lag-{region}",
                region,
                providers,
                env,
                alarm_description=f"Aurora global replica lag in {region} above {REPLICA_LAG_THRESHOLD_MS} ms (RPO at risk)",
                namespace="AWS/RDS",
                metric_name="AuroraGlobalDBReplicationLag",
                dimensions={"DBClusterIdentifier": cluster_id},
                statistic="Maximum",
                period=60,
                evaluation_periods=3,
                threshold=REPLICA_LAG_THRESHOLD_MS,
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="breaching",
            )

    def _firehose_alarms(
        self, name: str, env: str, t: AlarmTargets, providers: dict[str, aws.Provider]
    ) -> None:
        """Firehose delivery failures and freshness: the lake's RPO signal."""
        if t.firehose is None:
            return
        region, stream = t.firehose
        self._alarm(
            f"{name}-firehose-delivery",
            region,
            providers,
            env,
            alarm_description="Firehose failed to deliver telemetry to S3 (lake RPO at risk)",
            namespace="AWS/Firehose",
            metric_name="DeliveryToS3.Success",
            dimensions={"DeliveryStreamName": stream},
            statistic="Minimum",
            period=300,
            evaluation_periods=1,
            threshold=1,
            comparison_operator="LessThanThreshold",
            treat_missing_data="notBreaching",
        )
        self._alarm(
            f"{name}-firehose-freshness",
            region,
            providers,
            env,
            alarm_description=f"Oldest undelivered telemetry older than {FIREHOSE_FRESHNESS_THRESHOLD_S} s",
            namespace="AWS/Firehose",
            metric_name="DeliveryToS3.DataFreshness",
            dimensions={"DeliveryStreamName": stream},
            statistic="Maximum",
            period=300,
            evaluation_periods=1,
            threshold=FIREHOSE_FRESHNESS_THRESHOLD_S,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
        )

    def _stream_replicator_alarm(
        self, name: str, env: str, t: AlarmTargets, providers: dict[str, aws.Provider]
    ) -> None:
        """The telemetry stream copy's lag (the replicator's ``IteratorAge``): telemetry's RPO signal."""
        if t.stream_replicator is None:
            return
        region, function = t.stream_replicator
        self._alarm(
            f"{name}-stream-replica-lag",
            region,
            providers,
            env,
            alarm_description=(
                f"Telemetry stream copy more than {REPLICATOR_LAG_THRESHOLD_MS} ms behind (telemetry RPO at risk)"
            ),
            namespace="AWS/Lambda",
            metric_name="IteratorAge",
            dimensions={"FunctionName": function},
            statistic="Maximum",
            period=60,
            evaluation_periods=2,
            threshold=REPLICATOR_LAG_THRESHOLD_MS,
            comparison_operator="GreaterThanThreshold",
            # No traffic, no age: quiet; a replicator that stopped reading shows a growing age.
            treat_missing_data="notBreaching",
        )

    def _gpu_health_alarms(
        self, name: str, env: str, t: AlarmTargets, providers: dict[str, aws.Provider]
    ) -> None:
        """EC2 status checks aggregated per GPU auto scaling group."""
        for region, pools in t.gpu_asgs.items():
            for pool, asg in pools:
                self._alarm(
                    f"{name}-gpu-health-{region}-{pool}",
                    region,
                    providers,
                    env,
                    alarm_description=f"GPU node of pool {pool} in {region} failed EC2 status checks",
                    namespace="AWS/EC2",
                    metric_name="StatusCheckFailed",
                    dimensions={"AutoScalingGroupName": asg},
                    statistic="Maximum",
                    period=60,
                    evaluation_periods=2,
                    threshold=1,
                    comparison_operator="GreaterThanOrEqualToThreshold",
                    # A pool scaled to zero reports nothing, and that is healthy.
                    treat_missing_data="notBreaching",
                )
