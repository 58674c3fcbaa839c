"""The Aegis CrossGuard pack: ``pulumi preview --policy-pack policies/infrastructure``.

Constructing ``PolicyPack`` starts the analyzer's gRPC server and blocks, so this
file does nothing else; the policies live in ``aegis_guard.policies``.
"""

from aegis_guard.policies import ALL_POLICIES
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name="aegis-guard",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=ALL_POLICIES,
    description="Encryption, no public data, IMDSv2, GPU taints, Aurora protection and backups, "
    "Object Lock on the audit bucket, and the monthly budget.",
)
