"""Remediation endpoints of the game backend contract (see :mod:`aegis.world.remediation`).

- ``GET /v1/faults``: the faults acting now, by shard (so a diagnosis can name them).
- ``GET /v1/shards/{id}/signals``: the SLIs a remediation is verified against, in one read.
- ``POST /v1/shards/{id}/remediations``: failover, restart, shed_load, freeze_trading,
  isolate_telemetry; answers once the action is applied and committed.

Reads need the ``read`` scope and remediations the ``control`` scope
(:func:`aegis.security.auth.require_scope`): only a control credential may remediate.
The :class:`~aegis.world.service.WorldService` comes through ``Depends``
(:mod:`aegis.world.routers.deps`); :func:`aegis.world.server.create_app` includes ``router``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body
from fastapi.concurrency import run_in_threadpool

from aegis.world.client import ErrorBody
from aegis.world.remediation import ActiveFault, RemediationRequest, RemediationResult, ShardSignals
from aegis.world.routers.deps import CONTROL, READ, World

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No credential"},
    403: {
        "model": ErrorBody,
        "description": "Credential without the control scope, revoked, or caller isolated",
    },
    404: {"model": ErrorBody, "description": "Unknown shard"},
    422: {"model": ErrorBody, "description": "Malformed request"},
}

router = APIRouter(prefix="/v1", tags=["remediation"])


@router.get("/faults", response_model=list[ActiveFault], responses=_ERRORS, dependencies=[READ])
async def list_faults(service: World) -> list[ActiveFault]:
    """Faults acting now: the simulation's state plus injected faults not yet expired or cleared."""
    rows = await run_in_threadpool(service.active_faults)
    return [ActiveFault.model_validate(r) for r in rows]


@router.get("/shards/{shard_id}/signals", response_model=ShardSignals, responses=_ERRORS, dependencies=[READ])
async def get_signals(shard_id: str, service: World) -> ShardSignals:
    """Status, load, tick latency, economy and telemetry state of one shard, read atomically."""
    row = await run_in_threadpool(service.signals, shard_id)
    return ShardSignals.model_validate(row)


@router.post(
    "/shards/{shard_id}/remediations",
    response_model=RemediationResult,
    responses=_ERRORS,
    dependencies=[CONTROL],
)
async def post_remediation(
    shard_id: str, service: World, body: RemediationRequest = Body()
) -> RemediationResult:
    """Apply a remediation now; the shard is committed before the answer (durable like a config PUT)."""
    result: RemediationResult = await run_in_threadpool(service.remediate, shard_id, body)
    return result
