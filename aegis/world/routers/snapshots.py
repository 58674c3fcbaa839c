"""Snapshots: take one (between ticks), list them, restore one (verified), read a shard's integrity."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from aegis.domain import Integrity, SnapshotInfo
from aegis.world.client import API_PREFIX, ErrorBody, RestoreRequest, RestoreResult
from aegis.world.routers.deps import CONTROL, READ, World
from aegis.world.routers.responses import ERRORS, SHARD_WRITE_ERRORS

router = APIRouter(prefix=API_PREFIX, tags=["snapshots"])


@router.get(
    "/shards/{shard_id}/snapshots", response_model=list[SnapshotInfo], responses=ERRORS, dependencies=[READ]
)
def list_snapshots(shard_id: str, service: World) -> list[SnapshotInfo]:
    return service.snapshots(shard_id)


@router.post(
    "/shards/{shard_id}/snapshots",
    response_model=SnapshotInfo,
    status_code=201,
    responses=SHARD_WRITE_ERRORS,
    dependencies=[CONTROL],
)
def post_snapshot(shard_id: str, service: World) -> SnapshotInfo:
    """A consistent snapshot (between ticks), stored durably before the answer."""
    return service.snapshot(shard_id)


@router.post(
    "/shards/{shard_id}/restore",
    response_model=RestoreResult,
    responses={
        **SHARD_WRITE_ERRORS,
        409: {"model": ErrorBody, "description": "Restored integrity differs; the shard kept its state"},
    },
    dependencies=[CONTROL],
)
def post_restore(shard_id: str, body: Annotated[RestoreRequest, Body()], service: World) -> RestoreResult:
    """Restore and verify: answers only once the restored integrity equals the snapshot's."""
    return service.restore(shard_id, body.snapshot_id)


@router.get("/shards/{shard_id}/integrity", response_model=Integrity, responses=ERRORS, dependencies=[READ])
def get_integrity(shard_id: str, service: World) -> Integrity:
    return service.integrity(shard_id)
