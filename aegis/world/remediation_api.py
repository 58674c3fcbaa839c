"""Remediation endpoints of the game backend contract (see :mod:`aegis.world.remediation`).

- ``GET /v1/faults``: the faults acting now, by shard (so a diagnosis can name them).
- ``GET /v1/shards/{id}/signals``: the SLIs a remediation is verified against, in one read.
- ``POST /v1/shards/{id}/remediations``: failover, restart, shed_load, freeze_trading,
  isolate_telemetry; answers once the action is applied and committed.

Reads need the ``read`` scope and remediations the ``control`` scope
(:func:`aegis.security.auth.require_scope`): only a control credential may remediate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Body, Depends
from fastapi.concurrency import run_in_threadpool

from aegis.security.auth import require_scope
from aegis.world.client import ErrorBody
from aegis.world.remediation import ActiveFault, RemediationRequest, RemediationResult, ShardSignals

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No credential"},
    403: {
        "model": ErrorBody,
        "description": "Credential without the control scope, revoked, or caller isolated",
    },
    404: {"model": ErrorBody, "description": "Unknown shard"},
    422: {"model": ErrorBody, "description": "Malformed request"},
}


def make_router(
    service: Callable[[], Any],
    read: Sequence[Any] | None = None,
    control: Sequence[Any] | None = None,
) -> APIRouter:
    """The remediation router over ``service()`` (a :class:`~aegis.world.service.WorldService`).

    Reads need the ``read`` scope, remediations the ``control`` scope, unless other
    dependencies are given (``read``/``control``: FastAPI dependencies per route)."""
    read_deps = list(read) if read is not None else [Depends(require_scope("read"))]
    control_deps = list(control) if control is not None else [Depends(require_scope("control"))]
    router = APIRouter(prefix="/v1", tags=["remediation"])

    @router.get("/faults", response_model=list[ActiveFault], responses=_ERRORS, dependencies=read_deps)
    async def list_faults() -> list[ActiveFault]:
        """Faults acting now: the simulation's state plus injected faults not yet expired or cleared."""
        rows = await run_in_threadpool(lambda: service().active_faults())
        return [ActiveFault.model_validate(r) for r in rows]

    @router.get(
        "/shards/{shard_id}/signals", response_model=ShardSignals, responses=_ERRORS, dependencies=read_deps
    )
    async def get_signals(shard_id: str) -> ShardSignals:
        """Status, load, tick latency, economy and telemetry state of one shard, read atomically."""
        row = await run_in_threadpool(lambda: service().signals(shard_id))
        return ShardSignals.model_validate(row)

    @router.post(
        "/shards/{shard_id}/remediations",
        response_model=RemediationResult,
        responses=_ERRORS,
        dependencies=control_deps,
    )
    async def post_remediation(shard_id: str, body: RemediationRequest = Body()) -> RemediationResult:
        """Apply a remediation now; the shard is committed before the answer (durable like a config PUT)."""
        result: RemediationResult = await run_in_threadpool(lambda: service().remediate(shard_id, body))
        return result

    return router
