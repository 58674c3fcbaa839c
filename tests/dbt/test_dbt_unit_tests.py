"""The warehouse's dbt unit tests (``unit_tests:`` in dbt/models/**/_*unit_tests.yml) pass.

Run as documented for dbt >= 1.8: dbt reads the column types of each unit test's
inputs from the warehouse, so the models they read are first built empty
(``dbt run --select +test_type:unit --empty``), then ``dbt test --select
test_type:unit`` runs the unit tests and nothing else. The staging views bind to
Parquet files even when empty, so a one-shard, one-hour synthetic lake backs them;
no mart is computed from it. The test asserts every unit test by name, so it
cannot pass by running none (or by one silently disappearing).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from aegis.config import AegisPaths
from aegis.quality.synthetic_lake import write_synthetic_lake

DBT_DIR = Path(__file__).resolve().parents[2] / "dbt"

# model -> its unit tests; keep in step with the YAML (a new unit test is listed here).
EXPECTED: dict[str, set[str]] = {
    "int_shard_bucket_spine": {
        "spine_fills_gaps_and_leaves_out_the_filling_bucket",
        "spine_ignores_tickless_buckets_and_shards_without_a_complete_bucket",
        "spine_takes_expected_ticks_from_the_var_when_set",
    },
    "fct_slo_burn": {
        "slo_burn_windows_are_time_ranges_ending_at_the_bucket",
        "slo_burn_slis_per_shard_and_alert_thresholds",
    },
    "fct_shard_kpis": {"shard_kpis_abandon_rate_over_attempts_that_left"},
    "fct_quest_abandonment": {"quest_abandonment_rates_by_stage_and_region"},
    "stg_lake__world_configs": {"world_configs_are_validity_intervals_per_shard"},
}
EXPECTED_IDS = {
    f"unit_test.aegis_warehouse.{model}.{name}" for model, names in EXPECTED.items() for name in names
}


def _dbt(home: AegisPaths, target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """dbt in a subprocess with the local profile, as Dagster runs it; its own target path."""
    dbt = Path(sys.executable).with_name("dbt")
    cmd = [str(dbt), *args, "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)]
    cmd += ["--target-path", str(target), "--log-path", str(target / "logs")]
    cmd += ["--vars", json.dumps({"aegis_home": str(home.home)})]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


def test_unit_tests_pass(tmp_path: Path) -> None:
    home = AegisPaths.from_env(tmp_path / "home").ensure()
    write_synthetic_lake(home, hours=1, n_shards=1, players_per_shard=2)
    target = tmp_path / "target"

    parents = _dbt(home, target, "run", "--select", "+test_type:unit", "--empty")
    assert parents.returncode == 0, (
        f"empty build of the inputs failed:\n{parents.stdout[-4000:]}\n{parents.stderr[-2000:]}"
    )

    proc = _dbt(home, target, "test", "--select", "test_type:unit")
    assert proc.returncode == 0, f"dbt unit tests failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"

    declared = set(json.loads((target / "manifest.json").read_text())["unit_tests"])
    results = json.loads((target / "run_results.json").read_text())["results"]
    ran = {r["unique_id"]: r["status"] for r in results}
    assert declared == EXPECTED_IDS, (
        f"declared unit tests differ from EXPECTED: {sorted(declared ^ EXPECTED_IDS)}"
    )
    assert set(ran) == EXPECTED_IDS, f"ran {sorted(ran)}"
    assert all(status == "pass" for status in ran.values()), ran
    assert f"PASS={len(EXPECTED_IDS)} " in proc.stdout, proc.stdout[-2000:]
