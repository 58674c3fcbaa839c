"""Landing: layout, atomicity, schema, retention, config feed and corrupt batches."""

from __future__ import annotations

import re
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from aegis.domain import Fault, FaultKind, WorldParams
from aegis.telemetry import KINDS, SCHEMA_V1, config_landing_path, config_schema
from aegis.world.landing import CORRUPT_MODES, UNKNOWN_KIND, LandingWriter, corrupt_mode
from aegis.world.runner import run_world
from aegis.world.sim import World

INSTANCE = "0123abcd"  # two writers landing the same world: the same instance
LAYOUT = re.compile(
    r"date=\d{4}-\d{2}-\d{2}/hour=\d{2}/shard=[a-z]+-[a-z]+-\d/\d{8}T\d{6}-[0-9a-f]{12}\.parquet"
)


def land(writer: LandingWriter, world: World, ticks: int) -> None:
    for _ in range(ticks):
        now = world.game_time
        writer.add_tick(world.shards, world.step(), now)


def test_two_hour_run_lands_every_kind_in_schema(aegis_home):
    summary = run_world(aegis_home, hours=2, players_per_shard=500, explore=False)
    root = aegis_home.landing_telemetry
    files = sorted(root.rglob("*.parquet"))
    assert summary.files == len(files) == 9 * 24  # 9 shards x 24 five-minute windows
    assert not list(root.rglob("*.tmp")) and not list(root.rglob(".*"))
    for f in files:
        assert LAYOUT.fullmatch(f.relative_to(root).as_posix()), f
    tables = [pq.read_table(f) for f in files]
    assert all(t.schema.equals(SCHEMA_V1) for t in tables)
    t = pa.concat_tables(tables)
    assert t.num_rows == summary.events
    assert set(pc.unique(t["kind"]).to_pylist()) == set(KINDS) == set(summary.kinds)
    assert len(pc.unique(t["event_id"])) == t.num_rows
    # A file holds exactly its window: all rows inside [start, start + 5 min).
    one = files[0]
    start = pc.min(pq.read_table(one)["ts"]).as_py()
    assert one.name.startswith(f"{start:%Y%m%dT%H%M}")
    assert summary.bytes == sum(f.stat().st_size for f in files)


def test_retention_bounds_the_landed_hours(tmp_path):
    world = World(players_per_shard=80, shards_per_region=1, tick_minutes=5)
    writer = LandingWriter(tmp_path / "telemetry", retention_hours=1, batch_minutes=30)
    land(writer, world, 5 * 12)
    writer.flush()
    hours = sorted({p.parent.parent.name for p in (tmp_path / "telemetry").rglob("*.parquet")})
    assert len(hours) <= 2
    assert writer.stats.deleted_files > 0
    files = list((tmp_path / "telemetry").rglob("*.parquet"))
    assert len(files) <= 2 * 2 * 3  # 2 hours x 2 windows x 3 shards
    assert writer.stats.files == 10 * 3


def test_config_feed_written_on_every_version(tmp_path):
    world = World(players_per_shard=50, shards_per_region=1)
    writer = LandingWriter(tmp_path / "telemetry")
    land(writer, world, 3)
    shard = world.shards["us-east-1"]
    shard.set_params(WorldParams(drop_rate=1.3), 2, source="api")
    land(writer, world, 3)
    writer.flush()
    path = config_landing_path(tmp_path / "telemetry", "us-east-1", 2)
    row = pq.read_table(path)
    assert row.schema.equals(config_schema())
    assert row.to_pylist()[0]["p_drop_rate"] == 1.3
    assert row.to_pylist()[0]["source"] == "api"
    assert config_landing_path(tmp_path / "telemetry", "eu-west-1", 1).exists()
    assert writer.stats.config_files == 4


