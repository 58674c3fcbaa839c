"""Shards: list, read one, set its role (canary or control)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from aegis.domain import ShardInfo
from aegis.world.client import API_PREFIX, RoleUpdate
from aegis.world.routers.deps import CONTROL, READ, World
from aegis.world.routers.responses import AUTH_ERRORS, ERRORS, SHARD_WRITE_ERRORS

router = APIRouter(prefix=API_PREFIX, tags=["shards"])


@router.get("/shards", response_model=list[ShardInfo], responses=AUTH_ERRORS, dependencies=[READ])
def list_shards(service: World) -> list[ShardInfo]:
    return service.shards()


@router.get("/shards/{shard_id}", response_model=ShardInfo, responses=ERRORS, dependencies=[READ])
def get_shard(shard_id: str, service: World) -> ShardInfo:
    return service.shard(shard_id)


@router.put(
    "/shards/{shard_id}/role", response_model=ShardInfo, responses=SHARD_WRITE_ERRORS, dependencies=[CONTROL]
)
def put_role(shard_id: str, body: Annotated[RoleUpdate, Body()], service: World) -> ShardInfo:
    """Make a shard the canary or a control shard; while any shard is a canary, none explores."""
    return service.set_role(shard_id, body.role)
