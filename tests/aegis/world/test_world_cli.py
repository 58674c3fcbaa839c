"""``aegis world``: the batch run lands schema-v1 telemetry; the OpenAPI document is current."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from aegis.config import AegisPaths
from aegis.telemetry import KINDS, SCHEMA_V1
from aegis.world.cli import world
from aegis.world.server import openapi_text

REPO = Path(__file__).resolve().parents[3]
AEGIS = Path(sys.executable).parent / "aegis"


def test_run_two_hours_lands_every_kind_in_schema_v1(aegis_home: AegisPaths) -> None:
    result = subprocess.run(
        [str(AEGIS), "world", "run", "--hours", "2", "--players-per-shard", "200", "--no-progress", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    files = sorted(aegis_home.landing_telemetry.rglob("*.parquet"))
    assert files and summary["files"] == len(files)
    assert not list(aegis_home.landing_telemetry.rglob("*.tmp"))
    kinds: set[str] = set()
    rows = 0
    for f in files:
        table = pq.read_table(f)
        assert table.schema.equals(SCHEMA_V1, check_metadata=False), f"{f}: {table.schema}"
        assert table.column_names == list(SCHEMA_V1.names)
        kinds.update(table.column("kind").unique().to_pylist())
        rows += table.num_rows
        rel = f.relative_to(aegis_home.landing_telemetry).parts
        assert rel[0].startswith("date=") and rel[1].startswith("hour=") and rel[2].startswith("shard=")
    assert kinds == set(KINDS), f"missing kinds: {set(KINDS) - kinds}"
    assert rows == summary["events"]


def test_run_rejects_bad_hours() -> None:
    result = CliRunner().invoke(world, ["run", "--hours", "0"])
    assert result.exit_code == 2 and "--hours" in result.output


def test_committed_openapi_document_is_current() -> None:
    committed = (REPO / "docs" / "openapi.json").read_text()
    assert committed == openapi_text(), "docs/openapi.json is stale: run 'aegis world openapi'"
    doc = json.loads(committed)
    paths = doc["paths"]
    for path in ("/v1/health", "/v1/shards", "/v1/shards/{shard_id}/config", "/v1/shards/{shard_id}/snapshots",
                 "/v1/shards/{shard_id}/restore", "/v1/shards/{shard_id}/integrity", "/v1/faults", "/metrics"):  # fmt: skip
        assert path in paths, path
    put = paths["/v1/shards/{shard_id}/config"]["put"]
    assert {"409", "412", "428", "422", "404"} <= set(put["responses"])
    assert {p["name"] for p in put["parameters"]} >= {"If-Match", "Idempotency-Key"}


def test_openapi_check_flags_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "openapi.json"
    stale.write_text("{}")
    runner = CliRunner()
    result = runner.invoke(world, ["openapi", "--out", str(stale), "--check"])
    assert result.exit_code == 1 and "out of date" in result.output
    assert runner.invoke(world, ["openapi", "--out", str(stale)]).exit_code == 0
    assert runner.invoke(world, ["openapi", "--out", str(stale), "--check"]).exit_code == 0


def test_retention_options_reach_the_runner_and_the_server(monkeypatch, aegis_home: AegisPaths) -> None:
    import aegis.world.runner as runner
    from aegis.world import cli as world_cli
    from aegis.world.landing import DEFAULT_RETENTION_HOURS
    from aegis.world.service import DEFAULT_RETENTION_HOURS as SERVICE_DEFAULT

    assert world_cli.SERVE_RETENTION_HOURS == SERVICE_DEFAULT == DEFAULT_RETENTION_HOURS
    seen: list[object] = []

    def fake_run_world(paths, hours, **kwargs):
        seen.append(kwargs["retention_hours"])
        raise SystemExit(0)

    monkeypatch.setattr(runner, "run_world", fake_run_world)
    cli = CliRunner()
    assert cli.invoke(world, ["run", "--hours", "200", "--no-progress"]).exit_code == 0
    assert cli.invoke(world, ["run", "--hours", "2", "--retention-hours", "24"]).exit_code == 0
    assert seen == [None, 24.0]  # a bounded run keeps what it simulated unless told otherwise
    bad = cli.invoke(world, ["run", "--hours", "2", "--retention-hours", "0"])
    assert bad.exit_code == 2 and "--retention-hours" in bad.output
    serve_help = cli.invoke(world, ["serve", "--help"]).output
    assert "--retention-hours" in serve_help and "default: 168" in serve_help
    assert "--keep-all" in serve_help
