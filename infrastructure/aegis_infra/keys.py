"""Customer-managed KMS keys, one per region: encryption at rest for everything Aegis stores.

One key per region (not per service) keeps the key count and the policy surface
small; access is still least privilege because IAM policies grant each role only
the key operations it needs, and the key policy admits AWS services only for
their own encryption context (CloudWatch Logs) or through the alarm path
(CloudWatch -> SNS). Rotation is on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from aegis_infra.common import child, tags

KEY_DELETION_WINDOW_DAYS = 30


def key_policy(account_id: str, region: str) -> str:
    root = f"arn:aws:iam::{account_id}:root"
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AccountAdmin",
                    "Effect": "Allow",
                    "Principal": {"AWS": root},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    "Sid": "CloudWatchLogs",
                    "Effect": "Allow",
                    "Principal": {"Service": f"logs.{region}.amazonaws.com"},
                    "Action": [
                        "kms:Encrypt*",
                        "kms:Decrypt*",
                        "kms:ReEncrypt*",
                        "kms:GenerateDataKey*",
                        "kms:Describe*",
                    ],
                    "Resource": "*",
                    "Condition": {
                        "ArnLike": {
                            "kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:{region}:{account_id}:*"
                        }
                    },
                },
                {
                    "Sid": "AlarmsToEncryptedTopics",
                    "Effect": "Allow",
                    "Principal": {"Service": ["cloudwatch.amazonaws.com", "sns.amazonaws.com"]},
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
                },
            ],
        }
    )


@dataclass(frozen=True)
class RegionalKeyArgs:
    env: str
    region: str


class RegionalKey(pulumi.ComponentResource):
    key: aws.kms.Key

    def __init__(
        self,
        name: str,
        args: RegionalKeyArgs,
        provider: aws.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("aegis:infra:RegionalKey", name, None, opts)
        ident = aws.get_caller_identity_output(
            opts=pulumi.InvokeOutputOptions(provider=provider, parent=self)
        )
        self.key = aws.kms.Key(
            f"{name}-key",
            description=f"aegis {args.env} data at rest, {args.region}",
            enable_key_rotation=True,
            deletion_window_in_days=KEY_DELETION_WINDOW_DAYS,
            policy=ident.account_id.apply(lambda acct: key_policy(acct, args.region)),
            tags=tags(args.env, "kms"),
            opts=child(self, provider),
        )
        aws.kms.Alias(
            f"{name}-alias",
            name=f"alias/aegis-{args.env}-data",
            target_key_id=self.key.key_id,
            opts=child(self, provider),
        )
        self.arn = self.key.arn
        self.register_outputs({"keyArn": self.key.arn})
