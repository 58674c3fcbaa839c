import json

import pytest
from click.testing import CliRunner

from aegis.cli import cli
from aegis.config import AegisPaths, current_profile


def test_info_json_names_every_location(aegis_home: AegisPaths) -> None:
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    for key in ("home", "world", "lake", "warehouse", "dagster_home", "mlflow_tracking_uri", "ledger"):
        assert key in data
    assert data["home"] == str(aegis_home.home)
    assert data["warehouse"].endswith("warehouse.duckdb")
    assert data["ledger"].endswith("ledger.db")
    assert (
        data["mlflow_tracking_uri"].startswith("sqlite:///")
        and str(aegis_home.mlflow) in data["mlflow_tracking_uri"]
    )


def test_ensure_creates_layout(aegis_home: AegisPaths) -> None:
    for path in (
        aegis_home.landing_telemetry,
        aegis_home.bronze,
        aegis_home.quarantine_files,
        aegis_home.world,
    ):
        assert path.is_dir()


def test_unknown_profile_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_PROFILE", "staging")
    with pytest.raises(ValueError, match="not a known profile"):
        current_profile()