@pytest.mark.parametrize("magnitude", [1, 2, 3, 4])
def test_corrupt_telemetry_lands_one_corrupt_batch(tmp_path, magnitude):
    world = World(players_per_shard=200, shards_per_region=1)
    writer = LandingWriter(tmp_path / "telemetry", batch_minutes=5)
    shard = world.shards["eu-west-1"]
    shard.inject(
        Fault(kind=FaultKind.CORRUPT_TELEMETRY, shard_id="eu-west-1", magnitude=magnitude), world.game_time
    )
    land(writer, world, 10)
    writer.flush()
    mode = corrupt_mode(magnitude)
    assert mode == CORRUPT_MODES[magnitude - 1]
    assert writer.stats.corrupt_batches == 1
    eu = sorted((tmp_path / "telemetry").rglob("shard=eu-west-1/*.parquet"))
    assert len(eu) == 2
    bad, good = eu
    assert pq.read_table(good).schema.equals(SCHEMA_V1)
    if mode == "truncated":
        with pytest.raises(pa.ArrowInvalid):
            pq.read_table(bad)
        return
    t = pq.read_table(bad)
    n_bad = (t.num_rows + 9) // 10
    if mode == "bad_values":
        assert count_true(pc.equal(t["kind"], UNKNOWN_KIND)) == n_bad
        assert count_true(pc.less(t["amount"], 0)) == n_bad
    elif mode == "null_required":
        assert t["player_id"].null_count >= n_bad - 1  # one server_tick row may already be null
    else:
        ceiling = pa.scalar(world.game_time + timedelta(days=30), pa.timestamp("us", "UTC"))
        assert count_true(pc.greater(t["ts"], ceiling)) == n_bad
    # The other shards landed clean batches.
    assert all(
        pq.read_table(f).schema.equals(SCHEMA_V1)
        for f in (tmp_path / "telemetry").rglob("shard=us-east-1/*.parquet")
    )


def count_true(mask: pa.ChunkedArray) -> int:
    return int(pc.sum(pc.fill_null(mask, False).cast(pa.int64())).as_py() or 0)


def test_corrupt_fault_while_down_waits_for_data(tmp_path):
    world = World(players_per_shard=100, shards_per_region=1)
    writer = LandingWriter(tmp_path / "telemetry", batch_minutes=5)
    sid = "ap-southeast-1"
    now = world.game_time
    world.shards[sid].inject(Fault(kind=FaultKind.SHARD_CRASH, shard_id=sid, duration_minutes=12), now)
    world.shards[sid].inject(Fault(kind=FaultKind.CORRUPT_TELEMETRY, shard_id=sid, magnitude=2), now)
    land(writer, world, 25)
    writer.flush()
    assert writer.stats.corrupt_batches == 1
    files = sorted((tmp_path / "telemetry").rglob(f"shard={sid}/*.parquet"))
    assert files[0].name.startswith("20260102T0010")  # first window with data (shard back at 00:12)
    assert UNKNOWN_KIND in pq.read_table(files[0])["kind"].to_pylist()


def test_writer_rejects_bad_settings_and_tables(tmp_path):
    with pytest.raises(ValueError, match="batch_minutes"):
        LandingWriter(tmp_path, batch_minutes=0)
    with pytest.raises(ValueError, match="retention_hours"):
        LandingWriter(tmp_path, retention_hours=-1)
    world = World(players_per_shard=10, shards_per_region=1)
    writer = LandingWriter(tmp_path)
    with pytest.raises(ValueError, match="SCHEMA_V1"):
        writer.add(world.shards["eu-west-1"], pa.table({"x": [1]}))


