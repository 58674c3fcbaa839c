"""The data plane: the telemetry lake, the audit bucket, ingestion, Aurora Global Database, backups.

What it buys (docs/infrastructure.md, "Recovery objectives", has the whole story):

* telemetry: shards put JSON events on a KMS-encrypted Kinesis stream; Firehose
  converts them to Parquet against a Glue table of telemetry schema v1 and writes
  them, partitioned by event date/hour/shard, under ``landing/telemetry/`` of a
  versioned, KMS-encrypted bucket that replicates (with Replication Time Control)
  to the lake replica region; a replicator keeps a copy of the stream in that
  region, from which landing objects the replica lacks are re-derived (RPO);
* audit: a bucket with Object Lock in COMPLIANCE mode, for the ledger's witness
  checkpoints; nobody, root included, can delete a locked record before it
  expires; replicated, locked alike, to the replica region;
* state: Aurora PostgreSQL Global Database (Dagster, MLflow, ledger, changesets,
  alert inbox), primary in the primary region and a secondary cluster in every
  other region, managed RPO (``rds.global_db_rpo``), storage encrypted, PITR
  backups, deletion protection;
* AWS Backup: hourly and daily recovery points of Aurora and the audit bucket,
  copied to the replica region's vault.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pyarrow as pa

from aegis.telemetry import SCHEMA_V1, SCHEMA_VERSION
from aegis_infra.common import assume_role_policy, child, policy_document, tags
from aegis_infra.config import AuroraSpec

LANDING_PREFIX = "landing/telemetry/"
FIREHOSE_ERROR_PREFIX = "landing/firehose-errors/"
# Firehose flushes at least every 300 s: the lake's freshness. The RPO does not rest on it: an
# event is durable once on the stream, and the stream is copied to the replica region.
FIREHOSE_BUFFER_SECONDS = 300
FIREHOSE_BUFFER_MIB = 128
# The primary stream keeps 48 h: Firehose (or a replay) can re-read anything not yet in the lake.
KINESIS_RETENTION_HOURS = 48
# The stream's copy in the replica region keeps a week: after losing the primary region,
# landing objects that had not replicated yet are re-derived from it (RPO: the copy's lag).
REPLICA_STREAM_RETENTION_HOURS = 168
# S3 Replication Time Control's bound (99.99% of objects); typical replication takes seconds.
REPLICATION_SLA_MINUTES = 15
# Aurora managed RPO (rds.global_db_rpo): the primary pauses commits rather than let every
# secondary fall further behind than this. Seconds; Aurora's minimum is 20.
GLOBAL_DB_RPO_SECONDS = 60
PARTITION_KEYS = ("date", "hour", "shard")
# jq over the JSON event: the landing layout's partitions come from the event, not arrival time.
PARTITION_QUERY = "{date: .ts[0:10], hour: .ts[11:13], shard: .shard_id}"
GLUE_DATABASE = "aegis_telemetry"
GLUE_TABLE = f"telemetry_v{SCHEMA_VERSION}"
DB_ENGINE = "aurora-postgresql"
DB_MASTER_USER = "aegis_admin"
DB_PORT = 5432
DATABASES = ("dagster", "mlflow", "ledger")
HOURLY_BACKUP_RETENTION_DAYS = 7
DAILY_BACKUP_RETENTION_DAYS = 35

_ARROW_TO_GLUE: dict[pa.DataType, str] = {
    pa.string(): "string",
    pa.int16(): "smallint",
    pa.int32(): "int",
    pa.int64(): "bigint",
    pa.float32(): "float",
    pa.float64(): "double",
}


def glue_columns(schema: pa.Schema = SCHEMA_V1) -> list[dict[str, str]]:
    """Glue/Hive columns for the telemetry schema: the Parquet Firehose writes is schema v1."""
    cols = []
    for f in schema:
        if pa.types.is_timestamp(f.type):
            glue = "timestamp"
        else:
            try:
                glue = _ARROW_TO_GLUE[f.type]
            except KeyError:
                raise TypeError(f"telemetry column {f.name}: no Glue type for {f.type}") from None
        cols.append({"name": f.name, "type": glue})
    return cols


def firehose_prefix() -> str:
    return LANDING_PREFIX + "/".join(f"{k}=!{{partitionKeyFromQuery:{k}}}" for k in PARTITION_KEYS) + "/"


def secure_bucket(
    name: str,
    *,
    env: str,
    component: str,
    kms_key_arn: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
    object_lock: bool = False,
) -> aws.s3.Bucket:
    """A private, versioned, SSE-KMS bucket that refuses plain-HTTP requests."""
    bucket = aws.s3.Bucket(
        name, object_lock_enabled=object_lock or None, tags=tags(env, component), opts=opts
    )
    bo = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=bucket))
    aws.s3.BucketPublicAccessBlock(
        f"{name}-pab",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=bo,
    )
    aws.s3.BucketOwnershipControls(
        f"{name}-ownership", bucket=bucket.id, rule={"object_ownership": "BucketOwnerEnforced"}, opts=bo
    )
    aws.s3.BucketVersioning(
        f"{name}-versioning", bucket=bucket.id, versioning_configuration={"status": "Enabled"}, opts=bo
    )
    aws.s3.BucketServerSideEncryptionConfiguration(
        f"{name}-sse",
        bucket=bucket.id,
        rules=[
            aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="aws:kms", kms_master_key_id=kms_key_arn
                ),
                bucket_key_enabled=True,
            )
        ],
        opts=bo,
    )
    aws.s3.BucketPolicy(
        f"{name}-tls-only",
        bucket=bucket.id,
        policy=bucket.arn.apply(
            lambda arn: policy_document(
                [
                    {
                        "Sid": "DenyInsecureTransport",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [arn, f"{arn}/*"],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                ]
            )
        ),
        opts=bo,
    )
    return bucket


@dataclass(frozen=True)
class StorageArgs:
    env: str
    primary_region: str
    replica_region: str | None
    kms_key_arns: dict[str, pulumi.Input[str]]
    audit_retention_days: int


class Storage(pulumi.ComponentResource):
    """Buckets: the telemetry lake (+ replica), the platform bucket, the Object Lock audit bucket."""

    def __init__(
        self,
        name: str,
        args: StorageArgs,
        providers: dict[str, aws.Provider],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("aegis:infra:Storage", name, None, opts)
        env, primary = args.env, args.primary_region
        po = child(self, providers[primary])
        key = args.kms_key_arns[primary]
        self.lake = secure_bucket(f"{name}-lake", env=env, component="lake", kms_key_arn=key, opts=po)
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lake-lifecycle",
            bucket=self.lake.id,
            rules=[
                {
                    "id": "landing-tiering",
                    "status": "Enabled",
                    "filter": {"prefix": "landing/"},
                    "transitions": [
                        {"days": 30, "storage_class": "STANDARD_IA"},
                        {"days": 180, "storage_class": "GLACIER_IR"},
                    ],
                },
                {
                    "id": "noncurrent-and-uploads",
                    "status": "Enabled",
                    "filter": {},
                    "noncurrent_version_expiration": {"noncurrent_days": 90},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 7},
                },
            ],
            opts=child(self.lake, providers[primary]),
        )
        self.platform = secure_bucket(
            f"{name}-platform", env=env, component="platform", kms_key_arn=key, opts=po
        )
        self.audit = secure_bucket(
            f"{name}-audit", env=env, component="audit", kms_key_arn=key, opts=po, object_lock=True
        )
        aws.s3.BucketObjectLockConfiguration(
            f"{name}-audit-lock",
            bucket=self.audit.id,
            object_lock_enabled="Enabled",
            rule={"default_retention": {"mode": "COMPLIANCE", "days": args.audit_retention_days}},
            opts=child(self.audit, providers[primary]),
        )
        self.replica: aws.s3.Bucket | None = None
        self.platform_replica: aws.s3.Bucket | None = None
        self.audit_replica: aws.s3.Bucket | None = None
        if args.replica_region:
            self._replicate(name, args, providers)
        self.register_outputs(
            {"lake": self.lake.bucket, "audit": self.audit.bucket, "platform": self.platform.bucket}
        )

    def _replicate(self, name: str, args: StorageArgs, providers: dict[str, aws.Provider]) -> None:
        """Replicate the lake, the platform bucket and the audit bucket to the replica region (RTC).

        What each copy is for (docs/infrastructure.md, "Recovery objectives"): the lake
        replica serves reads after a failover (landing gaps are re-derived from the
        telemetry stream's replica, :class:`StreamReplica`); the platform replica
        keeps MLflow's models and Dagster's compute logs; the audit replica keeps the
        ledger witness's checkpoints, under the same COMPLIANCE Object Lock.
        """
        replica_region = args.replica_region
        assert replica_region is not None
        replica_key = args.kms_key_arns[replica_region]
        self.replica, self.platform_replica, self.audit_replica = self._replica_buckets(
            name, args, providers[replica_region], replica_key
        )
        pairs = [
            ("lake", self.lake, self.replica),
            ("platform", self.platform, self.platform_replica),
            ("audit", self.audit, self.audit_replica),
        ]
        role = self._replication_role(name, args, providers[args.primary_region], pairs, replica_key)
        for component, source, target in pairs:
            self._replication_config(
                name, component, source, target, role, replica_key, providers[args.primary_region]
            )

    def _replica_buckets(
        self, name: str, args: StorageArgs, provider: aws.Provider, replica_key: pulumi.Input[str]
    ) -> tuple[aws.s3.Bucket, aws.s3.Bucket, aws.s3.Bucket]:
        """The lake, platform and audit replicas; the audit replica locked like the audit bucket."""
        env = args.env
        ro = child(self, provider)
        lake = secure_bucket(
            f"{name}-lake-replica", env=env, component="lake-replica", kms_key_arn=replica_key, opts=ro
        )
        platform = secure_bucket(
            f"{name}-platform-replica",
            env=env,
            component="platform-replica",
            kms_key_arn=replica_key,
            opts=ro,
        )
        audit = secure_bucket(
            f"{name}-audit-replica",
            env=env,
            component="audit-replica",
            kms_key_arn=replica_key,
            opts=ro,
            object_lock=True,
        )
        aws.s3.BucketObjectLockConfiguration(
            f"{name}-audit-replica-lock",
            bucket=audit.id,
            object_lock_enabled="Enabled",
            rule={"default_retention": {"mode": "COMPLIANCE", "days": args.audit_retention_days}},
            opts=child(audit, provider),
        )
        return lake, platform, audit

    def _replication_role(
        self,
        name: str,
        args: StorageArgs,
        provider: aws.Provider,
        pairs: list[tuple[str, aws.s3.Bucket, aws.s3.Bucket]],
        replica_key: pulumi.Input[str],
    ) -> aws.iam.Role:
        """The role S3 replicates as: read the sources, write the replicas, re-encrypt with the replica key."""
        role = aws.iam.Role(
            f"{name}-replication-role",
            assume_role_policy=assume_role_policy("s3.amazonaws.com"),
            tags=tags(args.env, "lake"),
            opts=child(self, provider),
        )
        sources = [src.arn for _, src, _ in pairs]
        targets = [dst.arn for _, _, dst in pairs]
        aws.iam.RolePolicy(
            f"{name}-replication-policy",
            role=role.name,
            policy=pulumi.Output.all(
                pulumi.Output.all(*sources),
                pulumi.Output.all(*targets),
                args.kms_key_arns[args.primary_region],
                replica_key,
            ).apply(replication_policy),
            opts=child(role, provider),
        )
        return role

    def _replication_config(
        self,
        name: str,
        component: str,
        source: aws.s3.Bucket,
        target: aws.s3.Bucket,
        role: aws.iam.Role,
        replica_key: pulumi.Input[str],
        provider: aws.Provider,
    ) -> None:
        """One bucket's replication rule: everything, KMS-encrypted, under Replication Time Control."""
        aws.s3.BucketReplicationConfig(
            f"{name}-{component}-replication",
            bucket=source.id,
            role=role.arn,
            rules=[
                {
                    "id": f"{component}-to-replica",
                    "status": "Enabled",
                    "priority": 1,
                    "filter": {},
                    # The audit trail never replicates a delete marker (nothing there is deleted).
                    "delete_marker_replication": {
                        "status": "Disabled" if component == "audit" else "Enabled"
                    },
                    "source_selection_criteria": {"sse_kms_encrypted_objects": {"status": "Enabled"}},
                    "destination": {
                        "bucket": target.arn,
                        "storage_class": "STANDARD",
                        "encryption_configuration": {"replica_kms_key_id": replica_key},
                        # Replication Time Control: 99.99% of objects within 15 minutes, with metrics.
                        "replication_time": {
                            "status": "Enabled",
                            "time": {"minutes": REPLICATION_SLA_MINUTES},
                        },
                        "metrics": {
                            "status": "Enabled",
                            "event_threshold": {"minutes": REPLICATION_SLA_MINUTES},
                        },
                    },
                }
            ],
            opts=child(source, provider),
        )


def replication_policy(a: list) -> str:
    """The replication role's policy from [source bucket ARNs, replica bucket ARNs, source key, replica key]."""
    return policy_document(
        [
            {
                "Effect": "Allow",
                "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"],
                "Resource": a[0],
            },
            {
                "Effect": "Allow",
                "Action": [
                    "s3:GetObjectVersionForReplication",
                    "s3:GetObjectVersionAcl",
                    "s3:GetObjectVersionTagging",
                    # Object Lock: the replica keeps each checkpoint's retention.
                    "s3:GetObjectRetention",
                    "s3:GetObjectLegalHold",
                ],
                "Resource": [f"{arn}/*" for arn in a[0]],
            },
            {
                "Effect": "Allow",
                "Action": [
                    "s3:ReplicateObject",
                    "s3:ReplicateDelete",
                    "s3:ReplicateTags",
                    "s3:ObjectOwnerOverrideToBucketOwner",
                ],
                "Resource": [f"{arn}/*" for arn in a[1]],
            },
            {"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": a[2]},
            {
                "Effect": "Allow",
                "Action": ["kms:Encrypt", "kms:GenerateDataKey"],
                "Resource": a[3],
            },
        ]
    )


