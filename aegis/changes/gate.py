"""The simulation gate: run the change on a copy of the shard before it touches players.

A ``simulate`` verdict means the policy could not prove the change safe from
its size alone. The gate restores the shard from its pre-change snapshot twice,
applies the change to one copy, runs both for ``hours`` of game time with
common random numbers (``aegis.world.offline.simulate_pair``), and compares the
predicted KPIs against the bands of ``policies/data.json`` (economy and
experience ``bands``: read from the policy engine's data document, never
restated here).

A band is judged on the treatment arm, relative to the control arm: the gate
fails when the change takes a KPI out of its band, or, when the shard is
already outside it, moves it further out by more than ``worsen_tolerance`` (a
quarter) of the band's width. A shard that is already out of band is the healer's problem,
not a reason to freeze every tuning change; a change that makes it worse is.
The same copy also proves integrity: the snapshot's integrity right after the
change (no game time in between) must equal its integrity before.

Runners: :class:`InProcessRunner` (the snapshot state is at hand: local world
store, tests) and :class:`HttpRunner` (``POST /v1/shards/{id}/simulations`` on
the game backend).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from aegis.domain import WorldParams
from aegis.world.offline import SimulationReport, simulate_pair

DEFAULT_HOURS = 6.0
HOURS_PER_DAY = 24.0
DEFAULT_WORSEN_TOLERANCE = 0.25
# Band names in policies/data.json -> how the report measures them.
BAND_SECTIONS: tuple[str, ...] = ("economy", "experience")
HTTP_TIMEOUT_S = 300.0


def _deaths_per_player_hour(kpi: dict[str, float], hours: float) -> float:
    deaths = kpi.get("deaths_early", 0.0) + kpi.get("deaths_mid", 0.0) + kpi.get("deaths_late", 0.0)
    online = kpi.get("players_online", 0.0)
    return deaths / (online * hours) if online > 0 and hours > 0 else 0.0


def _inflation_per_day(kpi: dict[str, float], hours: float) -> float:
    return float((1.0 + kpi.get("inflation", 0.0)) ** (HOURS_PER_DAY / hours) - 1.0) if hours > 0 else 0.0


def _velocity_per_day(kpi: dict[str, float], hours: float) -> float:
    return kpi.get("velocity", 0.0) * HOURS_PER_DAY / hours if hours > 0 else 0.0


# How the gate measures each band of policies/data.json from a report; a band not
# listed is read from the report's KPI of the same name. Rates are normalised so a
# band means the same whatever the simulated horizon: economy per game day,
# deaths per online player per game hour.
DERIVED_KPIS: dict[str, Callable[[dict[str, float], float], float]] = {
    "deaths": _deaths_per_player_hour,
    "inflation": _inflation_per_day,
    "velocity": _velocity_per_day,
}


class SimulationUnavailable(RuntimeError):
    """The gate could not run (no state, no endpoint): the change is not proven safe, so it does not pass."""


class SimulationRunner(Protocol):
    def simulate(
        self, shard_id: str, snapshot_id: str, params: WorldParams, hours: float, seed: int | None
    ) -> SimulationReport: ...


@dataclass
class InProcessRunner:
    """Runs ``simulate_pair`` here; ``load_state(shard_id, snapshot_id)`` supplies the snapshot's state."""

    load_state: Callable[[str, str], dict[str, Any]]

    def simulate(
        self, shard_id: str, snapshot_id: str, params: WorldParams, hours: float, seed: int | None
    ) -> SimulationReport:
        state = self.load_state(shard_id, snapshot_id)
        return simulate_pair(state, params, hours, seed, snapshot_id=snapshot_id)