def test_add_step_lands_what_add_lands(tmp_path):
    """The runner's fast path (step straight into the window) lands the same batches as add()."""
    slow_world = World(seed=12, players_per_shard=150, shards_per_region=1)
    fast_world = World(seed=12, players_per_shard=150, shards_per_region=1)
    for w in (slow_world, fast_world):
        w.shards["us-east-1"].inject(
            Fault(kind=FaultKind.CORRUPT_TELEMETRY, shard_id="us-east-1", magnitude=2), w.game_time
        )
    slow = LandingWriter(tmp_path / "slow" / "telemetry", batch_minutes=5, instance_id=INSTANCE)
    fast = LandingWriter(tmp_path / "fast" / "telemetry", batch_minutes=5, instance_id=INSTANCE)
    land(slow, slow_world, 12)
    for _ in range(12):
        now = fast_world.game_time
        for shard in fast_world.shards.values():
            fast.add_step(shard, fast_world.tick_minutes, now)
        fast_world.game_time = now + timedelta(minutes=fast_world.tick_minutes)
    slow.flush()
    fast.flush()
    assert fast.stats.events == slow.stats.events and fast.stats.kinds == slow.stats.kinds
    assert fast.stats.files == slow.stats.files == 9 and fast.stats.corrupt_batches == 1

    def rows(root):
        return pa.concat_tables([pq.read_table(f) for f in sorted(root.rglob("*.parquet"))]).sort_by(
            "event_id"
        )

    assert rows(tmp_path / "fast" / "telemetry").equals(rows(tmp_path / "slow" / "telemetry"))


def test_retention_only_deletes_the_writers_own_shards(tmp_path):
    root = tmp_path / "telemetry"
    foreign = root / "date=2026-01-02" / "hour=00" / "shard=mars-1" / "x.parquet"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"not ours")
    world = World(players_per_shard=40, shards_per_region=1, tick_minutes=5)
    writer = LandingWriter(root, retention_hours=1, batch_minutes=30)
    land(writer, world, 5 * 12)
    writer.flush()
    assert writer.stats.deleted_files > 0
    assert foreign.exists()
    assert not list((root / "date=2026-01-02" / "hour=00").glob("shard=eu-west-1"))


def test_add_group_step_lands_what_add_step_lands(tmp_path):
    """The fused path (one tick for a group of shards) lands the same batches as shard by shard,
    across a config change, a corrupt fault and a crash of one shard of the group."""
    worlds = [World(seed=14, players_per_shard=200, shards_per_region=1) for _ in range(2)]
    for w in worlds:
        w.shards["eu-west-1"].inject(
            Fault(kind=FaultKind.CORRUPT_TELEMETRY, shard_id="eu-west-1", magnitude=3), w.game_time
        )
    by_shard = LandingWriter(tmp_path / "a" / "telemetry", batch_minutes=5, instance_id=INSTANCE)
    fused = LandingWriter(tmp_path / "b" / "telemetry", batch_minutes=5, instance_id=INSTANCE)
    for t in range(13):
        for w in worlds:
            if t == 4:
                w.shards["us-east-1"].set_params(WorldParams(drop_rate=1.8), 2, "exploration")
            if t == 6:
                crash = Fault(kind=FaultKind.SHARD_CRASH, shard_id="ap-southeast-1", duration_minutes=2)
                w.shards["ap-southeast-1"].inject(crash, w.game_time)
        now = worlds[0].game_time
        counts = [by_shard.add_step(s, 1.0, now) for s in worlds[0].shards.values()]
        assert fused.add_group_step(worlds[1].group(), 1.0, now) == counts
        for w in worlds:
            w.game_time = now + timedelta(minutes=1)
    by_shard.flush()
    fused.flush()
    assert fused.stats == by_shard.stats
    assert fused.stats.corrupt_batches == 1 and fused.stats.config_files == 4

    def rows(root):
        return pa.concat_tables([pq.read_table(f) for f in sorted(root.rglob("*.parquet"))]).sort_by(
            "event_id"
        )

    assert rows(tmp_path / "b" / "telemetry").equals(rows(tmp_path / "a" / "telemetry"))


# ------------------------------------------------------- review fixes (lake-fixes)


