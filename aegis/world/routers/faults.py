"""``POST /v1/faults``: inject a fault (chaos tests, demos); needs the ``faults`` scope.

The faults acting now (``GET /v1/faults``) are read through :mod:`aegis.world.remediation_api`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from aegis.domain import Fault
from aegis.world.client import API_PREFIX, FaultReceipt
from aegis.world.routers.deps import FAULTS, World
from aegis.world.routers.responses import SHARD_WRITE_ERRORS

router = APIRouter(prefix=API_PREFIX, tags=["faults"])


@router.post(
    "/faults",
    response_model=FaultReceipt,
    status_code=202,
    responses=SHARD_WRITE_ERRORS,
    dependencies=[FAULTS],
)
def post_fault(body: Annotated[Fault, Body()], service: World) -> FaultReceipt:
    """Inject a fault (chaos tests, demos); it lasts ``duration_minutes`` of game time."""
    return service.inject_fault(body)