@dataclass(frozen=True)
class IngestArgs:
    env: str
    region: str
    kms_key_arn: pulumi.Input[str]
    lake_bucket_arn: pulumi.Input[str]
    shards: int


class TelemetryIngest(pulumi.ComponentResource):
    """Kinesis -> Firehose (JSON -> Parquet, schema v1) -> ``landing/telemetry/date=/hour=/shard=``."""

    def __init__(
        self, name: str, args: IngestArgs, provider: aws.Provider, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("aegis:infra:TelemetryIngest", name, None, opts)
        env = args.env
        o = child(self, provider)
        self.stream = aws.kinesis.Stream(
            f"{name}-stream",
            shard_count=args.shards,
            retention_period=KINESIS_RETENTION_HOURS,
            encryption_type="KMS",
            kms_key_id=args.kms_key_arn,
            stream_mode_details={"stream_mode": "PROVISIONED"},
            tags=tags(env, "ingest"),
            opts=o,
        )
        self._catalog(name, args, provider)
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-firehose-logs",
            retention_in_days=30,
            kms_key_id=args.kms_key_arn,
            tags=tags(env, "ingest"),
            opts=o,
        )
        log_stream = aws.cloudwatch.LogStream(
            f"{name}-firehose-log-stream", log_group_name=log_group.name, name="delivery", opts=o
        )
        role = self._firehose_role(name, args, provider, log_group)
        self.firehose = aws.kinesis.FirehoseDeliveryStream(
            f"{name}-firehose",
            destination="extended_s3",
            kinesis_source_configuration={"kinesis_stream_arn": self.stream.arn, "role_arn": role.arn},
            extended_s3_configuration=self._firehose_s3_configuration(args, role, log_group, log_stream),
            tags=tags(env, "ingest"),
            opts=o,
        )
        self.register_outputs({"streamName": self.stream.name, "firehoseName": self.firehose.name})

    def _catalog(self, name: str, args: IngestArgs, provider: aws.Provider) -> None:
        """The Glue database and table (schema v1, Parquet) Firehose converts against and readers query."""
        o = child(self, provider)
        self.glue_db = aws.glue.CatalogDatabase(f"{name}-glue-db", name=f"{GLUE_DATABASE}_{args.env}", opts=o)
        self.glue_table = aws.glue.CatalogTable(
            f"{name}-glue-table",
            name=GLUE_TABLE,
            database_name=self.glue_db.name,
            table_type="EXTERNAL_TABLE",
            parameters={"classification": "parquet", "aegis.telemetry.schema_version": str(SCHEMA_VERSION)},
            partition_keys=[{"name": k, "type": "string"} for k in PARTITION_KEYS],
            storage_descriptor={
                "location": pulumi.Output.from_input(args.lake_bucket_arn).apply(
                    lambda arn: f"s3://{arn.split(':::')[-1]}/{LANDING_PREFIX}"
                ),
                "input_format": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                "output_format": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
                "ser_de_info": {
                    "serialization_library": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
                },
                "columns": glue_columns(),
            },
            opts=o,
        )

    def _firehose_role(
        self, name: str, args: IngestArgs, provider: aws.Provider, log_group: aws.cloudwatch.LogGroup
    ) -> aws.iam.Role:
        """Firehose's role: read the stream and the Glue table, write landing objects and its logs."""
        role = aws.iam.Role(
            f"{name}-firehose-role",
            assume_role_policy=assume_role_policy("firehose.amazonaws.com"),
            tags=tags(args.env, "ingest"),
            opts=child(self, provider),
        )
        aws.iam.RolePolicy(
            f"{name}-firehose-policy",
            role=role.name,
            policy=pulumi.Output.all(
                args.lake_bucket_arn,
                self.stream.arn,
                args.kms_key_arn,
                self.glue_db.arn,
                self.glue_table.arn,
                log_group.arn,
            ).apply(firehose_policy),
            opts=child(role, provider),
        )
        return role

    def _firehose_s3_configuration(
        self,
        args: IngestArgs,
        role: aws.iam.Role,
        log_group: aws.cloudwatch.LogGroup,
        log_stream: aws.cloudwatch.LogStream,
    ) -> dict:
        """Landing delivery: partitioned by the event's own date/hour/shard, JSON converted to Parquet."""
        return {
            "bucket_arn": args.lake_bucket_arn,
            "role_arn": role.arn,
            "prefix": firehose_prefix(),
            "error_output_prefix": FIREHOSE_ERROR_PREFIX
            + "!{firehose:error-output-type}/date=!{timestamp:yyyy-MM-dd}/",
            "buffering_interval": FIREHOSE_BUFFER_SECONDS,
            "buffering_size": FIREHOSE_BUFFER_MIB,
            "kms_key_arn": args.kms_key_arn,
            "file_extension": ".parquet",
            "dynamic_partitioning_configuration": {"enabled": True, "retry_duration": 300},
            "processing_configuration": {
                "enabled": True,
                "processors": [
                    {
                        "type": "MetadataExtraction",
                        "parameters": [
                            {"parameter_name": "JsonParsingEngine", "parameter_value": "JQ-1.6"},
                            {"parameter_name": "MetadataExtractionQuery", "parameter_value": PARTITION_QUERY},
                        ],
                    }
                ],
            },
            "data_format_conversion_configuration": {
                "enabled": True,
                "input_format_configuration": {
                    "deserializer": {"open_x_json_ser_de": {"case_insensitive": False}}
                },
                "output_format_configuration": {"serializer": {"parquet_ser_de": {"compression": "SNAPPY"}}},
                "schema_configuration": {
                    "database_name": self.glue_db.name,
                    "table_name": self.glue_table.name,
                    "role_arn": role.arn,
                    "region": args.region,
                    "version_id": "LATEST",
                },
            },
            "cloudwatch_logging_options": {
                "enabled": True,
                "log_group_name": log_group.name,
                "log_stream_name": log_stream.name,
            },
        }