def test_writer_lands_its_game_clock_ahead_of_each_window(tmp_path):
    from aegis.telemetry import read_world_clock

    root = tmp_path / "telemetry"
    world = World(players_per_shard=60, shards_per_region=1, tick_minutes=5)
    world.shards["eu-west-1"].inject(
        Fault(kind=FaultKind.CORRUPT_TELEMETRY, shard_id="eu-west-1", magnitude=4), world.game_time
    )
    writer = LandingWriter(root, batch_minutes=15, tick_minutes=5)
    land(writer, world, 12)  # one game hour
    writer.flush()
    clock = read_world_clock(root)
    assert clock is not None and clock.tick_seconds == 300.0
    # The end of the newest window: the future-ts corrupt batch did not move it.
    assert clock.game_time == world.game_time
    newest = max(pc.max(pq.read_table(f)["ts"]).as_py() for f in root.rglob("shard=us-*/*.parquet"))
    assert newest < clock.bound
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_retention_keeps_batches_the_keep_predicate_spares(tmp_path, caplog):
    root = tmp_path / "telemetry"
    world = World(players_per_shard=40, shards_per_region=1, tick_minutes=5)
    spared = []

    def keep(path):
        keep_it = path.parent.name == "shard=eu-west-1"
        if keep_it:
            spared.append(path)
        return keep_it

    writer = LandingWriter(root, retention_hours=1, batch_minutes=30, keep=keep)
    with caplog.at_level("WARNING", logger="aegis.world.landing"):
        land(writer, world, 5 * 12)
        writer.flush()
    eu = list(root.rglob("shard=eu-west-1/*.parquet"))
    assert len(eu) == 10  # every eu batch of the five hours is still there
    assert spared and writer.stats.deleted_files > 0
    assert writer.stats.kept_files == 6  # three expired hours x two windows, as of the last pass
    assert len(list(root.rglob("shard=us-east-1/*.parquet"))) <= 4
    assert any("kept 6 batch(es) of shard eu-west-1" in r.getMessage() for r in caplog.records)


def test_batch_writer_uses_the_shared_atomic_writer(tmp_path, monkeypatch):
    import aegis.world.landing as landing_mod
    from aegis.world.landing import DICTIONARY_COLUMNS, write_batch_atomic

    calls = []
    real = landing_mod.write_atomic

    def recording(table, path, compression="zstd", **options):
        calls.append({"compression": compression, **options})
        return real(table, path, compression, **options)

    monkeypatch.setattr(landing_mod, "write_atomic", recording)
    world = World(players_per_shard=40, shards_per_region=1)
    table = world.step()["eu-west-1"]
    path = write_batch_atomic(table, tmp_path / "b" / "x.parquet")
    assert calls == [landing_mod.parquet_options("zstd")]
    assert calls[0]["use_dictionary"] == list(DICTIONARY_COLUMNS) and calls[0]["compression_level"] == 1
    assert pq.read_table(path).equals(table)
    with pytest.raises((ValueError, pa.ArrowException)):
        write_batch_atomic(table, tmp_path / "b" / "y.parquet", compression="no-such-codec")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["x.parquet"]


def test_world_service_retention_spares_batches_pending_ingestion(aegis_home):
    from aegis.world.landing import DEFAULT_RETENTION_HOURS
    from aegis.world.service import ServiceOptions, WorldService

    service = WorldService(aegis_home, ServiceOptions(speed=0, players_per_shard=20, shards_per_region=1))
    try:
        assert service.landing is not None
        assert service.landing.retention_hours == DEFAULT_RETENTION_HOURS
        assert service.landing.tick_minutes == service.world.tick_minutes
        batch = aegis_home.landing_telemetry / "date=2026-01-02" / "hour=00" / "shard=x" / "b.parquet"
        assert service.landing.keep is not None and service.landing.keep(batch)  # never ingested
    finally:
        service.stop()
    kept_all = WorldService(aegis_home, ServiceOptions(speed=0, retention_hours=None))
    try:
        assert kept_all.landing is not None
        assert kept_all.landing.retention_hours is None and kept_all.landing.keep is None
    finally:
        kept_all.stop()
    with pytest.raises(ValueError, match="retention_hours"):
        ServiceOptions(retention_hours=0)
