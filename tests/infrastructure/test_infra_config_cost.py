"""Stack settings validation and the cost model (no Pulumi runtime needed)."""

from __future__ import annotations

import copy

import pulumi
import pytest
from aegis_infra import cost
from aegis_infra.config import StackConfigError, parse_settings
from aegis_infra.offline import stack_settings_values
from aegis_infra.program import build, estimate_cost


def prod_values() -> dict:
    return copy.deepcopy(stack_settings_values("prod"))


def test_both_stack_files_validate() -> None:
    dev = parse_settings(stack_settings_values("dev"))
    prod = parse_settings(prod_values())
    assert dev.region_names == ["us-east-1"] and prod.region_names == [
        "us-east-1",
        "eu-west-1",
        "ap-southeast-1",
    ]
    assert prod.primary_region == "us-east-1" and prod.lake_replica_region == "eu-west-1"


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda v: v["regions"].pop(), "prod runs in at least three regions"),
        (lambda v: v["regions"][1].update(cidr="10.10.0.0/16"), "overlap"),
        (lambda v: v["aurora"].update(backupRetentionDays=3), "aegis:aurora.backupRetentionDays"),
        (lambda v: v["gpuNodeGroups"][0]["size"].update(min=3), "min <= desired <= max"),
        (lambda v: v["dns"]["regionalEndpoints"].pop("eu-west-1"), "eu-west-1"),
        (lambda v: v.update(lakeReplicaRegion="us-west-2"), "lakeReplicaRegion"),
        (lambda v: v.update(surprise=1), "aegis:surprise"),
    ],
)
def test_bad_stack_config_is_a_readable_error(mutate, needle: str) -> None:
    values = prod_values()
    mutate(values)
    with pytest.raises(StackConfigError, match="invalid stack configuration") as err:
        parse_settings(values)
    assert needle in str(err.value)


def test_cost_estimate_prices_ceiling_from_max_and_baseline_from_desired() -> None:
    est = estimate_cost(parse_settings(prod_values()))
    training = next(i for i in est.items if i.name == "us-east-1/gpu-training")
    assert (training.count_baseline, training.count_ceiling) == (0, 2)
    assert training.monthly_ceiling_usd == pytest.approx(
        2 * cost.EC2_HOURLY_USD["p5.48xlarge"] * cost.HOURS_PER_MONTH
    )
    eu = next(i for i in est.items if i.name == "eu-west-1/gpu-inference")
    us = next(i for i in est.items if i.name == "us-east-1/gpu-inference")
    assert eu.hourly_usd == pytest.approx(us.hourly_usd * cost.REGION_MULTIPLIER["eu-west-1"])
    assert est.monthly_baseline_usd < est.monthly_ceiling_usd
    assert set(est.by_region()) == {"us-east-1", "eu-west-1", "ap-southeast-1"}
    summary = est.summary()
    assert summary["priceDate"] == cost.PRICE_DATE and "us-east-1" in summary["priceSource"]


def test_unknown_prices_are_errors_never_zero() -> None:
    with pytest.raises(cost.UnknownPriceError, match=r"x1\.huge"):
        cost.estimate([cost.LineItem("us-east-1", "ec2", "x1.huge", "n", 1, 1)])
    with pytest.raises(cost.UnknownPriceError, match="mars-north-1"):
        cost.estimate([cost.LineItem("mars-north-1", "ec2", "m7i.large", "n", 1, 1)])
    with pytest.raises(ValueError, match="baseline <= ceiling"):
        cost.estimate([cost.LineItem("us-east-1", "ec2", "m7i.large", "n", 2, 1)])


def test_program_refuses_to_declare_anything_over_budget() -> None:
    values = prod_values()
    values["monthlyBudgetUsd"] = 50_000
    with pytest.raises(pulumi.RunError, match=r"exceeds aegis:monthlyBudgetUsd \$50,000.00"):
        build(parse_settings(values))
