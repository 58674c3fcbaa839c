"""Bounded resources of the bundled server: snapshot retention with a quota, the body limit setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from aegis.config import AegisPaths
from aegis.world.server import MAX_BODY_BYTES
from aegis.world.service import ServiceOptions, WorldService
from aegis.world.store import SNAPSHOT_QUOTA_BYTES, SNAPSHOTS_KEEP_PER_SHARD, WorldStore


@pytest.fixture
def service(tmp_path: Path) -> WorldService:
    opts = ServiceOptions(
        speed=0, players_per_shard=50, shards_per_region=1, explore=False, land_telemetry=False,
        snapshots_keep_per_shard=3,
    )  # fmt: skip
    svc = WorldService(AegisPaths(tmp_path / "home").ensure(), opts)
    yield svc
    svc.stop()


def test_documented_bounds() -> None:
    assert MAX_BODY_BYTES == 64 * 1024
    assert SNAPSHOTS_KEEP_PER_SHARD == 20 and SNAPSHOT_QUOTA_BYTES == 1 << 30
    with pytest.raises(ValueError, match="snapshots_keep_per_shard"):
        ServiceOptions(snapshots_keep_per_shard=0)


def test_each_shard_keeps_its_newest_snapshots(service: WorldService) -> None:
    a, b = sorted(service.world.shards)[:2]
    taken = []
    for _ in range(5):
        taken.append(service.snapshot(a).snapshot_id)
        service.step()
    other = service.snapshot(b).snapshot_id
    assert [s.snapshot_id for s in service.snapshots(a)] == taken[-3:]  # oldest first, 3 kept
    assert [s.snapshot_id for s in service.snapshots(b)] == [other]  # another shard's are untouched
    assert service.store.get_snapshot(taken[0]) is None
    assert service.restore(a, taken[-1]).snapshot_id == taken[-1]  # what is kept still restores


def test_quota_evicts_oldest_but_never_a_shards_newest(service: WorldService) -> None:
    a, b = sorted(service.world.shards)[:2]
    first_a = service.snapshot(a)
    first_b = service.snapshot(b)
    one = service.store.snapshot_bytes() // 2
    store: WorldStore = service.store
    # a quota of about three snapshots: the oldest go first, each shard's newest stays
    shard = service.world.shards[a]
    info = first_a.model_copy(update={"snapshot_id": "snap-q1"})
    store.save_snapshot(info, shard.state_dict(), keep_per_shard=None, quota_bytes=int(one * 3.5))
    evicted = store.save_snapshot(
        first_a.model_copy(update={"snapshot_id": "snap-q2"}),
        shard.state_dict(),
        keep_per_shard=None,
        quota_bytes=int(one * 3.5),
    )
    assert evicted == [first_a.snapshot_id]
    assert {s.snapshot_id for s in store.list_snapshots()} == {first_b.snapshot_id, "snap-q1", "snap-q2"}
    # a quota smaller than one snapshot still keeps every shard's newest
    store.save_snapshot(
        first_a.model_copy(update={"snapshot_id": "snap-q3"}),
        shard.state_dict(),
        keep_per_shard=None,
        quota_bytes=1,
    )
    assert {s.snapshot_id for s in store.list_snapshots()} == {first_b.snapshot_id, "snap-q3"}
