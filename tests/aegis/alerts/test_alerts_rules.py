"""The Prometheus rules generated from policies/data.json: promtool checks them and runs the rule
unit tests (firing and not firing), amtool checks the Alertmanager config, and the SLO declared in
policies/data.json agrees with the dbt mart fct_slo_burn that computes the same burn rates."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from aegis.alerts.cli import alerts
from aegis.alerts.config import (
    AlertingPorts,
    alertmanager_config,
    check_configs,
    prometheus_config,
    write_configs,
)
from aegis.alerts.inbox import KNOWN_ALERTS
from aegis.alerts.rules import RulesError, SloSpec, alert_names, load_slo_spec, rule_groups, write_rules
from aegis.changes import slo as changes_slo
from aegis.config import AegisPaths

HERE = Path(__file__).parent
REPO = HERE.parents[2]
PROMTOOL_TESTS = HERE / "promtool" / "aegis_rules_test.yml"


def _tool(name: str) -> str:
    """The binary, or skip locally / fail in CI (.ci/run installs it) when it is missing."""
    found = shutil.which(name)
    if found:
        return found
    msg = f"{name} is not installed (apt-get install prometheus prometheus-alertmanager)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def test_generated_rules_pass_promtool_check(tmp_path: Path) -> None:
    promtool = _tool("promtool")
    rules = write_rules(tmp_path)
    done = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_rule_unit_tests_fire_and_stay_quiet(tmp_path: Path) -> None:
    promtool = _tool("promtool")
    write_rules(tmp_path)
    shutil.copy(PROMTOOL_TESTS, tmp_path / PROMTOOL_TESTS.name)
    done = subprocess.run(
        [promtool, "test", "rules", PROMTOOL_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # the unit tests cover every alert the healing playbooks key on, firing and not firing
    cases = yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
    tested = {t["alertname"] for case in cases for t in case.get("alert_rule_test", [])}
    quiet = {t["alertname"] for case in cases for t in case.get("alert_rule_test", []) if not t["exp_alerts"]}
    assert alert_names() <= tested
    assert {"ShardDown", "EconomyInflation", "TelemetryQuarantineSpike", "SecurityRefusals"} <= quiet


def test_a_broken_rule_fails_the_unit_tests(tmp_path: Path) -> None:
    """The promtool cases can fail: a ShardDown that never fires is caught."""
    promtool = _tool("promtool")
    rules = write_rules(tmp_path)
    doc = yaml.safe_load(rules.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "ShardDown":
                rule["expr"] = rule["expr"].replace("== 0", "== 2")
    rules.write_text(yaml.safe_dump(doc))
    cases = yaml.safe_load(PROMTOOL_TESTS.read_text())
    cases["tests"] = [c for c in cases["tests"] if "ShardDown" in str(c)]  # only the ShardDown case: fast
    (tmp_path / PROMTOOL_TESTS.name).write_text(yaml.safe_dump(cases))
    done = subprocess.run(
        [promtool, "test", "rules", PROMTOOL_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0 and "alertname: ShardDown" in done.stdout + done.stderr


def test_every_paging_alert_is_one_aegis_knows() -> None:
    """A page Aegis would record as unknown (and ignore) is a rule nobody acts on."""
    doc = rule_groups()
    paging = {
        r["alert"]
        for g in doc["groups"]
        for r in g["rules"]
        if "alert" in r and r.get("labels", {}).get("page") != "false"
    }
    assert paging == {
        "ShardDown",
        "TickLatencyHigh",
        "SLOBurnRateFast",
        "SLOBurnRateSlow",
        "EconomyInflation",
        "TelemetryQuarantineSpike",
        "SecurityRefusals",
    }
    assert paging <= KNOWN_ALERTS
    # every per-shard alert keeps the shard label (the target); SecurityRefusals names its target
    for g in doc["groups"]:
        for r in g["rules"]:
            if "alert" in r and r["alert"] != "SecurityRefusals":
                assert "by (shard" in r["expr"] or "aegis:" in r["expr"], r["alert"]
    sec = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == "SecurityRefusals"]
    assert sec[0]["labels"]["target"] == "world"


def test_prometheus_and_alertmanager_configs_validate(tmp_path: Path) -> None:
    _tool("promtool")
    _tool("amtool")
    p = AegisPaths(tmp_path / "home").ensure()
    files = write_configs(p, AlertingPorts(world=18765, receiver=18766, prometheus=19090, alertmanager=19093))
    results = check_configs(files)
    assert [code for _c, code, _o in results] == [0, 0, 0], results
    prom = prometheus_config(p, AlertingPorts(world=18765), files.rules)
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert jobs["aegis-world"]["static_configs"][0]["targets"] == ["127.0.0.1:18765"]
    # scraped with the read service token, read from its file at each scrape
    assert jobs["aegis-world"]["authorization"]["credentials_file"] == str(p.secrets / "read.token")
    assert jobs["aegis-alerts"]["authorization"]["credentials_file"] == str(p.secrets / "read.token")
    am = alertmanager_config(p, AlertingPorts(world=1, receiver=18766))
    assert am["route"]["group_wait"] == "1s" and am["route"]["group_interval"] == "5s"
    hook = am["receivers"][0]["webhook_configs"][0]
    assert hook["url"] == "http://127.0.0.1:18766/v1/alerts/alertmanager" and hook["send_resolved"] is True
    assert hook["http_config"]["authorization"]["credentials_file"] == str(p.secrets / "alerts.token")
    # tickets (page="false") are not sent to Aegis
    assert am["route"]["routes"] == [{"receiver": "null", "matchers": ['page="false"']}]


def test_slo_declaration_agrees_with_the_dbt_mart() -> None:
    """policies/data.json declares the SLOs; dbt computes fct_slo_burn from its own vars. Both must agree."""
    spec = load_slo_spec()
    dbt_vars = yaml.safe_load((REPO / "dbt" / "dbt_project.yml").read_text())["vars"]
    assert spec.objective("availability").target == dbt_vars["slo_target"]
    assert spec.objective("latency").target == dbt_vars["slo_target"]
    assert spec.objective("latency").threshold_ms == dbt_vars["latency_threshold_ms"]
    sql = (REPO / "dbt" / "models" / "marts" / "fct_slo_burn.sql").read_text()
    declared = {
        col: (float(m.group(2)), m.group(1), m.group(3))
        for col, m in (
            (col, re.search(rf"burn_rate_(\w+) > ([0-9.]+) and burn_rate_(\w+) > [0-9.]+ as {col}", sql))
            for col in ("page_fast", "page_slow", "ticket")
        )
        if m
    }
    ours = {a.alert: (a.burn_rate, a.long, a.short) for a in spec.burn_alerts}
    assert ours["SLOBurnRateFast"] == declared["page_fast"]
    assert ours["SLOBurnRateSlow"] == declared["page_slow"]
    assert ours["SLOBudgetTicket"] == declared["ticket"]
    # and the slow path's alert names and thresholds (aegis/changes/slo.py) are the same
    assert (changes_slo.FAST_ALERT, changes_slo.FAST_BURN_THRESHOLD) == ("SLOBurnRateFast", 14.4)
    assert (changes_slo.SLOW_ALERT, changes_slo.SLOW_BURN_THRESHOLD) == ("SLOBurnRateSlow", 6.0)


def test_a_wrong_slo_declaration_is_a_clear_error(tmp_path: Path) -> None:
    data = json.loads((REPO / "policies" / "data.json").read_text())
    data["aegis"]["config"]["slos"]["objectives"][1]["threshold_ms"] = 450
    bad = tmp_path / "data.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(RulesError, match="not a bucket bound"):
        load_slo_spec(bad)
    del data["aegis"]["config"]["slos"]
    bad.write_text(json.dumps(data))
    with pytest.raises(RulesError, match=r"no aegis\.config\.slos"):
        load_slo_spec(bad)
    raw = json.loads((REPO / "policies" / "data.json").read_text())["aegis"]["config"]["slos"]
    raw["burn_alerts"][0]["short"] = "2h"
    with pytest.raises(ValueError, match="must be shorter"):
        SloSpec.model_validate(raw)


def test_cli_rules_and_check(aegis_home: AegisPaths, tmp_path: Path) -> None:
    out = tmp_path / "rules"
    result = CliRunner().invoke(alerts, ["rules", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"aegis-rules.yml", "prometheus.yml", "alertmanager.yml"}
    if shutil.which("promtool") and shutil.which("amtool"):
        check = CliRunner().invoke(alerts, ["check"])
        assert check.exit_code == 0, check.output
        assert check.output.count("[ok]") == 3
    bad = CliRunner().invoke(alerts, ["rules", "--world-port", "0"])
    assert bad.exit_code == 2