@dataclass
class HttpRunner:
    """Asks the game backend to run the pair (``POST /v1/shards/{id}/simulations``).

    The endpoint needs the ``control`` scope: ``token``, else the platform's
    service token (:func:`aegis.security.secrets.service_token`), looked up per call.
    """

    base_url: str
    timeout: float = HTTP_TIMEOUT_S
    token: str | None = None

    def simulate(
        self, shard_id: str, snapshot_id: str, params: WorldParams, hours: float, seed: int | None
    ) -> SimulationReport:
        body = {
            "snapshot_id": snapshot_id,
            "params": params.model_dump(mode="json"),
            "hours": hours,
            "seed": seed,
        }
        url = f"{self.base_url.rstrip('/')}/v1/shards/{shard_id}/simulations"
        from aegis.security.secrets import service_token

        token = self.token or service_token("control")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = httpx.post(url, json=body, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise SimulationUnavailable(f"POST {url} failed: {type(exc).__name__}: {exc}") from exc
        if response.status_code in (401, 403):
            raise SimulationUnavailable(
                f"POST {url} was refused ({response.status_code}): {response.text[:300]}; the simulation "
                "gate needs a token with the control scope (AEGIS_TOKEN_CONTROL or AEGIS_HOME/secrets/control.token, "
                "see docs/security.md)"
            )
        if response.status_code >= 400:
            raise SimulationUnavailable(f"POST {url} answered {response.status_code}: {response.text[:500]}")
        return SimulationReport.model_validate_json(response.content)


def store_snapshot_loader(world_db: Any) -> Callable[[str, str], dict[str, Any]]:
    """A ``load_state`` reading snapshots from the local world server's store (read-only use)."""

    def load(shard_id: str, snapshot_id: str) -> dict[str, Any]:
        from aegis.world.store import WorldStore

        store = WorldStore(world_db)
        try:
            stored = store.get_snapshot(snapshot_id)
        finally:
            store.close()
        if stored is None:
            raise SimulationUnavailable(f"snapshot {snapshot_id} is not in the world store {world_db}")
        if stored.info.shard_id != shard_id:
            raise SimulationUnavailable(
                f"snapshot {snapshot_id} is of shard {stored.info.shard_id}, not {shard_id}"
            )
        return stored.state

    return load


@dataclass
class BandResult:
    kpi: str
    low: float
    high: float
    control: float
    treatment: float
    ok: bool
    message: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class GateResult:
    passed: bool
    bands: list[BandResult] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    report: SimulationReport | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "violations": list(self.violations),
            "bands": [b.as_dict() for b in self.bands],
            "report": self.report.model_dump(mode="json") if self.report else None,
        }


def bands_from_policy_data(data: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Every KPI band of the policy data document (``aegis.config.<section>.bands``)."""
    config = data.get("aegis", {}).get("config", {})
    bands: dict[str, tuple[float, float]] = {}
    for section in BAND_SECTIONS:
        for name, band in (config.get(section, {}).get("bands") or {}).items():
            try:
                bands[name] = (float(band["low"]), float(band["high"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"policy band {section}.bands.{name} must be {{low, high}} numbers: {band!r}"
                ) from exc
    if not bands:
        raise ValueError(
            "the policy data document declares no economy/experience bands; the gate has nothing to judge"
        )
    return bands


def measure(kpi: dict[str, float], name: str, hours: float) -> float:
    if name in DERIVED_KPIS:
        return DERIVED_KPIS[name](kpi, hours)
    if name not in kpi:
        raise ValueError(
            f"policy band {name!r} names a KPI the simulation does not measure; known: {sorted(kpi)}"
        )
    return kpi[name]


def _distance_out(value: float, low: float, high: float) -> float:
    return max(0.0, low - value, value - high)


def judge(
    report: SimulationReport,
    bands: dict[str, tuple[float, float]],
    worsen_tolerance: float = DEFAULT_WORSEN_TOLERANCE,
) -> GateResult:
    """Pass or fail a simulation report against the policy bands (see the module docstring)."""
    results: list[BandResult] = []
    violations: list[str] = []
    if not report.integrity_before.same_player_data(report.integrity_after):
        violations.append(
            "integrity: applying the change to the snapshot copy changed player data "
            f"({report.integrity_before.model_dump()} -> {report.integrity_after.model_dump()})"
        )
    for name, (low, high) in sorted(bands.items()):
        c = measure(report.control, name, report.hours)
        t = measure(report.treatment, name, report.hours)
        dc, dt = _distance_out(c, low, high), _distance_out(t, low, high)
        slack = worsen_tolerance * (high - low)
        if dt == 0:
            ok, msg = True, f"{name} predicted {t:.4g} within [{low:g}, {high:g}] (unchanged: {c:.4g})"
        elif dc == 0:
            ok, msg = False, f"{name} predicted {t:.4g} leaves [{low:g}, {high:g}] (unchanged shard: {c:.4g})"
        elif dt > dc + slack:
            ok, msg = (
                False,
                (
                    f"{name} predicted {t:.4g} moves further out of [{low:g}, {high:g}] than the unchanged shard ({c:.4g})"
                ),
            )
        else:
            ok, msg = (
                True,
                (
                    f"{name} predicted {t:.4g} outside [{low:g}, {high:g}] but no worse than the unchanged shard ({c:.4g})"
                ),
            )
        results.append(BandResult(name, low, high, c, t, ok, msg))
        if not ok:
            violations.append(msg)
    return GateResult(passed=not violations, bands=results, violations=violations, report=report)