def firehose_policy(a: list) -> str:
    """Firehose's policy from [lake bucket, stream, key, Glue database, Glue table, log group] ARNs."""
    return policy_document(
        [
            {
                "Effect": "Allow",
                "Action": [
                    "s3:GetBucketLocation",
                    "s3:ListBucket",
                    "s3:ListBucketMultipartUploads",
                ],
                "Resource": a[0],
            },
            {
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:GetObject"],
                "Resource": [f"{a[0]}/{LANDING_PREFIX}*", f"{a[0]}/{FIREHOSE_ERROR_PREFIX}*"],
            },
            {
                "Effect": "Allow",
                "Action": [
                    "kinesis:DescribeStream",
                    "kinesis:GetShardIterator",
                    "kinesis:GetRecords",
                    "kinesis:ListShards",
                ],
                "Resource": a[1],
            },
            {
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": a[2],
            },
            {
                "Effect": "Allow",
                "Action": ["glue:GetTable", "glue:GetTableVersion", "glue:GetTableVersions"],
                "Resource": [a[3], a[4], a[3].split(":database/")[0] + ":catalog"],
            },
            {"Effect": "Allow", "Action": ["logs:PutLogEvents"], "Resource": f"{a[5]}:*"},
        ]
    )


# The replicator: Lambda reads the primary stream (event source mapping) and puts every record,
# unchanged, on the stream in the replica region. A batch that cannot be put is retried until
# it succeeds (the mapping never skips records); a retried batch may repeat records, which the
# lake drops by event_id.
STREAM_REPLICATOR_CODE = """\
import base64
import os
import time

import boto3

KINESIS = boto3.client("kinesis", region_name=os.environ["TARGET_REGION"])
STREAM = os.environ["TARGET_STREAM"]
MAX_PUT = 500
ATTEMPTS = 5


def handler(event, context):
    records = [
        {"Data": base64.b64decode(r["kinesis"]["data"]), "PartitionKey": r["kinesis"]["partitionKey"]}
        for r in event["Records"]
    ]
    for start in range(0, len(records), MAX_PUT):
        pending = records[start : start + MAX_PUT]
        for attempt in range(ATTEMPTS):
            result = KINESIS.put_records(StreamName=STREAM, Records=pending)
            if not result["FailedRecordCount"]:
                break
            pending = [rec for rec, out in zip(pending, result["Records"]) if "ErrorCode" in out]
            time.sleep(0.2 * 2**attempt)
        else:
            raise RuntimeError(f"{len(pending)} records not replicated to {STREAM}; the batch is retried")
    return {"replicated": len(records)}
"""
STREAM_REPLICATOR_RUNTIME = "python3.12"
REPLICATOR_LAG_THRESHOLD_MS = 60_000


