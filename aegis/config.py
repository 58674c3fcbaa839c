"""Where a local Aegis keeps its state.

Everything a local run writes lives under one directory, ``AEGIS_HOME`` (default
``./.aegis``), so a user can find it, back it up or delete it in one place, and
so tools (`aegis info --json`) and people agree on where things are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_HOME = "AEGIS_HOME"
ENV_PROFILE = "AEGIS_PROFILE"
DEFAULT_HOME = ".aegis"
PROFILES = ("local", "prod")

# Default loopback ports for the local stack (README documents them).
WORLD_PORT = int(os.environ.get("AEGIS_WORLD_PORT", "8765"))
DAGSTER_PORT = int(os.environ.get("AEGIS_DAGSTER_PORT", "3000"))
MLFLOW_PORT = int(os.environ.get("AEGIS_MLFLOW_PORT", "5000"))
ALERTS_PORT = int(os.environ.get("AEGIS_ALERTS_PORT", "8766"))
PROMETHEUS_PORT = int(os.environ.get("AEGIS_PROMETHEUS_PORT", "9090"))
ALERTMANAGER_PORT = int(os.environ.get("AEGIS_ALERTMANAGER_PORT", "9093"))


def current_profile() -> str:
    """The active profile; an unknown value is an error, never a silent fallback."""
    profile = os.environ.get(ENV_PROFILE, "local").strip() or "local"
    if profile not in PROFILES:
        raise ValueError(
            f"{ENV_PROFILE}={profile!r} is not a known profile; expected one of {', '.join(PROFILES)}"
        )
    return profile


@dataclass(frozen=True)
class AegisPaths:
    """The layout of ``AEGIS_HOME`` (docs/architecture.md, "Local state")."""

    home: Path

    @classmethod
    def from_env(cls, home: str | os.PathLike[str] | None = None) -> AegisPaths:
        raw = home if home is not None else os.environ.get(ENV_HOME, DEFAULT_HOME)
        return cls(Path(raw).expanduser().resolve())

    @property
    def world(self) -> Path:
        return self.home / "world"

    @property
    def world_db(self) -> Path:
        return self.world / "world.db"

    @property
    def snapshots(self) -> Path:
        return self.world / "snapshots"

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    @property
    def landing(self) -> Path:
        return self.lake / "landing"

    @property
    def landing_telemetry(self) -> Path:
        return self.landing / "telemetry"

    @property
    def bronze(self) -> Path:
        return self.lake / "bronze"

    @property
    def quarantine(self) -> Path:
        return self.lake / "quarantine"

    @property
    def quarantine_files(self) -> Path:
        return self.quarantine / "files"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def mlflow(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow / "artifacts"

    @property
    def ledger(self) -> Path:
        return self.home / "ledger.db"

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{self.ledger}"

    @property
    def keys(self) -> Path:
        return self.home / "keys"

    @property
    def changesets(self) -> Path:
        return self.home / "changesets"

    @property
    def security_db(self) -> Path:
        """Hashed API tokens, refused calls and isolated callers."""
        return self.home / "security.db"

    @property
    def secrets(self) -> Path:
        """The platform's own service tokens, one ``<scope>.token`` file each (0600)."""
        return self.home / "secrets"

    @property
    def witness(self) -> Path:
        """Signed ledger checkpoints, kept apart from the ledger database."""
        return self.home / "witness"

    @property
    def alerts_db(self) -> Path:
        """The alert inbox: every acknowledged alert, stored before the 2xx."""
        return self.home / "alerts.db"

    @property
    def healing_db(self) -> Path:
        """Incidents, their actions and verifications."""
        return self.home / "healing.db"

    @property
    def alerting(self) -> Path:
        """Generated Prometheus and Alertmanager configuration and their data."""
        return self.home / "alerting"

    def ensure(self) -> AegisPaths:
        """Create the directory layout (idempotent)."""
        for path in (
            self.world,
            self.snapshots,
            self.landing_telemetry,
            self.bronze,
            self.quarantine_files,
            self.dagster_home,
            self.mlflow_artifacts,
            self.keys,
            self.changesets,
            self.secrets,
            self.witness,
            self.alerting,
        ):
            path.mkdir(parents=True, exist_ok=True)
        return self

    def info(self) -> dict[str, str]:
        """What `aegis info --json` prints: paths and URIs of the local stack."""
        return {
            "profile": current_profile(),
            "home": str(self.home),
            "world": str(self.world),
            "world_url": f"http://127.0.0.1:{WORLD_PORT}",
            "lake": str(self.lake),
            "landing": str(self.landing_telemetry),
            "bronze": str(self.bronze),
            "quarantine": str(self.quarantine),
            "warehouse": str(self.warehouse),
            "dagster_home": str(self.dagster_home),
            "dagster_url": f"http://127.0.0.1:{DAGSTER_PORT}",
            "mlflow_tracking_uri": self.mlflow_tracking_uri,
            "mlflow_url": f"http://127.0.0.1:{MLFLOW_PORT}",
            "ledger": str(self.ledger),
            "ledger_url": self.ledger_url,
            "keys": str(self.keys),
            "security_db": str(self.security_db),
            "secrets": str(self.secrets),
            "witness": str(self.witness),
            "alerts_db": str(self.alerts_db),
            "alerts_url": f"http://127.0.0.1:{ALERTS_PORT}",
            "healing_db": str(self.healing_db),
            "prometheus_url": f"http://127.0.0.1:{PROMETHEUS_PORT}",
            "alertmanager_url": f"http://127.0.0.1:{ALERTMANAGER_PORT}",
        }


def paths() -> AegisPaths:
    return AegisPaths.from_env()
