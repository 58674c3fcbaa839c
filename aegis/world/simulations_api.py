"""``POST /v1/shards/{id}/simulations``: the simulation gate as a game backend endpoint.

A studio's backend (or the bundled world server) answers it by running
:func:`aegis.world.offline.simulate_pair` on a snapshot it holds, so the gate
can run where the snapshot lives instead of shipping player state to Aegis.
The router does not know how snapshots are stored: the server passes
``load_snapshot_state(shard_id, snapshot_id) -> ShardSim.state_dict()``, which
raises ``KeyError`` (or ``LookupError``) for an unknown shard or snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from aegis.domain import WorldParams
from aegis.world.offline import MAX_HOURS, SimulationReport, simulate_pair

DEFAULT_HOURS = 6.0


class SimulationRequest(BaseModel):
    """Body of ``POST /v1/shards/{id}/simulations``."""

    model_config = ConfigDict(extra="forbid")

    snapshot_id: str = Field(min_length=1, description="Snapshot whose state both arms start from")
    params: WorldParams = Field(description="The full parameter set of the changed arm")
    hours: float = Field(DEFAULT_HOURS, gt=0, le=MAX_HOURS, description="Game hours both arms run")
    seed: int | None = Field(
        None, ge=0, description="Reseed both arms identically (default: the snapshot's rng)"
    )


def make_router(load_snapshot_state: Callable[[str, str], dict[str, Any]]) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["simulations"])

    @router.post(
        "/shards/{shard_id}/simulations",
        response_model=SimulationReport,
        responses={
            404: {"description": "Unknown shard or snapshot"},
            409: {"description": "Snapshot of another shard"},
        },
    )
    async def simulate(shard_id: str, body: SimulationRequest) -> SimulationReport:
        """Run the unchanged and the changed copy of the shard from the snapshot; report KPI deltas."""
        try:
            state = await run_in_threadpool(load_snapshot_state, shard_id, body.snapshot_id)
        except LookupError as exc:
            raise HTTPException(
                404, detail=f"snapshot {body.snapshot_id!r} of shard {shard_id!r} not found: {exc}"
            ) from exc
        if state.get("shard_id") not in (None, shard_id):
            raise HTTPException(
                409,
                detail=f"snapshot {body.snapshot_id!r} is of shard {state.get('shard_id')!r}, not {shard_id!r}",
            )
        try:
            return await run_in_threadpool(
                simulate_pair, state, body.params, body.hours, body.seed, snapshot_id=body.snapshot_id
            )
        except ValueError as exc:
            raise HTTPException(
                422, detail=f"cannot simulate from snapshot {body.snapshot_id!r}: {exc}"
            ) from exc

    return router
