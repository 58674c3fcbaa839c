"""Stack settings through ``pulumi.Config`` (as the CLI hands them over) and the cost model."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pulumi
import pytest
from aegis_infra import cost
from aegis_infra.config import SETTING_KINDS, StackConfigError, load_settings
from aegis_infra.program import build, estimate_cost
from aegis_infra.stack_file import cli_config, language_host_env
from stack_runner import finish, start_stack

ConfigMap = dict[str, str]


@pytest.fixture
def use_config() -> Iterator[Callable[[ConfigMap], None]]:
    """Install a ``{"aegis:key": string}`` map as the program's config; clear it afterwards."""

    def install(values: ConfigMap) -> None:
        pulumi.runtime.set_all_config(values, [])

    yield install
    pulumi.runtime.set_all_config({}, [])


def edit(config: ConfigMap, key: str, fn: Callable[[object], object]) -> ConfigMap:
    """Change one structured value the way `pulumi config set --path` would: JSON text in, JSON text out."""
    out = dict(config)
    value = json.loads(out[f"aegis:{key}"])
    out[f"aegis:{key}"] = json.dumps(fn(value))
    return out


def test_the_cli_hands_every_value_over_as_a_string() -> None:
    for stack in ("dev", "prod"):
        config = cli_config(stack)
        assert all(isinstance(v, str) for v in config.values())
        assert config["aegis:kubernetesVersion"] == "1.33"  # quoted in YAML: text, never the float 1.33
        assert json.loads(config["aegis:regions"])[0]["name"] == "us-east-1"
        assert {k.split(":", 1)[1] for k in config if k.startswith("aegis:")} <= set(SETTING_KINDS)
    env = language_host_env("prod")
    assert json.loads(env["PULUMI_CONFIG"]) == cli_config("prod")
    assert json.loads(env["PULUMI_CONFIG_SECRET_KEYS"]) == []


def test_both_stacks_load_through_pulumi_config_with_strings_kept(use_config) -> None:
    use_config(cli_config("dev"))
    dev = load_settings()
    use_config(cli_config("prod"))
    prod = load_settings()
    assert dev.region_names == ["us-east-1"]
    assert prod.region_names == ["us-east-1", "eu-west-1", "ap-southeast-1"]
    assert prod.primary_region == "us-east-1" and prod.lake_replica_region == "eu-west-1"
    assert prod.kubernetes_version == "1.33" and prod.aurora.engine_version == "16.6"
    assert prod.image_tag == "0.1.0" and prod.image.endswith("/aegis:0.1.0")
    assert isinstance(prod.kinesis_shards, int) and prod.monthly_budget_usd == 110_000


def test_a_version_that_looks_like_a_number_stays_text(use_config) -> None:
    config = cli_config("prod") | {"aegis:kubernetesVersion": "1.30", "aegis:imageTag": "2"}
    use_config(config)
    s = load_settings()
    assert s.kubernetes_version == "1.30" and s.image_tag == "2"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda c: edit(c, "regions", lambda v: v[:2]), "prod runs in at least three regions"),
        (lambda c: edit(c, "regions", lambda v: [v[0], {**v[1], "cidr": "10.10.0.0/16"}, v[2]]), "overlap"),
        (
            lambda c: edit(c, "aurora", lambda v: {**v, "backupRetentionDays": 3}),
            "aegis:aurora.backupRetentionDays",
        ),
        (
            lambda c: edit(
                c, "gpuNodeGroups", lambda v: [{**v[0], "size": {**v[0]["size"], "min": 3}}, *v[1:]]
            ),
            "min <= desired <= max",
        ),
        (
            lambda c: edit(
                c,
                "dns",
                lambda v: {
                    **v,
                    "regionalEndpoints": {
                        k: e for k, e in v["regionalEndpoints"].items() if k != "eu-west-1"
                    },
                },
            ),
            "eu-west-1",
        ),
        (lambda c: c | {"aegis:lakeReplicaRegion": "us-west-2"}, "lakeReplicaRegion"),
        (lambda c: c | {"aegis:surprise": "1"}, "aegis:surprise: not a setting"),
        (lambda c: c | {"aegis:kinesisShards": "four"}, "aegis:kinesisShards"),
        (lambda c: c | {"aegis:imageTag": "has space"}, "aegis:imageTag"),
        (lambda c: {k: v for k, v in c.items() if k != "aegis:imageRepository"}, "aegis:imageRepository"),
    ],
)
def test_bad_stack_config_is_a_readable_error(use_config, change, needle: str) -> None:
    use_config(change(cli_config("prod")))
    with pytest.raises(StackConfigError, match="invalid stack configuration") as err:
        load_settings()
    assert needle in str(err.value)


def test_every_problem_is_listed_at_once(use_config) -> None:
    config = cli_config("prod") | {"aegis:kinesisShards": "four", "aegis:surprise": "x"}
    use_config(edit(config, "aurora", lambda v: {**v, "backupRetentionDays": 3}))
    with pytest.raises(StackConfigError) as err:
        load_settings()
    msg = str(err.value)
    assert "aegis:kinesisShards" in msg and "aegis:surprise" in msg and "backupRetentionDays" in msg


def test_the_real_entry_stops_on_a_bad_stack_config_naming_the_key(tmp_path: Path) -> None:
    """`pulumi up` with a broken stack file: the entry fails before declaring anything, saying why."""
    import os

    config = edit(cli_config("prod"), "aurora", lambda v: {**v, "backupRetentionDays": 3})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    env |= {"PULUMI_CONFIG": json.dumps(config), "PULUMI_CONFIG_SECRET_KEYS": "[]"}
    out = tmp_path / "graph.json"
    code, err, graph = finish(start_stack("prod", out, env, "--config-from-env"), out)
    assert code == 2 and graph is None
    assert "invalid stack configuration" in err and "aegis:aurora.backupRetentionDays" in err


def test_cost_estimate_prices_ceiling_from_max_and_baseline_from_desired(use_config) -> None:
    use_config(cli_config("prod"))
    est = estimate_cost(load_settings())
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


def test_program_refuses_to_declare_anything_over_budget(use_config) -> None:
    use_config(cli_config("prod") | {"aegis:monthlyBudgetUsd": "50000"})
    with pytest.raises(pulumi.RunError, match=r"exceeds aegis:monthlyBudgetUsd \$50,000.00"):
        build()
