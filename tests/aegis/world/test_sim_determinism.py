"""The simulator's output for fixed seeds, pinned: a refactor of the tick must not change one bit.

Each scenario runs a small seeded world and hashes everything it produced (the
event tables, column by column, and the shards' end state: integrity checksums,
economy, kind counts, population arrays, generator state). The digests were
captured from the simulator before the tick was split into methods; any change
to them is a behaviour change, not a refactor. A deliberate change to the model
updates them in the same commit, with the reason.

The scenarios cover both paths of the tick (a fused group of shards and a
shard alone), heterogeneous parameters across shards, map events, a login
queue at capacity, and the three faults the tick itself handles (crash,
latency spike, duplication exploit) and a restore mid-run; the runner scenario lands Parquet batches
with exploration changing parameters mid-run.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aegis.config import AegisPaths
from aegis.domain import N_STAGES, N_ZONES, Fault, FaultKind, WorldParams
from aegis.world.runner import run_world
from aegis.world.sim import ShardSim, World
from aegis.world.sim_tick import SLOT_FIELDS

# Captured from the simulator as it was before the tick refactor (issue 14).
FUSED_WORLD_DIGEST = "6c2fd42c25494928a7df394e6af13932cf464b8fb34efa6c24af06a256b781dc"
SOLO_SHARD_DIGEST = "fec0539c9f7c93765698fb7ce73e89fb8fbb7e6be5e69ca09fd04f38ab88909d"
RUNNER_DIGEST = "e250a721ef644500c8dd3999cb4ef1ad8657cca33244d6d6f2426c1cfa5accee"


def _hash_table(h: hashlib._Hash, t: pa.Table) -> None:
    """Column names and values in order (Python values: independent of chunking and buffers)."""
    h.update(str(t.num_rows).encode())
    for name in t.column_names:
        h.update(name.encode())
        h.update(repr(t.column(name).to_pylist()).encode())


def _hash_shard(h: hashlib._Hash, s: ShardSim) -> None:
    """The KPIs and the whole end state of a shard."""
    h.update(s.integrity().model_dump_json().encode())
    h.update(repr(sorted(s.economy().items())).encode())
    h.update(repr(sorted(s.kind_counts.items())).encode())
    h.update(repr((s.last_tick_ms, s.price_level, s.clock_us, s.next_player_seq, s.event_until_us)).encode())
    h.update(repr(s.rng.bit_generator.state).encode())
    for name in SLOT_FIELDS:
        h.update(np.ascontiguousarray(getattr(s, name)).tobytes())


def _varied() -> list[WorldParams]:
    """Parameters that differ per shard in every multiplier the tick reads."""
    return [
        WorldParams(map_event_frequency=24.0),
        WorldParams(
            sink_multiplier=2.5,
            source_multiplier=0.6,
            quest_pacing=0.4,
            quest_reward=3.0,
            drop_rate=2.0,
            npc_aggression=2.2,
            spawn_rate=[1.5, 0.5, 2.0, 1.0, 3.0, 0.8][:N_ZONES],
        ),
        WorldParams(quest_pacing=3.0, quest_difficulty=[2.5] * N_STAGES),
        WorldParams(elite_share=[0.9] * N_ZONES, map_event_frequency=12.0),
    ]


def fused_world_digest() -> str:
    """Six shards stepped as one fused group for 45 ticks, with faults and varied parameters."""
    world = World(seed=2026, players_per_shard=400, shards_per_region=2, capacity=150)
    shards = list(world.shards.values())
    for i, params in enumerate(_varied()):
        shards[i].set_params(params, 2)
    h = hashlib.sha256()
    for tick in range(45):
        now = world.game_time
        if tick == 3:
            shards[1].inject(
                Fault(kind=FaultKind.DUPLICATION_EXPLOIT, shard_id=shards[1].shard_id, magnitude=5.0), now
            )
            shards[2].inject(
                Fault(kind=FaultKind.LATENCY_SPIKE, shard_id=shards[2].shard_id, magnitude=8.0), now
            )
        if tick == 10:
            shards[3].inject(
                Fault(kind=FaultKind.SHARD_CRASH, shard_id=shards[3].shard_id, duration_minutes=6), now
            )
        if tick == 20:  # a restore replaces a shard's arrays: the group packs them again
            shards[4].load_state_dict(shards[4].state_dict())
        for sid, table in world.step().items():
            h.update(sid.encode())
            _hash_table(h, table)
    for s in shards:
        _hash_shard(h, s)
    return h.hexdigest()


def solo_shard_digest() -> str:
    """One shard stepped alone (a group of one) for 40 ticks, exploit and new parameters mid-run."""
    shard = ShardSim("eu-west-1", "eu-west", seed=99, players=600, capacity=250)
    h = hashlib.sha256()
    now = shard.clock
    for tick in range(40):
        if tick == 5:
            shard.inject(Fault(kind=FaultKind.DUPLICATION_EXPLOIT, shard_id="eu-west-1", magnitude=3.0), now)
        if tick == 20:
            shard.set_params(_varied()[1], 2)
        _hash_table(h, shard.step(1.0, now))
        now += timedelta(minutes=1)
    _hash_shard(h, shard)
    return h.hexdigest()


def runner_digest(home: Path) -> str:
    """``run_world`` in-process for 90 game minutes with exploration: the landed batches and end state."""
    world = World(seed=5, players_per_shard=250, shards_per_region=1)
    run_world(
        AegisPaths(home), hours=1.5, world=world, workers=1, explore_every_hours=0.25, retention_hours=None
    )
    files = sorted(AegisPaths(home).landing_telemetry.rglob("*.parquet"))
    assert files
    landed = pa.concat_tables([pq.read_table(f) for f in files]).sort_by("event_id")
    h = hashlib.sha256()
    _hash_table(h, landed)
    for s in world.shards.values():
        h.update(str(s.config_version).encode())
        _hash_shard(h, s)
    return h.hexdigest()


def test_fused_world_is_bit_identical_to_the_pinned_run() -> None:
    assert fused_world_digest() == FUSED_WORLD_DIGEST


def test_solo_shard_is_bit_identical_to_the_pinned_run() -> None:
    assert solo_shard_digest() == SOLO_SHARD_DIGEST


def test_runner_lands_bit_identical_batches_to_the_pinned_run(tmp_path: Path) -> None:
    assert runner_digest(tmp_path / "home") == RUNNER_DIGEST
