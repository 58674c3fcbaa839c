"""Snapshot of the code location (local profile): any change to the graph shows up in review.

The committed ``definitions_snapshot.json`` holds, sorted and free of memory
addresses: every asset (deps, group, automation condition, kinds, tags), every
automation condition as a tree, every asset check (blocking or not), every job
(its assets, checks or ops, and tags), schedule (cron, job) and sensor
(interval, target), the resources by key and the executor. When the graph
changes on purpose, regenerate it and commit the diff with the change:

    UPDATE_SNAPSHOT=1 .venv/bin/pytest -p no:xdist tests/pipelines/test_definitions_snapshot.py
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

SNAPSHOT = Path(__file__).with_name("definitions_snapshot.json")
REGENERATE = "UPDATE_SNAPSHOT=1 .venv/bin/pytest -p no:xdist tests/pipelines/test_definitions_snapshot.py"
PROFILE = "local"
KIND_TAG = "dagster/kind/"
IMPLICIT_JOB_PREFIX = "__ASSET_JOB"
# What must never reach the file: a repr with an address would change on every run.
ADDRESS = re.compile(r" object at 0x[0-9a-f]+|\b0x[0-9a-f]{8,}\b")


def _key(key: dg.AssetKey) -> str:
    return key.to_user_string()


def _check(key: dg.AssetCheckKey) -> str:
    return f"{_key(key.asset_key)}:{key.name}"


def condition_tree(condition: dg.AutomationCondition, depth: int = 0) -> list[str]:
    """One line per node, indented by depth: the node's name (with its selections, crons) and its label."""
    label = condition.get_label()
    lines = ["  " * depth + condition.name + (f" [{label}]" if label else "")]
    for child in condition.children:
        lines += condition_tree(child, depth + 1)
    return lines


