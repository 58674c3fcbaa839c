"""``POST /v1/shards/{id}/simulations``: the simulation gate as a game backend endpoint.

A studio's backend (or the bundled world server) answers it by running
:func:`aegis.world.offline.simulate_pair` on a snapshot it holds, so the gate
can run where the snapshot lives instead of shipping player state to Aegis.
The router does not know how snapshots are stored: the server passes
``load_snapshot_state(shard_id, snapshot_id) -> ShardSim.state_dict()``, which
raises ``KeyError`` (or ``LookupError``) for an unknown shard or snapshot and
:class:`SnapshotOfAnotherShard` (or returns that shard's state) for a snapshot
of another shard. Answers: ``404 not_found``, ``409 conflict``, ``422`` for a
body out of bounds (``hours`` at most :data:`MAX_SIMULATION_HOURS`); errors in
the world's JSON shape. Auth is the including app's business (the world server
requires the ``control`` scope).

``make_router(loader=...)`` takes the loader from a FastAPI dependency instead,
per request: the world server injects its service's ``snapshot_state`` that way
(:func:`aegis.world.routers.deps.snapshot_loader`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from aegis.domain import WorldParams
from aegis.world.client import ErrorBody
from aegis.world.offline import MAX_HOURS, SimulationReport, simulate_pair

DEFAULT_HOURS = 6.0
# The endpoint's bound on game hours (docs/game-backend-api.md): both arms run on the
# server's CPU inside one request, so a request is kept to a couple of minutes of work.
MAX_SIMULATION_HOURS = min(48.0, MAX_HOURS)


class SnapshotOfAnotherShard(LookupError):
    """The snapshot exists but was taken of another shard (``owner``): answered 409."""

    def __init__(self, snapshot_id: str, owner: str, shard_id: str) -> None:
        super().__init__(f"snapshot {snapshot_id!r} is of shard {owner!r}, not {shard_id!r}")
        self.owner = owner


def _error(status: int, code: str, message: str, **details: object) -> JSONResponse:
    body = ErrorBody(error=code, message=message, details=dict(details))
    return JSONResponse(status_code=status, content=body.model_dump(mode="json"))


class SimulationRequest(BaseModel):
    """Body of ``POST /v1/shards/{id}/simulations``."""

    model_config = ConfigDict(extra="forbid")

    snapshot_id: str = Field(min_length=1, description="Snapshot whose state both arms start from")
    params: WorldParams = Field(description="The full parameter set of the changed arm")
    hours: float = Field(
        DEFAULT_HOURS, gt=0, le=MAX_SIMULATION_HOURS, description="Game hours both arms run (at most 48)"
    )
    seed: int | None = Field(
        None, ge=0, description="Reseed both arms identically (default: the snapshot's rng)"
    )


SnapshotLoader = Callable[[str, str], dict[str, Any]]


def _constant(load: SnapshotLoader) -> Callable[[], Awaitable[SnapshotLoader]]:
    async def fixed_loader() -> SnapshotLoader:  # async: no thread-pool hop per request
        return load

    return fixed_loader


def make_router(
    load_snapshot_state: SnapshotLoader | None = None, *, loader: Callable[..., Any] | None = None
) -> APIRouter:
    """The simulations router over ``load_snapshot_state``, or over the one a dependency yields.

    ``loader`` is a FastAPI dependency returning a :data:`SnapshotLoader` (it may
    itself depend on others, e.g. the app's service); give exactly one of the two.
    """
    if (load_snapshot_state is None) == (loader is None):
        raise TypeError("make_router takes load_snapshot_state or loader (exactly one)")
    if load_snapshot_state is not None:
        loader = _constant(load_snapshot_state)
    router = APIRouter(prefix="/v1", tags=["simulations"])

    @router.post(
        "/shards/{shard_id}/simulations",
        response_model=SimulationReport,
        responses={
            404: {"model": ErrorBody, "description": "Unknown shard or snapshot"},
            409: {"model": ErrorBody, "description": "Snapshot of another shard"},
            422: {"model": ErrorBody, "description": "Invalid body (params out of bounds, hours over 48)"},
        },
    )
    async def simulate(shard_id: str, body: SimulationRequest, load: SnapshotLoader = Depends(loader)) -> Any:
        """Run the unchanged and the changed copy of the shard from the snapshot; report KPI deltas."""
        try:
            state = await run_in_threadpool(load, shard_id, body.snapshot_id)
        except SnapshotOfAnotherShard as exc:
            return _error(409, "conflict", str(exc), snapshot_shard=exc.owner)
        except LookupError as exc:
            message = str(exc.args[0]) if exc.args else str(exc)
            return _error(
                404, "not_found", f"snapshot {body.snapshot_id!r} of shard {shard_id!r} not found: {message}"
            )
        owner = state.get("shard_id")
        if owner not in (None, shard_id):
            return _error(
                409,
                "conflict",
                f"snapshot {body.snapshot_id!r} is of shard {owner!r}, not {shard_id!r}",
                snapshot_shard=owner,
            )
        try:
            return await run_in_threadpool(
                simulate_pair, state, body.params, body.hours, body.seed, snapshot_id=body.snapshot_id
            )
        except ValueError as exc:
            return _error(
                422, "invalid_request", f"cannot simulate from snapshot {body.snapshot_id!r}: {exc}"
            )

    return router
