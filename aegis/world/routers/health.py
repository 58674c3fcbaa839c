"""``GET /v1/health``: liveness and the world clock, open to probes (no token)."""

from __future__ import annotations

from fastapi import APIRouter

from aegis.world.client import API_PREFIX, Health
from aegis.world.routers.deps import World

router = APIRouter(prefix=API_PREFIX, tags=["world"])


@router.get("/health", response_model=Health)
def health(service: World) -> Health:
    """Liveness and the world clock: ``degraded`` when a shard is down or the clock stopped."""
    return service.health()
