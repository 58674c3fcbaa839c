"""Durable world state: one SQLite database in WAL mode under ``AEGIS_HOME/world``.

The rule the store keeps: what the server acknowledged (a config apply, a
snapshot, a role change, an idempotency key) is never lost, and a ``kill -9``
loses at most the tick that was being simulated. Every tick commits, in one
transaction, the full state of every shard (``ShardSim.state_dict()``), the
world clock and that tick's telemetry (until it is landed as Parquet), so a
restart resumes exactly where the last commit left off and the continuation is
bit-identical to an uninterrupted run.

Durability levels: ticks commit with ``synchronous=NORMAL`` (in WAL mode a
commit survives a process crash, only an OS crash or power loss may roll back
the newest ticks), acknowledged writes commit with ``synchronous=FULL`` (they
also survive power loss). That is the trade-off between a tick rate the server
can sustain and the guarantee a client was given.

State trees are split (see :func:`encode_state`): shape and scalars to JSON,
numpy arrays raw into one ``.npz`` blob; no pickle, so a tampered database can
corrupt data but never execute code.
"""

from __future__ import annotations

import io
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from aegis.domain import Integrity, SnapshotInfo, WorldParams

STORE_SCHEMA_VERSION = 1
# Snapshot retention (docs/game-backend-api.md, "Snapshots"): the newest N per shard, and a
# quota over all of them; the newest snapshot of each shard is never evicted.
SNAPSHOTS_KEEP_PER_SHARD = 20
SNAPSHOT_QUOTA_BYTES = 1 << 30
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS world (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    tick         INTEGER NOT NULL,
    state_json   TEXT NOT NULL,
    state_arrays BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS shards (
    shard_id     TEXT PRIMARY KEY,
    region       TEXT NOT NULL,
    role         TEXT NOT NULL,
    tick         INTEGER NOT NULL,
    state_json   TEXT NOT NULL,
    state_arrays BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS config_history (
    shard_id    TEXT NOT NULL,
    version     INTEGER NOT NULL,
    params_json TEXT NOT NULL,
    source      TEXT NOT NULL,
    game_time   TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (shard_id, version)
);
CREATE TABLE IF NOT EXISTS snapshots (
    snapshot_id    TEXT PRIMARY KEY,
    shard_id       TEXT NOT NULL,
    game_time      TEXT NOT NULL,
    config_version INTEGER NOT NULL,
    integrity_json TEXT NOT NULL,
    state_json     TEXT NOT NULL,
    state_arrays   BLOB NOT NULL,
    created_at     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_by_shard ON snapshots (shard_id, game_time);
CREATE TABLE IF NOT EXISTS idempotency (
    key           TEXT PRIMARY KEY,
    shard_id      TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status_code   INTEGER NOT NULL,
    response_json TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_events (
    tick     INTEGER NOT NULL,
    shard_id TEXT NOT NULL,
    ipc      BLOB NOT NULL,
    PRIMARY KEY (tick, shard_id)
);
"""

# --------------------------------------------------------------------- state codec

_ARRAY = "__ndarray__"
_TUPLE = "__tuple__"
_DATETIME = "__datetime__"
_BYTES = "__bytes__"
_MARKERS = frozenset({_ARRAY, _TUPLE, _DATETIME, _BYTES})


class StoreError(RuntimeError):
    """The world database is missing, corrupt or from an incompatible version."""


class StateCodecError(ValueError):
    """A state tree holds a value the codec cannot represent losslessly."""


def encode_state(state: dict[str, Any]) -> tuple[str, bytes]:
    """Split ``state`` into (JSON text, npz bytes); :func:`decode_state` inverts it exactly.

    JSON is exact for Python ints of any width (PCG64 state is 128-bit) and for
    floats (``repr`` round-trips); arrays keep dtype and shape in the npz.
    """
    arrays: dict[str, np.ndarray] = {}

    def enc(value: Any, path: str) -> Any:
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise StateCodecError(f"{path}: object arrays cannot be stored (dtype {value.dtype})")
            name = f"a{len(arrays)}"
            arrays[name] = value
            return {_ARRAY: name}
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise StateCodecError(f"{path}: dict keys must be strings, got {type(k).__name__} {k!r}")
                if k in _MARKERS:
                    raise StateCodecError(f"{path}: key {k!r} is reserved by the state codec")
                out[k] = enc(v, f"{path}.{k}")
            return out
        if isinstance(value, tuple):
            return {_TUPLE: [enc(v, f"{path}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [enc(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, datetime):
            return {_DATETIME: value.isoformat()}
        if isinstance(value, bytes):
            return {_BYTES: value.hex()}
        if isinstance(value, np.generic):  # numpy scalars: keep the value
            return value.item()
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise StateCodecError(f"{path}: cannot store a {type(value).__name__}")

    tree = enc(state, "state")
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy stubs type the keywords as allow_pickle
    return json.dumps(tree, separators=(",", ":")), buf.getvalue()


def decode_state(text: str, blob: bytes) -> dict[str, Any]:
    """Rebuild the tree written by :func:`encode_state` (arrays are fresh, writable)."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}

    def dec(value: Any) -> Any:
        if isinstance(value, dict):
            if len(value) == 1:
                ((key, inner),) = value.items()
                if key == _ARRAY:
                    return arrays[inner]
                if key == _TUPLE:
                    return tuple(dec(v) for v in inner)
                if key == _DATETIME:
                    return datetime.fromisoformat(inner)
                if key == _BYTES:
                    return bytes.fromhex(inner)
            return {k: dec(v) for k, v in value.items()}
        if isinstance(value, list):
            return [dec(v) for v in value]
        return value

    out = dec(json.loads(text))
    if not isinstance(out, dict):
        raise StateCodecError("stored state is not a dict")
    return out


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class StoredShard:
    shard_id: str
    region: str
    role: str
    tick: int
    state: dict[str, Any]


@dataclass(frozen=True)
class StoredWorld:
    """What a restart needs: world-level state, each shard's state and role, the tick."""

    meta: dict[str, Any]
    world_state: dict[str, Any]
    shards: dict[str, StoredShard]
    tick: int


@dataclass(frozen=True)
class StoredSnapshot:
    info: SnapshotInfo
    state: dict[str, Any]


@dataclass(frozen=True)
class IdempotentResponse:
    key: str
    shard_id: str
    request_hash: str
    status_code: int
    body: dict[str, Any]


@dataclass(frozen=True)
class ConfigRecord:
    """One applied config version; what ``config_history`` holds."""

    shard_id: str
    version: int
    params: WorldParams
    source: str
    game_time: datetime


def _now() -> str:
    return datetime.now(UTC).isoformat()


class WorldStore:
    """The world database. Thread-safe: one connection guarded by a lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: could not enable WAL journal mode (got {mode!r})")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable world database: {exc}") from exc
        stored = self.get_meta("store_schema_version")
        if stored is None:
            self.set_meta("store_schema_version", STORE_SCHEMA_VERSION)
        elif int(stored) != STORE_SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: store schema version {stored} is not supported (expected {STORE_SCHEMA_VERSION})"
            )

    # ---------------------------------------------------------------- plumbing

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.DatabaseError:
                pass
            self._db.close()

    @contextmanager
    def _tx(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``durable`` = fsync on commit (acknowledged writes)."""
        with self._lock:
            if durable:
                self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")

    def integrity_check(self) -> str:
        """SQLite's own check: ``"ok"`` when no page or index is torn."""
        with self._lock:
            rows = self._db.execute("PRAGMA integrity_check").fetchall()
        return "; ".join(str(r[0]) for r in rows)

    def get_meta(self, key: str) -> Any | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        with self._tx(durable=True) as db:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # ---------------------------------------------------------------- world

    def has_world(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM world WHERE id = 1").fetchone() is not None

    def create_world(
        self,
        meta: dict[str, Any],
        world_state: dict[str, Any],
        shards: dict[str, tuple[str, str, dict[str, Any]]],
        configs: list[ConfigRecord],
    ) -> None:
        """Persist a freshly created world: ``shards`` maps id -> (region, role, state)."""
        w_json, w_blob = encode_state(world_state)
        with self._tx(durable=True) as db:
            if db.execute("SELECT 1 FROM world WHERE id = 1").fetchone():
                raise StoreError(f"{self.path}: a world already exists here")
            for key, value in meta.items():
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))
            db.execute(
                "INSERT INTO world(id, tick, state_json, state_arrays) VALUES (1, 0, ?, ?)", (w_json, w_blob)
            )
            for shard_id, (region, role, state) in shards.items():
                s_json, s_blob = encode_state(state)
                db.execute(
                    "INSERT INTO shards(shard_id, region, role, tick, state_json, state_arrays) VALUES (?,?,?,?,?,?)",
                    (shard_id, region, role, 0, s_json, s_blob),
                )
            for rec in configs:
                self._insert_config(db, rec)

    def load_world(self) -> StoredWorld | None:
        """The last committed world, or None when this database holds none yet."""
        with self._lock:
            meta_rows = self._db.execute("SELECT key, value FROM meta").fetchall()
            world_row = self._db.execute(
                "SELECT tick, state_json, state_arrays FROM world WHERE id = 1"
            ).fetchone()
            shard_rows = self._db.execute(
                "SELECT shard_id, region, role, tick, state_json, state_arrays FROM shards ORDER BY shard_id"
            ).fetchall()
        if world_row is None:
            return None
        meta = {k: json.loads(v) for k, v in meta_rows}
        tick = int(world_row[0])
        try:
            world_state = decode_state(world_row[1], world_row[2])
            shards = {
                sid: StoredShard(sid, region, role, int(s_tick), decode_state(s_json, s_blob))
                for sid, region, role, s_tick, s_json, s_blob in shard_rows
            }
        except (ValueError, OSError, KeyError) as exc:
            raise StoreError(f"{self.path}: stored world state cannot be decoded: {exc}") from exc
        torn = sorted({s.tick for s in shards.values()} - {tick})
        if torn:
            raise StoreError(f"{self.path}: torn world: shard ticks {torn} differ from world tick {tick}")
        return StoredWorld(meta=meta, world_state=world_state, shards=shards, tick=tick)

    def commit_tick(
        self,
        tick: int,
        world_state: dict[str, Any],
        shard_states: dict[str, dict[str, Any]],
        events: dict[str, bytes],
        landed_through: int | None,
        configs: list[ConfigRecord] | None = None,
    ) -> None:
        """One tick, atomically: world state, every shard's state, the tick's unlanded
        events and the config versions the tick put in force (exploration).

        ``events`` maps shard id -> Arrow IPC bytes of that tick's telemetry;
        ``landed_through`` = the newest tick whose events are now in Parquet,
        whose journal rows are dropped in the same transaction.
        """
        w_json, w_blob = encode_state(world_state)
        encoded = {sid: encode_state(state) for sid, state in shard_states.items()}
        with self._tx() as db:
            cur = db.execute(
                "UPDATE world SET tick = ?, state_json = ?, state_arrays = ? WHERE id = 1",
                (tick, w_json, w_blob),
            )
            if cur.rowcount != 1:
                raise StoreError(f"{self.path}: no world to commit a tick to")
            for sid, (s_json, s_blob) in encoded.items():
                cur = db.execute(
                    "UPDATE shards SET tick = ?, state_json = ?, state_arrays = ? WHERE shard_id = ?",
                    (tick, s_json, s_blob, sid),
                )
                if cur.rowcount != 1:
                    raise StoreError(f"unknown shard {sid!r} in tick commit")
            for sid, ipc in events.items():
                db.execute(
                    "INSERT OR REPLACE INTO pending_events(tick, shard_id, ipc) VALUES (?,?,?)",
                    (tick, sid, ipc),
                )
            if landed_through is not None:
                db.execute("DELETE FROM pending_events WHERE tick <= ?", (landed_through,))
            for rec in configs or ():
                self._insert_config(db, rec)

    def save_shard(
        self,
        shard_id: str,
        state: dict[str, Any],
        config: ConfigRecord | None = None,
        idempotent: IdempotentResponse | None = None,
    ) -> None:
        """Acknowledged change to one shard (config apply, restore): durable, all or nothing."""
        s_json, s_blob = encode_state(state)
        with self._tx(durable=True) as db:
            cur = db.execute(
                "UPDATE shards SET state_json = ?, state_arrays = ? WHERE shard_id = ?",
                (s_json, s_blob, shard_id),
            )
            if cur.rowcount != 1:
                raise StoreError(f"unknown shard {shard_id!r}")
            if config is not None:
                self._insert_config(db, config)
            if idempotent is not None:
                db.execute(
                    "INSERT INTO idempotency(key, shard_id, request_hash, status_code, response_json, created_at)"
                    " VALUES (?,?,?,?,?,?)",
                    (
                        idempotent.key,
                        idempotent.shard_id,
                        idempotent.request_hash,
                        idempotent.status_code,
                        json.dumps(idempotent.body),
                        _now(),
                    ),
                )

    def set_role(self, shard_id: str, role: str) -> None:
        with self._tx(durable=True) as db:
            cur = db.execute("UPDATE shards SET role = ? WHERE shard_id = ?", (role, shard_id))
            if cur.rowcount != 1:
                raise StoreError(f"unknown shard {shard_id!r}")

    # ---------------------------------------------------------------- events journal

    def pending_events(self) -> list[tuple[int, str, bytes]]:
        """Telemetry of committed ticks not yet landed as Parquet, oldest first."""
        with self._lock:
            return [
                (int(t), s, bytes(b))
                for t, s, b in self._db.execute(
                    "SELECT tick, shard_id, ipc FROM pending_events ORDER BY tick, shard_id"
                ).fetchall()
            ]

    def drop_pending(self, through_tick: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM pending_events WHERE tick <= ?", (through_tick,))

    # ---------------------------------------------------------------- configs

    @staticmethod
    def _insert_config(db: sqlite3.Connection, rec: ConfigRecord) -> None:
        db.execute(
            "INSERT INTO config_history(shard_id, version, params_json, source, game_time, recorded_at)"
            " VALUES (?,?,?,?,?,?)",
            (
                rec.shard_id,
                rec.version,
                rec.params.model_dump_json(),
                rec.source,
                rec.game_time.isoformat(),
                _now(),
            ),
        )

    def record_config(self, rec: ConfigRecord) -> None:
        with self._tx(durable=True) as db:
            self._insert_config(db, rec)

    def config_history(self, shard_id: str) -> list[ConfigRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT version, params_json, source, game_time FROM config_history WHERE shard_id = ? ORDER BY version",
                (shard_id,),
            ).fetchall()
        return [
            ConfigRecord(
                shard_id, int(v), WorldParams.model_validate_json(p), src, datetime.fromisoformat(gt)
            )
            for v, p, src, gt in rows
        ]

    # ---------------------------------------------------------------- idempotency

    def get_idempotent(self, key: str) -> IdempotentResponse | None:
        with self._lock:
            row = self._db.execute(
                "SELECT shard_id, request_hash, status_code, response_json FROM idempotency WHERE key = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return IdempotentResponse(key, row[0], row[1], int(row[2]), json.loads(row[3]))

    # ---------------------------------------------------------------- snapshots

    def save_snapshot(
        self,
        info: SnapshotInfo,
        state: dict[str, Any],
        *,
        keep_per_shard: int | None = SNAPSHOTS_KEEP_PER_SHARD,
        quota_bytes: int | None = SNAPSHOT_QUOTA_BYTES,
    ) -> list[str]:
        """Store a snapshot durably, then apply retention in the same transaction.

        Retention: a shard keeps its ``keep_per_shard`` newest snapshots, and all
        snapshots together stay under ``quota_bytes`` (oldest first go). The
        newest snapshot of every shard is never evicted, so a rollback point
        always survives. Returns the ids of the evicted snapshots.
        """
        s_json, s_blob = encode_state(state)
        with self._tx(durable=True) as db:
            db.execute(
                "INSERT INTO snapshots(snapshot_id, shard_id, game_time, config_version, integrity_json,"
                " state_json, state_arrays, created_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    info.snapshot_id,
                    info.shard_id,
                    info.game_time.isoformat(),
                    info.config_version,
                    info.integrity.model_dump_json(),
                    s_json,
                    s_blob,
                    _now(),
                ),
            )
            return self._retain(db, info.shard_id, keep_per_shard, quota_bytes)

    @staticmethod
    def _retain(
        db: sqlite3.Connection, shard_id: str, keep_per_shard: int | None, quota_bytes: int | None
    ) -> list[str]:
        order = "ORDER BY game_time DESC, created_at DESC, rowid DESC"
        evicted: list[str] = []
        if keep_per_shard is not None:
            rows = db.execute(
                f"SELECT snapshot_id FROM snapshots WHERE shard_id = ? {order}", (shard_id,)
            ).fetchall()
            evicted += [r[0] for r in rows[max(keep_per_shard, 1) :]]
            db.executemany("DELETE FROM snapshots WHERE snapshot_id = ?", [(e,) for e in evicted])
        if quota_bytes is not None:
            total = int(
                db.execute(
                    "SELECT COALESCE(SUM(LENGTH(state_json) + LENGTH(state_arrays)), 0) FROM snapshots"
                ).fetchone()[0]
            )
            if total > quota_bytes:
                newest = {
                    r[0]
                    for r in db.execute(
                        "SELECT (SELECT s2.snapshot_id FROM snapshots s2 WHERE s2.shard_id = s1.shard_id "
                        f"{order} LIMIT 1) FROM snapshots s1 GROUP BY shard_id"
                    ).fetchall()
                }
                candidates = db.execute(
                    "SELECT snapshot_id, LENGTH(state_json) + LENGTH(state_arrays) FROM snapshots "
                    "ORDER BY game_time, created_at, rowid"
                ).fetchall()
                for sid, size in candidates:
                    if total <= quota_bytes:
                        break
                    if sid in newest:
                        continue
                    db.execute("DELETE FROM snapshots WHERE snapshot_id = ?", (sid,))
                    evicted.append(sid)
                    total -= int(size)
        return evicted

    def snapshot_bytes(self) -> int:
        """Bytes the stored snapshots take (what the quota counts)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(LENGTH(state_json) + LENGTH(state_arrays)), 0) FROM snapshots"
            ).fetchone()
        return int(row[0])

    def _info(self, row: tuple[Any, ...]) -> SnapshotInfo:
        sid, shard, gt, ver, integ = row
        return SnapshotInfo(
            snapshot_id=sid,
            shard_id=shard,
            game_time=datetime.fromisoformat(gt),
            config_version=int(ver),
            integrity=Integrity.model_validate_json(integ),
        )

    def list_snapshots(self, shard_id: str | None = None) -> list[SnapshotInfo]:
        sql = "SELECT snapshot_id, shard_id, game_time, config_version, integrity_json FROM snapshots"
        args: tuple[Any, ...] = ()
        if shard_id is not None:
            sql += " WHERE shard_id = ?"
            args = (shard_id,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY game_time, created_at", args).fetchall()
        return [self._info(r) for r in rows]

    def count_snapshots(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0])

    def get_snapshot(self, snapshot_id: str) -> StoredSnapshot | None:
        with self._lock:
            row = self._db.execute(
                "SELECT snapshot_id, shard_id, game_time, config_version, integrity_json, state_json, state_arrays"
                " FROM snapshots WHERE snapshot_id = ?",
                (snapshot_id,),
            ).fetchone()
        if row is None:
            return None
        try:
            state = decode_state(row[5], row[6])
        except (ValueError, OSError) as exc:
            raise StoreError(f"snapshot {snapshot_id}: stored state cannot be decoded: {exc}") from exc
        return StoredSnapshot(self._info(row[:5]), state)
