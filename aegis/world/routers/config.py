"""World configs: read with the version in ``ETag``; replace under ``If-Match`` and ``Idempotency-Key``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Response
from fastapi.responses import JSONResponse

from aegis.domain import ShardConfig
from aegis.world.client import API_PREFIX, ConfigUpdate, ErrorBody
from aegis.world.routers.deps import CONTROL, READ, World
from aegis.world.routers.responses import ERRORS, SHARD_WRITE_ERRORS

router = APIRouter(prefix=API_PREFIX, tags=["config"])

_PUT_ERRORS: dict[int | str, dict[str, Any]] = {
    **SHARD_WRITE_ERRORS,
    400: {
        "model": ErrorBody,
        "description": "If-Match is not a version (1-18 ASCII digits, optionally quoted), "
        "Idempotency-Key empty or over 200 characters, or Host refused",
    },
    409: {"model": ErrorBody, "description": "Idempotency-Key reused with a different request"},
    412: {
        "model": ErrorBody,
        "description": "If-Match is stale; details.current_version is the version now",
    },
    428: {"model": ErrorBody, "description": "If-Match is missing"},
}


@router.get("/shards/{shard_id}/config", response_model=ShardConfig, responses=ERRORS, dependencies=[READ])
def get_config(shard_id: str, response: Response, service: World) -> ShardConfig:
    """The parameters in force; the ``ETag`` header carries the version for ``If-Match``."""
    config = service.config(shard_id)
    response.headers["ETag"] = f'"{config.version}"'
    return config


@router.put(
    "/shards/{shard_id}/config", response_model=ShardConfig, responses=_PUT_ERRORS, dependencies=[CONTROL]
)
def put_config(
    shard_id: str,
    body: Annotated[ConfigUpdate, Body()],
    response: Response,
    service: World,
    if_match: Annotated[str | None, Header(alias="If-Match", description="The config version read")] = None,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", description="Makes retries apply at most once")
    ] = None,
) -> Any:
    """Replace the shard's parameters (complete set) if its version still equals ``If-Match``."""
    status, payload, replayed = service.put_config(shard_id, body.params, if_match, idempotency_key)
    headers = {"ETag": f'"{payload["version"]}"'}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(status_code=status, content=payload, headers=headers)