@dataclass(frozen=True)
class StreamReplicaArgs:
    env: str
    primary_region: str
    replica_region: str
    shards: int
    source_stream_arn: pulumi.Input[str]
    kms_key_arns: dict[str, pulumi.Input[str]]


class StreamReplica(pulumi.ComponentResource):
    """The telemetry stream's copy in the replica region, kept within seconds by a replicator.

    Why (docs/infrastructure.md, "Recovery objectives"): the lake replicates with S3
    RTC, bounded at 15 minutes, and Firehose buffers up to 5 minutes; both live in
    the primary region with the stream. Losing that region would lose what had not
    reached the replica bucket yet. This copy keeps every event in the replica
    region a week, so those landing objects are re-derived from it: telemetry's RPO
    becomes the replicator's lag (``IteratorAge``, alarmed at 60 s), not 15 minutes.
    """

    def __init__(
        self,
        name: str,
        args: StreamReplicaArgs,
        providers: dict[str, aws.Provider],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("aegis:infra:StreamReplica", name, None, opts)
        env, primary, replica = args.env, args.primary_region, args.replica_region
        po = child(self, providers[primary])
        self.stream = aws.kinesis.Stream(
            f"{name}-stream",
            shard_count=args.shards,
            retention_period=REPLICA_STREAM_RETENTION_HOURS,
            encryption_type="KMS",
            kms_key_id=args.kms_key_arns[replica],
            stream_mode_details={"stream_mode": "PROVISIONED"},
            tags=tags(env, "ingest", role="replica"),
            opts=child(self, providers[replica]),
        )
        role = self._replicator_role(name, args, providers[primary])
        self.function = aws.lambda_.Function(
            f"{name}-replicator",
            runtime=STREAM_REPLICATOR_RUNTIME,
            handler="index.handler",
            role=role.arn,
            code=pulumi.AssetArchive({"index.py": pulumi.StringAsset(STREAM_REPLICATOR_CODE)}),
            timeout=60,
            memory_size=256,
            environment={"variables": {"TARGET_REGION": replica, "TARGET_STREAM": self.stream.name}},
            kms_key_arn=args.kms_key_arns[primary],
            tags=tags(env, "ingest"),
            opts=po,
        )
        self.mapping = aws.lambda_.EventSourceMapping(
            f"{name}-replicator-source",
            event_source_arn=args.source_stream_arn,
            function_name=self.function.arn,
            starting_position="TRIM_HORIZON",
            batch_size=500,
            maximum_batching_window_in_seconds=1,
            parallelization_factor=2,
            # Never skip: a failing batch is retried until it succeeds or its records expire (48 h).
            maximum_retry_attempts=-1,
            maximum_record_age_in_seconds=-1,
            bisect_batch_on_function_error=False,
            opts=po,
        )
        self.register_outputs({"streamName": self.stream.name, "function": self.function.name})

    def _replicator_role(self, name: str, args: StreamReplicaArgs, provider: aws.Provider) -> aws.iam.Role:
        """The replicator's role: read the primary stream, put on its copy, each under its region's key."""
        role = aws.iam.Role(
            f"{name}-replicator-role",
            assume_role_policy=assume_role_policy("lambda.amazonaws.com"),
            tags=tags(args.env, "ingest"),
            opts=child(self, provider),
        )
        aws.iam.RolePolicy(
            f"{name}-replicator-policy",
            role=role.name,
            policy=pulumi.Output.all(
                args.source_stream_arn,
                self.stream.arn,
                args.kms_key_arns[args.primary_region],
                args.kms_key_arns[args.replica_region],
            ).apply(replicator_policy),
            opts=child(role, provider),
        )
        return role


def replicator_policy(a: list) -> str:
    """The replicator's policy from [source stream, copy stream, primary key, replica key] ARNs."""
    return policy_document(
        [
            {
                "Effect": "Allow",
                "Action": [
                    "kinesis:DescribeStream",
                    "kinesis:DescribeStreamSummary",
                    "kinesis:GetRecords",
                    "kinesis:GetShardIterator",
                    "kinesis:ListShards",
                ],
                "Resource": a[0],
            },
            {"Effect": "Allow", "Action": ["kinesis:ListStreams"], "Resource": "*"},
            {"Effect": "Allow", "Action": ["kinesis:PutRecords"], "Resource": a[1]},
            {"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": a[2]},
            {"Effect": "Allow", "Action": ["kms:GenerateDataKey"], "Resource": a[3]},
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": "arn:aws:logs:*:*:log-group:/aws/lambda/*",
            },
        ]
    )


@dataclass(frozen=True)
class DatabaseArgs:
    env: str
    primary_region: str
    secondary_regions: list[str]
    spec: AuroraSpec
    kms_key_arns: dict[str, pulumi.Input[str]]
    vpc_ids: dict[str, pulumi.Input[str]]
    vpc_cidrs: dict[str, str]
    private_subnet_ids: dict[str, list[pulumi.Input[str]]]


class AuroraGlobal(pulumi.ComponentResource):
    """Aurora PostgreSQL Global Database: one writer region, a read replica cluster in each other region.

    The master password is generated once per ``aurora.passwordVersion`` and
    written, write-only (never in the Pulumi state), both to the cluster and to a
    Secrets Manager secret replicated to every region. Managed master passwords
    (``manage_master_user_password``) would be simpler but are not available to
    clusters in a global database.
    """

    def __init__(
        self,
        name: str,
        args: DatabaseArgs,
        providers: dict[str, aws.Provider],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("aegis:infra:AuroraGlobal", name, None, opts)
        env, spec, primary = args.env, args.spec, args.primary_region
        self.global_cluster = aws.rds.GlobalCluster(
            f"{name}-global",
            global_cluster_identifier=f"aegis-{env}",
            engine=DB_ENGINE,
            engine_version=spec.engine_version,
            database_name="dagster",
            storage_encrypted=True,
            deletion_protection=True,
            opts=child(self, providers[primary]),
        )
        password = self._master_secret(name, args, providers[primary])
        self.clusters: dict[str, aws.rds.Cluster] = {}
        self.instances: dict[str, list[aws.rds.ClusterInstance]] = {}
        self.parameter_groups: dict[str, aws.rds.ClusterParameterGroup] = {}
        previous: list[pulumi.Resource] = []
        for region in [primary, *args.secondary_regions]:
            is_primary = region == primary
            cluster = self._regional_cluster(name, args, region, providers[region], password, previous)
            count = spec.primary_instances if is_primary else spec.secondary_instances
            instances = self._instances(name, args, region, providers[region], cluster, count)
            if is_primary:
                previous = list(instances)
            self.clusters[region] = cluster
            self.instances[region] = instances
        writer = self.clusters[primary]
        # The global writer endpoint follows a switchover or failover: clients need no change (RTO).
        self.writer_endpoint = self.global_cluster.endpoint
        self.reader_endpoint = writer.reader_endpoint
        self.register_outputs({"writerEndpoint": self.writer_endpoint, "secretArn": self.secret.arn})

    def _master_secret(self, name: str, args: DatabaseArgs, provider: aws.Provider) -> pulumi.Output[str]:
        """Generate the master password and write it, write-only, to a secret replicated to every region."""
        env, spec = args.env, args.spec
        po = child(self, provider)
        password = aws.secretsmanager.get_random_password_output(
            password_length=40,
            exclude_punctuation=True,
            opts=pulumi.InvokeOutputOptions(provider=provider, parent=self),
        ).random_password
        password = pulumi.Output.secret(password)
        self.secret = aws.secretsmanager.Secret(
            f"{name}-master-secret",
            name=f"aegis/{env}/aurora/master",
            kms_key_id=args.kms_key_arns[args.primary_region],
            replicas=[{"region": r, "kms_key_id": args.kms_key_arns[r]} for r in args.secondary_regions],
            recovery_window_in_days=30,
            tags=tags(env, "database"),
            opts=po,
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-master-secret-value",
            secret_id=self.secret.id,
            secret_string_wo=pulumi.Output.json_dumps({"username": DB_MASTER_USER, "password": password}),
            secret_string_wo_version=spec.password_version,
            opts=child(self.secret, provider),
        )
        return password

    def _managed_rpo(self, name: str, args: DatabaseArgs, region: str, provider: aws.Provider) -> dict:
        """The cluster parameter group setting ``rds.global_db_rpo``; nothing without secondaries."""
        if not args.secondary_regions:
            return {}
        # Managed RPO on every cluster, so a promoted secondary keeps enforcing it.
        pg = aws.rds.ClusterParameterGroup(
            f"{name}-{region}-params",
            family=f"aurora-postgresql{args.spec.engine_version.split('.')[0]}",
            description=f"Aegis {args.env}: managed RPO {GLOBAL_DB_RPO_SECONDS}s for the global database",
            parameters=[
                {
                    "name": "rds.global_db_rpo",
                    "value": str(GLOBAL_DB_RPO_SECONDS),
                    "apply_method": "immediate",
                }
            ],
            tags=tags(args.env, "database"),
            opts=child(self, provider),
        )
        self.parameter_groups[region] = pg
        return {"db_cluster_parameter_group_name": pg.name}

    def _cluster_settings(self, name: str, args: DatabaseArgs, region: str, provider: aws.Provider) -> dict:
        """What the primary and secondary clusters share: network, encryption, backups, protection."""
        env, spec = args.env, args.spec
        ro = child(self, provider)
        managed_rpo = self._managed_rpo(name, args, region, provider)
        subnet_group = aws.rds.SubnetGroup(
            f"{name}-{region}-subnets",
            subnet_ids=args.private_subnet_ids[region],
            tags=tags(env, "database"),
            opts=ro,
        )
        sg = aws.ec2.SecurityGroup(
            f"{name}-{region}-sg",
            vpc_id=args.vpc_ids[region],
            description="PostgreSQL from inside the VPC only",
            ingress=[
                {
                    "protocol": "tcp",
                    "from_port": DB_PORT,
                    "to_port": DB_PORT,
                    "cidr_blocks": [args.vpc_cidrs[region]],
                }
            ],
            tags=tags(env, "database"),
            opts=ro,
        )
        return {
            "engine": DB_ENGINE,
            "engine_version": spec.engine_version,
            "global_cluster_identifier": self.global_cluster.id,
            "db_subnet_group_name": subnet_group.name,
            "vpc_security_group_ids": [sg.id],
            "storage_encrypted": True,
            "kms_key_id": args.kms_key_arns[region],
            "backup_retention_period": spec.backup_retention_days,
            "preferred_backup_window": "03:00-04:00",
            "copy_tags_to_snapshot": True,
            "deletion_protection": True,
            "iam_database_authentication_enabled": True,
            "enabled_cloudwatch_logs_exports": ["postgresql"],
            "final_snapshot_identifier": f"aegis-{env}-{region}-final",
            "port": DB_PORT,
            "tags": tags(env, "database", role="primary" if region == args.primary_region else "secondary"),
            **managed_rpo,
        }

    def _regional_cluster(
        self,
        name: str,
        args: DatabaseArgs,
        region: str,
        provider: aws.Provider,
        password: pulumi.Output[str],
        previous: list[pulumi.Resource],
    ) -> aws.rds.Cluster:
        """The writer cluster in the primary region; elsewhere a secondary, after the writer's instances."""
        env, spec = args.env, args.spec
        common = self._cluster_settings(name, args, region, provider)
        if region == args.primary_region:
            return aws.rds.Cluster(
                f"{name}-{region}",
                cluster_identifier=f"aegis-{env}-{region}",
                master_username=DB_MASTER_USER,
                master_password_wo=password,
                master_password_wo_version=spec.password_version,
                **common,
                opts=child(self, provider),
            )
        return aws.rds.Cluster(
            f"{name}-{region}",
            cluster_identifier=f"aegis-{env}-{region}",
            enable_global_write_forwarding=True,
            **common,
            opts=child(
                self,
                provider,
                depends_on=previous,
                ignore_changes=["replicationSourceIdentifier"],
            ),
        )

    def _instances(
        self,
        name: str,
        args: DatabaseArgs,
        region: str,
        provider: aws.Provider,
        cluster: aws.rds.Cluster,
        count: int,
    ) -> list[aws.rds.ClusterInstance]:
        """``count`` private instances of one regional cluster, with Performance Insights under the region's key."""
        env, spec = args.env, args.spec
        return [
            aws.rds.ClusterInstance(
                f"{name}-{region}-{i}",
                cluster_identifier=cluster.id,
                identifier=f"aegis-{env}-{region}-{i}",
                engine=DB_ENGINE,
                engine_version=spec.engine_version,
                instance_class=spec.instance_class,
                publicly_accessible=False,
                performance_insights_enabled=True,
                performance_insights_kms_key_id=args.kms_key_arns[region],
                auto_minor_version_upgrade=True,
                tags=tags(env, "database"),
                opts=child(self, provider),
            )
            for i in range(count)
        ]


@dataclass(frozen=True)
class BackupArgs:
    env: str
    primary_region: str
    copy_region: str | None
    kms_key_arns: dict[str, pulumi.Input[str]]
    resource_arns: list[pulumi.Input[str]]


class Backups(pulumi.ComponentResource):
    """AWS Backup: hourly (7 days) and daily (35 days) recovery points, copied to the other region."""

    def __init__(
        self,
        name: str,
        args: BackupArgs,
        providers: dict[str, aws.Provider],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("aegis:infra:Backups", name, None, opts)
        env, primary = args.env, args.primary_region
        po = child(self, providers[primary])
        vault = aws.backup.Vault(
            f"{name}-vault", kms_key_arn=args.kms_key_arns[primary], tags=tags(env, "backup"), opts=po
        )
        copy_vault = None
        if args.copy_region:
            copy_vault = aws.backup.Vault(
                f"{name}-vault-{args.copy_region}",
                kms_key_arn=args.kms_key_arns[args.copy_region],
                tags=tags(env, "backup"),
                opts=child(self, providers[args.copy_region]),
            )

        def rule(rule_name: str, schedule: str, days: int) -> dict:
            r: dict = {
                "rule_name": rule_name,
                "target_vault_name": vault.name,
                "schedule": schedule,
                "start_window": 60,
                "completion_window": 180,
                "lifecycle": {"delete_after": days},
            }
            if copy_vault is not None:
                r["copy_actions"] = [
                    {"destination_vault_arn": copy_vault.arn, "lifecycle": {"delete_after": days}}
                ]
            return r

        plan = aws.backup.Plan(
            f"{name}-plan",
            rules=[
                rule("hourly", "cron(0 * * * ? *)", HOURLY_BACKUP_RETENTION_DAYS),
                rule("daily", "cron(0 5 * * ? *)", DAILY_BACKUP_RETENTION_DAYS),
            ],
            tags=tags(env, "backup"),
            opts=po,
        )
        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=assume_role_policy("backup.amazonaws.com"),
            tags=tags(env, "backup"),
            opts=po,
        )
        for i, arn in enumerate(
            (
                "arn:aws:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup",
                "arn:aws:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForRestores",
                "arn:aws:iam::aws:policy/AWSBackupServiceRolePolicyForS3Backup",
                "arn:aws:iam::aws:policy/AWSBackupServiceRolePolicyForS3Restore",
            )
        ):
            aws.iam.RolePolicyAttachment(
                f"{name}-role-{i}", role=role.name, policy_arn=arn, opts=child(role, providers[primary])
            )
        aws.backup.Selection(
            f"{name}-selection",
            plan_id=plan.id,
            iam_role_arn=role.arn,
            name=f"aegis-{env}-state",
            resources=args.resource_arns,
            opts=po,
        )
        self.register_outputs({"vault": vault.name})
