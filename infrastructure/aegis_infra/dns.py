"""Route 53: a health check per region for the game API, and latency records that skip unhealthy regions.

Players resolve one name; Route 53 answers with the lowest-latency region whose
health check passes, so a region that fails its ``/v1/health`` is drained
within about a minute and a half (3 failures x 30 s), well inside RTO 30 minutes.
Route 53 is global; its resources go through the primary region's provider.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from aegis_infra.common import child, tags

HEALTH_CHECK_INTERVAL_S = 30
HEALTH_CHECK_FAILURES = 3
RECORD_TTL_S = 60


@dataclass(frozen=True)
class GameDnsArgs:
    env: str
    hosted_zone_id: str
    record_name: str
    regional_endpoints: dict[str, str]
    health_path: str


class GameDns(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: GameDnsArgs, provider: aws.Provider, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("aegis:infra:GameDns", name, None, opts)
        o = child(self, provider)
        self.health_checks: dict[str, aws.route53.HealthCheck] = {}
        for region, endpoint in args.regional_endpoints.items():
            hc = aws.route53.HealthCheck(
                f"{name}-hc-{region}",
                type="HTTPS",
                fqdn=endpoint,
                port=443,
                resource_path=args.health_path,
                request_interval=HEALTH_CHECK_INTERVAL_S,
                failure_threshold=HEALTH_CHECK_FAILURES,
                measure_latency=True,
                tags={**tags(args.env, "dns"), "Name": f"aegis-{args.env}-game-api-{region}"},
                opts=o,
            )
            self.health_checks[region] = hc
            aws.route53.Record(
                f"{name}-latency-{region}",
                zone_id=args.hosted_zone_id,
                name=args.record_name,
                type="CNAME",
                ttl=RECORD_TTL_S,
                records=[endpoint],
                set_identifier=region,
                latency_routing_policies=[{"region": region}],
                health_check_id=hc.id,
                opts=o,
            )
        self.url = f"https://{args.record_name}"
        self.register_outputs({"gameApiUrl": self.url})
