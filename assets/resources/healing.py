"""``HealingResource``: where healing keeps its incidents, and whether it probes the world itself.

The healing area's sensor, job and asset ask this resource for the incident
store and the timeline's directory instead of reading the process's global
``AEGIS_HOME``; the profile (``pipelines.profiles``) configures it, and unset
fields fall back to the environment the stack was started with, read when a
run or a tick asks (never when the code location is imported).

``alert_queue_url``: prod's alarm queue (stack output ``alertQueueUrl``); the sensor
drains it into the inbox on every tick (:mod:`aegis.alerts.source`) and then reads
the inbox exactly as locally, where the receiver fills it.

``probe``: without Alertmanager the sensor polls the world's symptoms itself
(:class:`aegis.healing.probe.Probe`). ``on`` / ``off`` force it; ``auto`` probes
when no Alertmanager binary is installed. Unset: ``$AEGIS_HEALING_PROBE``, else ``auto``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import ConfigurableResource
from pydantic import Field

from aegis.config import AegisPaths

if TYPE_CHECKING:
    from aegis.alerts.source import AlertSource
    from aegis.healing.store import IncidentStore

# One source per queue and process: a boto3 client costs ~170 ms, a sensor ticks every 5 s.
_SOURCES: dict[tuple[str, str], AlertSource] = {}

PROBE_ENV = "AEGIS_HEALING_PROBE"
PROBE_ON = ("on", "1", "true")
PROBE_OFF = ("off", "0", "false")


class HealingResource(ConfigurableResource):
    """The incident store's home and the alert-probe switch."""

    home: str | None = Field(default=None, description="AEGIS_HOME to use; default: the environment's")
    store_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the incident store; default: healing.db in the home "
        "(the core's default when no home is set)",
    )
    probe: str | None = Field(default=None, description=f"on | off | auto; default: ${PROBE_ENV}, else auto")
    alert_queue_url: str | None = Field(
        default=None,
        description="prod: the SQS alarm queue drained into the inbox (stack output alertQueueUrl)",
    )
    region: str | None = Field(default=None, description="prod: the queue's region (primaryRegion)")

    def alert_source(self) -> AlertSource:
        """Where alerts wait before the inbox: the SQS queue in prod, nothing to pull locally."""
        from aegis.alerts.source import LocalAlertSource, SqsAlertSource

        if not self.alert_queue_url:
            return LocalAlertSource()
        key = (self.alert_queue_url, self.region or "")
        if key not in _SOURCES:
            _SOURCES[key] = SqsAlertSource(self.alert_queue_url, self.region or "us-east-1")
        return _SOURCES[key]

    def paths(self) -> AegisPaths:
        return AegisPaths.from_env(self.home).ensure()

    def store(self) -> IncidentStore:
        """The incident store: ``store_url``, else ``healing.db`` in the configured home, else the core's default."""
        from aegis.healing.store import IncidentStore

        if self.store_url:
            return IncidentStore(self.store_url)
        return IncidentStore(f"sqlite:///{self.paths().healing_db}" if self.home is not None else None)

    def reports_dir(self) -> Path:
        """Where the incidents' timeline plot is written (beside the store)."""
        out = self.paths().healing_db.parent / "healing"
        out.mkdir(parents=True, exist_ok=True)
        return out

    def probe_enabled(self) -> bool:
        mode = (self.probe if self.probe is not None else os.environ.get(PROBE_ENV, "auto")).strip().lower()
        if mode in PROBE_ON:
            return True
        if mode in PROBE_OFF:
            return False
        from aegis.alerts.config import alertmanager_binary

        return alertmanager_binary() is None
