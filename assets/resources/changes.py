"""``ChangeSetResource``: the changeset lifecycle as a Dagster resource.

The canary and healing assets call these methods rather than the lifecycle
directly, so the profile decides once (``pipelines.profiles``) which backend,
which store and which simulation runner they use. Every method is idempotent
(the lifecycle journals each step), so a retried Dagster run never applies a
change twice. Methods return plain JSON-able dicts, ready for asset metadata.
"""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from aegis.canary.loop import CanaryLoop
from aegis.changes.gate import DEFAULT_HOURS, HttpRunner, InProcessRunner, store_snapshot_loader
from aegis.changes.lifecycle import Lifecycle, LifecycleConfig, warehouse_slo_alerts
from aegis.changes.store import ChangeSetStore, default_url
from aegis.config import WORLD_PORT, AegisPaths
from aegis.domain import AutonomousChangeSet, CanaryResult


class ChangeSetResource(ConfigurableResource):
    """propose / check / simulate / start_canary / promote / roll_back / status over one game backend,
    and the canary loop over it (``loop()``)."""

    backend_url: str = Field(
        default=f"http://127.0.0.1:{WORLD_PORT}", description="Game backend (contract /v1)"
    )
    store_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the changeset store (default: in the home)"
    )
    home: str | None = Field(
        default=None,
        description="AEGIS_HOME whose state the lifecycle keeps (snapshots, calibration, proposals); "
        "default: the environment's",
    )
    simulator: str = Field(
        default="auto", description="auto | inprocess | http: where the simulation gate runs"
    )
    simulation_hours: float = Field(default=DEFAULT_HOURS, gt=0)
    simulation_seed: int | None = None

    _lifecycle: Lifecycle | None = PrivateAttr(default=None)
    _loop: CanaryLoop | None = PrivateAttr(default=None)

    def paths(self) -> AegisPaths:
        """The home of the changeset state (the lifecycle's, and what the proposals read beside it)."""
        return AegisPaths.from_env(self.home).ensure()

    def open_store(self) -> ChangeSetStore:
        """A new connection to the changeset store (the caller closes it)."""
        return ChangeSetStore(self.store_url or default_url(self.paths()))

    def lifecycle(self) -> Lifecycle:
        if self._lifecycle is None:
            from aegis.world.client import GameBackendClient

            p = self.paths()
            mode = self.simulator
            if mode not in ("auto", "inprocess", "http"):
                raise ValueError(f"simulator={mode!r}; expected auto, inprocess or http")
            if mode == "auto":  # the contract's simulations endpoint; in-process only when asked for
                mode = "http"
            runner = (
                InProcessRunner(store_snapshot_loader(p.world_db))
                if mode == "inprocess"
                else HttpRunner(self.backend_url)
            )
            config = LifecycleConfig(
                simulation_hours=self.simulation_hours,
                simulation_seed=self.simulation_seed,
                # SLO burn pages from the warehouse mart, so availability.slo_burn_firing can fire
                firing_alerts=warehouse_slo_alerts(p),
            )
            self._lifecycle = Lifecycle(
                GameBackendClient(self.backend_url),
                store=self.open_store(),
                simulator=runner,
                config=config,
                aegis_paths=p,
            )
        return self._lifecycle

    def propose(self, changeset: AutonomousChangeSet | dict[str, Any]) -> dict[str, Any]:
        cs = (
            changeset
            if isinstance(changeset, AutonomousChangeSet)
            else AutonomousChangeSet.model_validate(changeset)
        )
        return self.lifecycle().propose(cs).summary()

    def check(self, changeset_id: str) -> dict[str, Any]:
        return self.lifecycle().check(changeset_id).model_dump(mode="json")

    def simulate(self, changeset_id: str) -> dict[str, Any]:
        return self.lifecycle().simulate(changeset_id)

    def start_canary(self, changeset_id: str) -> dict[str, Any]:
        """Drive from wherever the changeset is up to canary (policy and gate included)."""
        return self.lifecycle().advance(changeset_id).summary()

    def promote(
        self, changeset_id: str, canary_result: CanaryResult | dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result = (
            CanaryResult.model_validate(canary_result) if isinstance(canary_result, dict) else canary_result
        )
        return self.lifecycle().promote(changeset_id, result).summary()

    def roll_back(self, changeset_id: str, reason: str, mode: str = "snapshot") -> dict[str, Any]:
        return self.lifecycle().roll_back(changeset_id, reason, mode).summary()

    def status(self, changeset_id: str) -> dict[str, Any]:
        lc = self.lifecycle()
        data = lc.get(changeset_id).summary()
        data["artifacts"] = {k: v["path"] for k, v in lc.store.artifacts(changeset_id).items()}
        return data

    def resume(self) -> list[dict[str, Any]]:
        return [r.summary() for r in self.lifecycle().resume()]

    def loop(self) -> CanaryLoop:
        """The canary loop (launch, live judgement, waves, reflection) over this lifecycle."""
        if self._loop is None:
            self._loop = CanaryLoop(self.lifecycle())
        return self._loop