def _condition_names(specs: list[dg.AssetSpec]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Each asset's condition by name (its label, or its root's name), and each named tree once.

    Different trees under one label (``eager()`` and ``eager().ignore(...)`` are both
    "eager") are each named after the first asset, in key order, that carries them.
    """
    first_asset: dict[tuple[str, ...], str] = {}
    base_of: dict[tuple[str, ...], str] = {}
    tree_of: dict[str, tuple[str, ...]] = {}
    for spec in sorted(specs, key=lambda s: _key(s.key)):
        condition = spec.automation_condition
        if condition is None:
            continue
        tree = tuple(condition_tree(condition))
        tree_of[_key(spec.key)] = tree
        first_asset.setdefault(tree, _key(spec.key))
        base_of[tree] = condition.get_label() or condition.name
    shared = {b for b in base_of.values() if list(base_of.values()).count(b) > 1}
    name_of = {
        tree: f"{base} (as on {first_asset[tree]})" if base in shared else base
        for tree, base in base_of.items()
    }
    return {a: name_of[t] for a, t in tree_of.items()}, {name_of[t]: list(t) for t in name_of}


def _job(job: dg.JobDefinition) -> dict[str, Any]:
    layer = job.asset_layer
    assets = sorted(_key(k) for k in layer.selected_asset_keys)
    out: dict[str, Any] = {"tags": dict(sorted(job.tags.items()))}
    if assets:
        out["assets"] = assets
        out["checks"] = sorted(_check(k) for k in layer.asset_graph.asset_check_keys)
    else:  # an op job (healing): its ops
        out["ops"] = sorted(node.name for node in job.graph.node_defs)
    return out


def _sensor(sensor: dg.SensorDefinition) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": type(sensor).__name__,
        "minimum_interval_seconds": sensor.minimum_interval_seconds,
        "default_status": sensor.default_status.value,
        "jobs": sorted(t.job_name for t in sensor.targets),
    }
    if sensor.asset_selection is not None:
        out["assets"] = str(sensor.asset_selection)
    if isinstance(sensor, dg.AssetSensorDefinition):
        out["monitored_asset"] = _key(sensor.asset_key)
    return out


def definitions_snapshot(defs: dg.Definitions) -> dict[str, Any]:
    """The reviewable shape of ``defs``: plain, sorted JSON types only."""
    graph = defs.resolve_asset_graph()
    specs = list(defs.resolve_all_asset_specs())
    condition_of, trees = _condition_names(specs)
    assets: dict[str, Any] = {}
    for spec in specs:
        name = _key(spec.key)
        assets[name] = {
            "group": spec.group_name,
            "deps": sorted(_key(d.asset_key) for d in spec.deps),
            "materializable": graph.get(spec.key).is_materializable,
            "automation_condition": condition_of.get(name),
            "kinds": sorted(spec.kinds),
            "tags": {k: v for k, v in sorted(spec.tags.items()) if not k.startswith(KIND_TAG)},
        }
    checks: dict[str, dict[str, Any]] = {}
    for key in graph.asset_check_keys:
        checks.setdefault(_key(key.asset_key), {})[key.name] = {
            "blocking": graph.get_check_spec(key).blocking
        }
    repo = defs.get_repository_def()
    return {
        "profile": PROFILE,
        "executor": defs.executor.name if isinstance(defs.executor, dg.ExecutorDefinition) else None,
        "resources": {k: type(v).__name__ for k, v in sorted((defs.resources or {}).items())},
        "assets": assets,
        "automation_conditions": trees,
        "asset_checks": checks,
        "jobs": {
            job.name: _job(job) for job in repo.get_all_jobs() if not job.name.startswith(IMPLICIT_JOB_PREFIX)
        },
        "schedules": {
            s.name: {
                "cron": s.cron_schedule,
                "job": s.job_name,
                "timezone": s.execution_timezone,
                "default_status": s.default_status.value,
            }
            for s in repo.schedule_defs
        },
        "sensors": {s.name: _sensor(s) for s in repo.sensor_defs},
    }


def render(snapshot: dict[str, Any]) -> str:
    return json.dumps(snapshot, indent=2, sort_keys=True) + "\n"


@pytest.fixture(scope="module")
def rendered() -> str:
    from pipelines.definitions import build_definitions

    return render(definitions_snapshot(build_definitions(PROFILE)))


def test_definitions_match_the_committed_snapshot(rendered: str) -> None:
    assert not ADDRESS.search(rendered), f"a memory address in the snapshot: {ADDRESS.search(rendered)}"
    if os.environ.get("UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(rendered)
    assert SNAPSHOT.exists(), f"{SNAPSHOT.name} is missing; create it with:\n    {REGENERATE}"
    committed = SNAPSHOT.read_text()
    if committed != rendered:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                rendered.splitlines(keepends=True),
                fromfile=f"{SNAPSHOT.name} (committed)",
                tofile="code location now",
            )
        )
        pytest.fail(
            f"the code location differs from {SNAPSHOT.name}:\n{diff}\n"
            f"If the change is intended, regenerate the snapshot and commit it with the change:\n    {REGENERATE}",
            pytrace=False,
        )


def test_the_snapshot_is_complete_and_sorted() -> None:
    """What review relies on is in the file, in a stable order (checked on the committed file)."""
    data = json.loads(SNAPSHOT.read_text())
    assert SNAPSHOT.read_text() == render(data)  # sorted keys, fixed indent, trailing newline
    assert data["profile"] == PROFILE and data["executor"] == "in_process"
    assert {"lake", "game", "dbt", "mlflow", "training", "changes", "healing"} == set(data["resources"])
    bronze = data["assets"]["bronze_events"]
    assert bronze["group"] == "telemetry" and bronze["automation_condition"] is None
    assert bronze["kinds"] == ["parquet", "pyarrow"] and bronze["tags"] == {"aegis/stage": "ingest"}
    assert data["assets"]["fct_shard_kpis"]["automation_condition"] == "warehouse_eager"
    assert data["assets"]["world_configs"]["materializable"] is False
    # eager() and eager().ignore(fct_shard_kpis) share a label and stay two entries
    launch, alerts = (data["assets"][k]["automation_condition"] for k in ("canary_launch", "slo_alerts"))
    assert launch != alerts and {launch, alerts} <= set(data["automation_conditions"])
    assert any("ignore_selection" in line for line in data["automation_conditions"][launch])
    assert data["asset_checks"]["bronze_events"]["rows_conserved"] == {"blocking": True}
    assert data["asset_checks"]["bronze_events"]["gx_volume"] == {"blocking": False}
    assert data["jobs"]["ingest_telemetry"]["assets"] == ["bronze_events"]
    assert data["jobs"]["healing_job"]["ops"] == ["heal_incident"]
    assert data["schedules"]["warehouse_nightly_full_refresh"]["cron"] == "30 3 * * *"
    assert data["sensors"]["landing_sensor"] == {
        "type": "SensorDefinition",
        "minimum_interval_seconds": 15,
        "default_status": "RUNNING",
        "jobs": ["ingest_telemetry"],
    }
    assert data["sensors"]["default_automation_condition_sensor"]["assets"] == "*"
    assert data["sensors"]["reality_delta_retrain_sensor"]["monitored_asset"] == "reality_delta"
