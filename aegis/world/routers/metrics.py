"""``GET /metrics``: the world's Prometheus exposition, refusal counters included (``read`` scope)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from aegis.security.auth import refusal_metrics
from aegis.world.metrics import CONTENT_TYPE
from aegis.world.routers.deps import READ, World
from aegis.world.routers.responses import AUTH_ERRORS

router = APIRouter(tags=["world"])


@router.get("/metrics", response_class=Response, responses=AUTH_ERRORS, dependencies=[READ])
def metrics(request: Request, service: World) -> Response:
    """Prometheus text exposition format, refused calls (``aegis_refused_requests_total``) included."""
    body = service.render_metrics() + refusal_metrics(request.app).encode()
    return Response(content=body, media_type=CONTENT_TYPE)
