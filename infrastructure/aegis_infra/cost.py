"""The budget guard's cost model: monthly on-demand cost of a stack.

Pure Python with no Pulumi import, so that the program (which exports the
estimate and refuses to run over budget) and the CrossGuard pack (which denies a
preview whose declared resources exceed ``aegis:monthlyBudgetUsd``) compute the
same figure from the same table.

Two figures per stack:

* ``baseline``: every scalable pool at its desired size, what a quiet month costs;
* ``ceiling``: every pool at its maximum size, what the cluster autoscaler may
  reach without anybody being asked. The budget guard compares the *ceiling* with
  the budget: a stack whose autoscaling could exceed the budget is denied before
  it exists, which is what "cannot silently exceed" means.

Scope: compute (EC2 nodes, Aurora instances), EKS control planes, NAT gateways
and provisioned Kinesis shards; the items that scale with instance counts. Data
transfer, S3 storage, Firehose volume, CloudWatch and Backup storage depend on
traffic, not on the declared stack, and are not in the estimate
(docs/infrastructure.md says so next to the figures).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

HOURS_PER_MONTH = 730.0

PRICE_SOURCE = (
    "AWS on-demand list prices, Linux, us-east-1, transcribed from the EC2, RDS (Aurora PostgreSQL "
    "Standard), EKS, VPC and Kinesis pricing pages as of 2025-07-01 (P5 after the June 2025 "
    "price reduction); regional multipliers approximate the list-price ratio to us-east-1"
)
PRICE_DATE = "2025-07-01"

# USD per instance-hour, us-east-1, on-demand.
EC2_HOURLY_USD: dict[str, float] = {
    "t3.medium": 0.0416,
    "t3.large": 0.0832,
    "m7i.large": 0.1008,
    "m7i.xlarge": 0.2016,
    "m7i.2xlarge": 0.4032,
    "m7i.4xlarge": 0.8064,
    "c7i.2xlarge": 0.357,
    "g4dn.xlarge": 0.526,
    "g5.xlarge": 1.006,
    "g6.xlarge": 0.8048,
    "g6.2xlarge": 0.9776,
    "g6e.xlarge": 1.861,
    "g6e.2xlarge": 2.24208,
    "g6e.4xlarge": 3.00424,
    "g6e.12xlarge": 10.49264,
    "p4d.24xlarge": 21.96,
    "p5.48xlarge": 55.04,
    "p5en.48xlarge": 63.296,
}

# Aurora PostgreSQL (Standard storage configuration), USD per instance-hour.
AURORA_HOURLY_USD: dict[str, float] = {
    "db.t4g.medium": 0.073,
    "db.r7g.large": 0.276,
    "db.r7g.xlarge": 0.552,
    "db.r7g.2xlarge": 1.104,
    "db.r7g.4xlarge": 2.208,
}

EKS_CONTROL_PLANE_HOURLY_USD = 0.10
NAT_GATEWAY_HOURLY_USD = 0.045
KINESIS_SHARD_HOURLY_USD = 0.015

# Price of a region relative to us-east-1 (compute dominates the estimate).
REGION_MULTIPLIER: dict[str, float] = {
    "us-east-1": 1.00,
    "us-east-2": 1.00,
    "us-west-2": 1.00,
    "eu-west-1": 1.11,
    "eu-central-1": 1.18,
    "ap-southeast-1": 1.23,
    "ap-northeast-1": 1.27,
}


class UnknownPriceError(ValueError):
    """An instance type or region the price table does not know: never priced at zero."""


@dataclass(frozen=True)
class LineItem:
    """One priced thing: ``count_baseline`` at desired size, ``count_ceiling`` at maximum."""

    region: str
    kind: str  # ec2 | aurora | eks | nat | kinesis
    what: str  # instance type, or a short label
    name: str
    count_baseline: float
    count_ceiling: float

    @property
    def hourly_usd(self) -> float:
        return unit_hourly_usd(self.kind, self.what) * region_multiplier(self.region)

    @property
    def monthly_baseline_usd(self) -> float:
        return self.hourly_usd * self.count_baseline * HOURS_PER_MONTH

    @property
    def monthly_ceiling_usd(self) -> float:
        return self.hourly_usd * self.count_ceiling * HOURS_PER_MONTH


@dataclass
class CostEstimate:
    """The estimate of a stack: its line items and the two monthly totals."""

    items: list[LineItem] = field(default_factory=list)

    def add(self, item: LineItem) -> None:
        if item.count_baseline < 0 or item.count_ceiling < item.count_baseline:
            raise ValueError(
                f"{item.name}: counts must satisfy 0 <= baseline <= ceiling, got "
                f"{item.count_baseline} and {item.count_ceiling}"
            )
        item.hourly_usd  # noqa: B018 - fail now on an unknown price, not at summing time
        self.items.append(item)

    @property
    def monthly_baseline_usd(self) -> float:
        return round(sum(i.monthly_baseline_usd for i in self.items), 2)

    @property
    def monthly_ceiling_usd(self) -> float:
        return round(sum(i.monthly_ceiling_usd for i in self.items), 2)

    def by_region(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i in self.items:
            out[i.region] = round(out.get(i.region, 0.0) + i.monthly_ceiling_usd, 2)
        return out

    def summary(self) -> dict[str, object]:
        """What the stack exports: totals, per-region ceiling, and where the prices come from."""
        return {
            "monthlyBaselineUsd": self.monthly_baseline_usd,
            "monthlyCeilingUsd": self.monthly_ceiling_usd,
            "ceilingByRegionUsd": self.by_region(),
            "priceSource": PRICE_SOURCE,
            "priceDate": PRICE_DATE,
            "items": [
                {
                    "region": i.region,
                    "kind": i.kind,
                    "what": i.what,
                    "name": i.name,
                    "baseline": i.count_baseline,
                    "ceiling": i.count_ceiling,
                    "monthlyCeilingUsd": round(i.monthly_ceiling_usd, 2),
                }
                for i in self.items
            ],
        }


def region_multiplier(region: str) -> float:
    try:
        return REGION_MULTIPLIER[region]
    except KeyError:
        raise UnknownPriceError(
            f"no price multiplier for region {region!r}; add it to REGION_MULTIPLIER "
            f"(known: {', '.join(sorted(REGION_MULTIPLIER))})"
        ) from None


def unit_hourly_usd(kind: str, what: str) -> float:
    """The us-east-1 hourly price of one unit of ``what``; unknown is an error."""
    if kind == "ec2":
        table, label = EC2_HOURLY_USD, "EC2 instance type"
    elif kind == "aurora":
        table, label = AURORA_HOURLY_USD, "Aurora instance class"
    elif kind == "eks":
        return EKS_CONTROL_PLANE_HOURLY_USD
    elif kind == "nat":
        return NAT_GATEWAY_HOURLY_USD
    elif kind == "kinesis":
        return KINESIS_SHARD_HOURLY_USD
    else:
        raise UnknownPriceError(f"unknown cost kind {kind!r}")
    try:
        return table[what]
    except KeyError:
        raise UnknownPriceError(
            f"no price for {label} {what!r}; add it to the price table in infrastructure/aegis_infra/cost.py "
            f"(known: {', '.join(sorted(table))})"
        ) from None


def estimate(items: Iterable[LineItem]) -> CostEstimate:
    est = CostEstimate()
    for item in items:
        est.add(item)
    return est


def over_budget_message(est: CostEstimate, budget_usd: float) -> str | None:
    """A readable refusal when the ceiling exceeds the budget, else None."""
    if budget_usd <= 0:
        return f"aegis:monthlyBudgetUsd must be positive, got {budget_usd}"
    ceiling = est.monthly_ceiling_usd
    if ceiling <= budget_usd:
        return None
    top = sorted(est.items, key=lambda i: i.monthly_ceiling_usd, reverse=True)[:3]
    biggest = "; ".join(
        f"{i.name} ({i.what} x{i.count_ceiling:g}) ${i.monthly_ceiling_usd:,.0f}" for i in top
    )
    return (
        f"estimated monthly cost at maximum scale ${ceiling:,.2f} exceeds aegis:monthlyBudgetUsd "
        f"${budget_usd:,.2f} (baseline ${est.monthly_baseline_usd:,.2f}); largest items: {biggest}. "
        f"Lower the node groups' maxSize or raise the budget deliberately."
    )
