"""The running world: a background thread that advances the simulation in accelerated
game time, lands its telemetry, explores parameters, and serves thread-safe
operations to the HTTP layer.

One lock (``WorldService._lock``) orders everything: a tick (step, exploration,
landing, commit) runs under it, and so does every API operation. That is what
makes a snapshot consistent (always taken between ticks), a config apply atomic
(validated fully, applied and committed with its idempotency record before the
next tick sees it), and a restore safe (the shard, indeed the world, is paused
while the restored state is verified).

Durability (see :mod:`aegis.world.store`): each tick commits every shard's
state and the tick's not-yet-landed telemetry in one SQLite transaction, so a
``kill -9`` loses at most the tick in progress, and a restart replays the
journaled telemetry into the landing writer, resuming bit-identically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import metadata
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from aegis.config import AegisPaths
from aegis.domain import (
    Fault,
    FaultKind,
    Integrity,
    ShardConfig,
    ShardInfo,
    ShardRole,
    SnapshotInfo,
    WorldParams,
    new_id,
)
from aegis.telemetry import WORLD_EPOCH
from aegis.world.client import FaultReceipt, Health, RestoreResult
from aegis.world.exploration import DEFAULT_EXPLORE_EVERY_HOURS, exploration_epoch, explore
from aegis.world.metrics import WorldMetrics
from aegis.world.store import (
    SNAPSHOT_QUOTA_BYTES,
    SNAPSHOTS_KEEP_PER_SHARD,
    ConfigRecord,
    IdempotentResponse,
    WorldStore,
)

log = logging.getLogger(__name__)

DEFAULT_SPEED = 60.0
DEFAULT_SEED = 7
DEFAULT_PLAYERS_PER_SHARD = 5000
# Landing retention of the live server, in game hours (aegis.world.landing.DEFAULT_RETENTION_HOURS:
# a week of game time, under 3 wall hours at speed 60); batches not yet ingested are kept past it.
DEFAULT_RETENTION_HOURS = 24 * 7
# When the simulation falls behind its target speed by more than this many ticks it
# stops trying to catch up (the backlog is dropped, game time simply runs slower).
MAX_CATCHUP_TICKS = 10
STOP_TIMEOUT_S = 30.0
IDEMPOTENCY_KEY_MAX = 200
# If-Match carries a config version: digits only (ASCII), at most this many of them.
IF_MATCH_MAX_DIGITS = 18
_IF_MATCH_RE = re.compile(
    rf'^(?:W/)?(?:"([0-9]{{1,{IF_MATCH_MAX_DIGITS}}})"|([0-9]{{1,{IF_MATCH_MAX_DIGITS}}}))$'
)
# Key of the service's own state (exploration epochs) inside the stored world state.
SERVICE_STATE_KEY = "aegis_service"


def server_version() -> str:
    try:
        return metadata.version("aegis")
    except metadata.PackageNotFoundError:  # pragma: no cover - source tree without install
        return "0+unknown"


# ------------------------------------------------------------------ errors


class ServiceError(Exception):
    """An API-level failure: HTTP status, a code, a message for people, details."""

    status_code = 400
    code = "invalid_request"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFoundError(ServiceError):
    status_code = 404
    code = "not_found"


class InvalidRequest(ServiceError):
    status_code = 422
    code = "invalid_request"


class PreconditionRequired(ServiceError):
    status_code = 428
    code = "precondition_required"


class StaleVersion(ServiceError):
    status_code = 412
    code = "stale_config_version"


class IdempotencyConflictError(ServiceError):
    status_code = 409
    code = "idempotency_conflict"


class IntegrityMismatchError(ServiceError):
    status_code = 409
    code = "integrity_mismatch"


class Unavailable(ServiceError):
    status_code = 503
    code = "unavailable"


# ------------------------------------------------------------------ options


@dataclass(frozen=True)
class ServiceOptions:
    """How to run the world. ``seed``/``players_per_shard``/``shards_per_region`` only
    matter when the world is created; a restart continues the stored world."""

    speed: float = DEFAULT_SPEED
    seed: int = DEFAULT_SEED
    players_per_shard: int = DEFAULT_PLAYERS_PER_SHARD
    shards_per_region: int = 3
    explore: bool = True
    explore_every_hours: float = DEFAULT_EXPLORE_EVERY_HOURS
    land_telemetry: bool = True
    retention_hours: float | None = DEFAULT_RETENTION_HOURS  # None keeps every landed batch
    snapshots_keep_per_shard: int | None = SNAPSHOTS_KEEP_PER_SHARD  # None: no count limit
    snapshot_quota_bytes: int | None = SNAPSHOT_QUOTA_BYTES  # None: no size limit

    def __post_init__(self) -> None:
        if not (self.speed >= 0 and math.isfinite(self.speed)):
            raise ValueError(
                f"speed must be a finite number >= 0 (game seconds per wall second), got {self.speed}"
            )
        if self.players_per_shard < 1:
            raise ValueError(f"players_per_shard must be >= 1, got {self.players_per_shard}")
        if self.shards_per_region < 1:
            raise ValueError(f"shards_per_region must be >= 1, got {self.shards_per_region}")
        if self.explore_every_hours <= 0:
            raise ValueError(f"explore_every_hours must be > 0, got {self.explore_every_hours}")
        for name in ("snapshots_keep_per_shard", "snapshot_quota_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.retention_hours is not None and not (
            self.retention_hours > 0 and math.isfinite(self.retention_hours)
        ):
            raise ValueError(f"retention_hours must be a positive number or None, got {self.retention_hours}")


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _ipc_table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def parse_if_match(raw: str | None) -> int:
    """``If-Match: 7``, ``"7"`` or ``W/"7"`` -> 7; a missing header is a 428, garbage a 400-class."""
    if raw is None or not raw.strip():
        raise PreconditionRequired(
            "PUT /config requires an If-Match header with the config version you read "
            "(GET /v1/shards/{id}/config answers it as the ETag), so concurrent writers cannot overwrite each other"
        )
    match = _IF_MATCH_RE.match(raw.strip())
    if match is None:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise InvalidRequest(
            f"If-Match must be a config version: 1 to {IF_MATCH_MAX_DIGITS} ASCII digits, optionally "
            f'quoted ("7") or weak (W/"7"), got {shown!r}',
            accepted='7, "7" or W/"7"',
        )
    return int(match.group(1) or match.group(2))


def if_match_identity(raw: str | None) -> str:
    """What an idempotent retry is compared on: the version, however it was spelled (7, "7", W/"7")."""
    try:
        return str(parse_if_match(raw))
    except ServiceError:
        return (raw or "").strip()


class WorldService:
    """The world server's engine: the simulation, its clock thread, the store, the lake."""

    def __init__(self, paths: AegisPaths, options: ServiceOptions | None = None) -> None:
        self.paths = paths.ensure()
        self.options = options or ServiceOptions()
        self.metrics = WorldMetrics()
        self.metrics.speed.set(self.options.speed)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_error: BaseException | None = None
        self.store = WorldStore(paths.world_db)
        self._roles: dict[str, ShardRole] = {}
        self._faults: list[dict[str, Any]] = []
        self._epochs: dict[str, int] = {}
        self._closed = False
        self._open_world()

    # ------------------------------------------------------------ lifecycle

    def _open_world(self) -> None:
        from aegis.lake.manifest import pending_keeper
        from aegis.world.landing import LandingWriter
        from aegis.world.sim import World

        self.landing = None
        if self.options.land_telemetry:
            # Retention spares batches the lake's manifest has not finished ingesting.
            keep = pending_keeper(self.paths) if self.options.retention_hours is not None else None
            self.landing = LandingWriter(
                self.paths.landing_telemetry, retention_hours=self.options.retention_hours, keep=keep
            )
            self.landing.join_world(self.store, self.options)  # the world instance its event ids carry
        stored = self.store.load_world()
        if stored is None:
            self.world = World(
                seed=self.options.seed,
                players_per_shard=self.options.players_per_shard,
                shards_per_region=self.options.shards_per_region,
            )
            self.tick = 0
            if self.landing is not None:
                self.landing.tick_minutes = self.world.tick_minutes  # the landed world clock's margin
            self._roles = {sid: ShardRole.CONTROL for sid in self.world.shards}
            self._epochs = {
                sid: exploration_epoch(self.world.game_time, sid, self.options.explore_every_hours)
                for sid in self.world.shards
            }
            meta = {
                "seed": self.options.seed,
                "players_per_shard": self.options.players_per_shard,
                "shards_per_region": self.options.shards_per_region,
                "created_at": datetime.now().astimezone().isoformat(),
                "faults": [],
            }
            world_state, shard_states = self._split_state()
            configs = [
                ConfigRecord(sid, s.config_version, s.params, "initial", self.world.game_time)
                for sid, s in self.world.shards.items()
            ]
            self.store.create_world(
                meta,
                world_state,
                {
                    sid: (s.region, self._roles[sid].value, shard_states[sid])
                    for sid, s in self.world.shards.items()
                },
                configs,
            )
            if self.landing is not None:
                for shard in self.world.shards.values():
                    self.landing.record_config(shard)
            log.info("created a new world (seed %s, %s shards)", self.options.seed, len(self.world.shards))
        else:
            state = dict(stored.world_state)
            extra = state.pop(SERVICE_STATE_KEY, {})
            state["shards"] = {sid: s.state for sid, s in stored.shards.items()}
            self.world = World.from_state_dict(state)
            if self.landing is not None:
                self.landing.tick_minutes = self.world.tick_minutes  # before the replay lands anything
            self.tick = stored.tick
            self._epochs = {str(k): int(v) for k, v in extra.get("explore_epochs", {}).items()}
            self._roles = {sid: ShardRole(s.role) for sid, s in stored.shards.items()}
            self._faults = list(stored.meta.get("faults", []))
            replayed = 0
            if self.landing is not None:
                # Telemetry of committed ticks that had not reached Parquet yet: back into the writer.
                for tick, sid, ipc in self.store.pending_events():
                    start = self.world.game_time - timedelta(
                        minutes=self.world.tick_minutes * (self.tick - tick + 1)
                    )
                    self.landing.add(self.world.shards[sid], _ipc_table(ipc), start)
                    replayed += 1
            log.info(
                "resumed the stored world at tick %s (game time %s), %s journaled tick batches replayed",
                self.tick,
                self.world.game_time.isoformat(),
                replayed,
            )
        self._refresh_gauges()

    def _split_state(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """World-level state without the shards, and each shard's state (one call each)."""
        world_state = self.world.state_dict()
        shard_states = world_state.pop("shards")
        world_state[SERVICE_STATE_KEY] = {"explore_epochs": dict(self._epochs)}
        return world_state, shard_states

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the world service is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="aegis-world-clock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the clock, land buffered telemetry, commit, close. Idempotent."""
        if self._closed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT_S)
            if self._thread.is_alive():  # pragma: no cover - a tick that never ends
                log.error("the world clock did not stop within %s s", STOP_TIMEOUT_S)
        with self._lock:
            if self.landing is not None:
                self.landing.flush()
                self.store.drop_pending(self.tick)
            self.store.close()
            self._closed = True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------ the clock

    @property
    def tick_seconds(self) -> float:
        return float(self.world.tick_minutes) * 60.0

    def _run(self) -> None:
        """Advance one tick every ``tick_seconds / speed`` wall seconds; catch up a bounded backlog."""
        if self.options.speed <= 0:
            self._stop.wait()
            return
        interval = self.tick_seconds / self.options.speed
        next_due = time.monotonic() + interval
        try:
            while not self._stop.is_set():
                delay = next_due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                self.step()
                next_due += interval
                behind = (time.monotonic() - next_due) / interval
                if behind > MAX_CATCHUP_TICKS:
                    next_due = time.monotonic()
                    behind = 0.0
                self.metrics.lag_ticks.set(max(0.0, behind))
        except BaseException as exc:  # the clock must never die silently
            self._loop_error = exc
            log.exception("the world clock stopped on an error")

    def step(self, ticks: int = 1) -> None:
        """Simulate ``ticks`` ticks now (the clock thread calls it; tests may too)."""
        for _ in range(ticks):
            with self._lock:
                if self._closed:
                    raise Unavailable("the world service is stopped")
                self._step_locked()

    def _step_locked(self) -> None:
        now = self.world.game_time
        configs = (
            self._explore_locked(now) if self.options.explore else []
        )  # before the step, as the runner does
        t0 = time.perf_counter()
        tables: dict[str, pa.Table] = self.world.step()
        self.tick += 1
        self.metrics.step_seconds.observe(time.perf_counter() - t0)
        self._expire_faults_locked()

        events: dict[str, bytes] = {}
        landed_through: int | None = None
        for sid, table in tables.items():
            self._observe_events(sid, table)
        if self.landing is not None:
            before = self.landing.stats.events
            # A tick starting a new batch window lands every shard's previous window.
            self.landing.add_tick(self.world.shards, tables, now)
            self.metrics.events_landed.inc(self.landing.stats.events - before)
            if self._window_start(now):
                landed_through = self.tick - 1
            events = {sid: _ipc_bytes(t) for sid, t in tables.items() if t.num_rows}

        t1 = time.perf_counter()
        world_state, shard_states = self._split_state()
        self.store.commit_tick(self.tick, world_state, shard_states, events, landed_through, configs)
        self.metrics.persist_seconds.observe(time.perf_counter() - t1)
        self.metrics.ticks.inc()
        self._refresh_gauges()

    def _window_start(self, ts: datetime) -> bool:
        assert self.landing is not None
        seconds = (ts - WORLD_EPOCH).total_seconds()
        return math.isclose(seconds % (self.landing.batch_minutes * 60.0), 0.0, abs_tol=1e-6)

    def _observe_events(self, sid: str, table: pa.Table) -> None:
        if not table.num_rows:
            return
        for item in pc.value_counts(table.column("kind")).to_pylist():
            self.metrics.events.labels(shard=sid, kind=item["values"]).inc(item["counts"])
        sources = table.filter(pc.equal(table.column("kind"), "currency_source"))
        if sources.num_rows:
            by_currency = sources.group_by("currency").aggregate([("amount", "sum")])
            for cur, amount in zip(
                by_currency.column("currency").to_pylist(),
                by_currency.column("amount_sum").to_pylist(),
                strict=True,
            ):
                if cur and amount:
                    self.metrics.currency_created.labels(shard=sid, currency=cur).inc(amount)
        ticks = table.filter(pc.equal(table.column("kind"), "server_tick"))
        for ms in ticks.column("tick_ms").to_pylist():
            if ms is not None:
                self.metrics.shard_tick_ms.labels(shard=sid).observe(ms)
                self.metrics.shard_tick_ms_last.labels(shard=sid).set(ms)

    def _explore_locked(self, now: datetime) -> list[ConfigRecord]:
        """Live-ops exploration, exactly as :func:`aegis.world.runner.run_world` schedules it:
        when a shard enters a new exploration epoch it gets new params inside the safe
        bands. While any shard is a canary, no shard explores (epochs are not consumed, so
        exploration resumes where it was): the canary's judge compares it with control
        shards, and a control re-tuned mid-experiment would bias that comparison, just as
        a studio freezes design changes on the shards of a running experiment."""
        out: list[ConfigRecord] = []
        if any(role == ShardRole.CANARY for role in self._roles.values()):
            return out
        every = self.options.explore_every_hours
        for sid, shard in self.world.shards.items():
            epoch = exploration_epoch(now, sid, every)
            if epoch == self._epochs.get(sid):
                continue
            self._epochs[sid] = epoch
            params = explore(shard.params, self.world.seed, sid, epoch)
            version = shard.config_version + 1
            shard.set_params(params, version, "exploration")
            out.append(ConfigRecord(sid, version, params, "exploration", now))
        return out

    def _expire_faults_locked(self) -> None:
        now = self.world.game_time
        active = [f for f in self._faults if datetime.fromisoformat(f["until"]) > now]
        if len(active) != len(self._faults):
            self._faults = active
            self.store.set_meta("faults", active)

    def _refresh_gauges(self) -> None:
        m = self.metrics
        m.game_time.set(self.world.game_time.timestamp())
        for sid, shard in self.world.shards.items():
            m.players_online.labels(shard=sid).set(shard.players_online)
            m.shard_up.labels(shard=sid).set(1 if shard.online else 0)
            m.config_version.labels(shard=sid).set(shard.config_version)
        m.faults_active.clear()
        for f in self._faults:
            m.faults_active.labels(shard=f["shard_id"], kind=f["kind"]).inc()

    # ------------------------------------------------------------ reads

    def _shard(self, shard_id: str) -> Any:
        shard = self.world.shards.get(shard_id)
        if shard is None:
            raise NotFoundError(
                f"unknown shard {shard_id!r}; known shards: {', '.join(sorted(self.world.shards))}",
                known_shards=sorted(self.world.shards),
            )
        return shard

    def _info(self, sid: str) -> ShardInfo:
        s = self.world.shards[sid]
        return ShardInfo(
            id=sid,
            region=s.region,
            role=self._roles.get(sid, ShardRole.CONTROL),
            status="up" if s.online else "down",
            players_online=int(s.players_online),
            players_total=int(s.players_total),
            capacity=int(s.capacity),
            config_version=int(s.config_version),
        )

    def health(self) -> Health:
        with self._lock:
            up = sum(1 for s in self.world.shards.values() if s.online)
            down = len(self.world.shards) - up
            clock_ok = self.options.speed == 0 or self.running
            return Health(
                status="ok" if down == 0 and clock_ok and self._loop_error is None else "degraded",
                version=server_version(),
                game_time=self.world.game_time,
                tick=self.tick,
                speed=self.options.speed,
                shards_up=up,
                shards_down=down,
            )

    def shards(self) -> list[ShardInfo]:
        with self._lock:
            return [self._info(sid) for sid in sorted(self.world.shards)]

    def shard(self, shard_id: str) -> ShardInfo:
        with self._lock:
            self._shard(shard_id)
            return self._info(shard_id)

    def config(self, shard_id: str) -> ShardConfig:
        with self._lock:
            shard = self._shard(shard_id)
            history = self.store.config_history(shard_id)
            updated = history[-1].game_time if history else self.world.game_time
            return ShardConfig(
                shard_id=shard_id, version=int(shard.config_version), params=shard.params, updated_at=updated
            )

    def integrity(self, shard_id: str) -> Integrity:
        with self._lock:
            return self._shard(shard_id).integrity()

    def snapshots(self, shard_id: str) -> list[SnapshotInfo]:
        with self._lock:
            self._shard(shard_id)
        return self.store.list_snapshots(shard_id)

    # ------------------------------------------------------------ writes

    def set_role(self, shard_id: str, role: ShardRole) -> ShardInfo:
        with self._lock:
            self._shard(shard_id)
            self.store.set_role(shard_id, role.value)
            self._roles[shard_id] = role
            return self._info(shard_id)

    def put_config(
        self, shard_id: str, params: WorldParams, if_match: str | None, idempotency_key: str | None
    ) -> tuple[int, dict[str, Any], bool]:
        """Apply a full parameter set; answers (status, body, replayed).

        Order of checks: shard exists, idempotency replay (a retry carries the
        If-Match it was sent with, now stale, and must still get its original
        answer), If-Match present and current, then apply and commit atomically.
        """
        with self._lock:
            shard = self._shard(shard_id)
            request_hash = None
            if idempotency_key is not None:
                key = idempotency_key.strip()
                if not key or len(key) > IDEMPOTENCY_KEY_MAX:
                    raise InvalidRequest(f"Idempotency-Key must be 1..{IDEMPOTENCY_KEY_MAX} characters")
                idempotency_key = key
                request_hash = hashlib.sha256(
                    json.dumps(
                        {
                            "shard": shard_id,
                            "if_match": if_match_identity(if_match),
                            "params": params.model_dump(mode="json"),
                        },
                        sort_keys=True,
                    ).encode()
                ).hexdigest()
                stored = self.store.get_idempotent(key)
                if stored is not None:
                    if stored.request_hash != request_hash:
                        self.metrics.config_puts.labels(shard=shard_id, outcome="conflict").inc()
                        raise IdempotencyConflictError(
                            f"Idempotency-Key {key!r} was already used for a different request "
                            f"(shard {stored.shard_id}); use a new key for a new change",
                            key=key,
                            original_shard=stored.shard_id,
                        )
                    self.metrics.config_puts.labels(shard=shard_id, outcome="replayed").inc()
                    self.metrics.idempotent_replays.inc()
                    return stored.status_code, stored.body, True
            try:
                expected = parse_if_match(if_match)
            except PreconditionRequired:
                self.metrics.config_puts.labels(shard=shard_id, outcome="missing_if_match").inc()
                raise
            current = int(shard.config_version)
            if expected != current:
                self.metrics.config_puts.labels(shard=shard_id, outcome="stale").inc()
                raise StaleVersion(
                    f"config of {shard_id} is at version {current}, not {expected}: re-read it and retry",
                    current_version=current,
                    if_match=expected,
                )
            old_params, old_version, old_source = shard.params, current, shard.config_source
            version = current + 1
            now = self.world.game_time
            try:
                shard.set_params(params, version, source="api")
                body = ShardConfig(
                    shard_id=shard_id, version=version, params=params, updated_at=now
                ).model_dump(mode="json")
                self.store.save_shard(
                    shard_id,
                    shard.state_dict(),
                    config=ConfigRecord(shard_id, version, params, "api", now),
                    idempotent=(
                        IdempotentResponse(idempotency_key, shard_id, request_hash, 200, body)
                        if idempotency_key is not None and request_hash is not None
                        else None
                    ),
                )
            except BaseException:
                shard.set_params(old_params, old_version, source=old_source)  # never half-applied
                raise
            self._after_config_change(shard_id, "api")
            self.metrics.config_puts.labels(shard=shard_id, outcome="applied").inc()
            return 200, body, False

    def _after_config_change(self, shard_id: str, source: str) -> None:
        if self.landing is not None:
            try:
                self.landing.record_config(
                    self.world.shards[shard_id], source, valid_from=self.world.game_time
                )
            except OSError:  # the change is committed; the feed is rebuilt from config_history
                log.exception("could not land the config feed row of %s", shard_id)
        self._refresh_gauges()

    def snapshot(self, shard_id: str) -> SnapshotInfo:
        """A consistent snapshot: taken between ticks under the lock, committed before answering."""
        with self._lock:
            shard = self._shard(shard_id)
            state = shard.state_dict()
            info = SnapshotInfo(
                snapshot_id=new_id("snap"),
                shard_id=shard_id,
                game_time=self.world.game_time,
                config_version=int(shard.config_version),
                integrity=shard.integrity(),
            )
            evicted = self.store.save_snapshot(
                info,
                state,
                keep_per_shard=self.options.snapshots_keep_per_shard,
                quota_bytes=self.options.snapshot_quota_bytes,
            )
            if evicted:
                log.info("snapshot retention evicted %d snapshot(s): %s", len(evicted), ", ".join(evicted))
            self.metrics.snapshots.set(self.store.count_snapshots())
            return info

    def snapshot_state(self, shard_id: str, snapshot_id: str) -> dict[str, Any]:
        """The stored state of one of ``shard_id``'s snapshots (for offline simulation).

        Raises ``LookupError`` for an unknown shard or snapshot (the simulations
        endpoint answers 404) and ``SnapshotOfAnotherShard`` for a snapshot of
        another shard (409).
        """
        from aegis.world.simulations_api import SnapshotOfAnotherShard

        if shard_id not in self.world.shards:
            raise LookupError(f"unknown shard {shard_id!r}; known: {', '.join(sorted(self.world.shards))}")
        stored = self.store.get_snapshot(snapshot_id)
        if stored is None:
            raise LookupError(f"shard {shard_id!r} has no snapshot {snapshot_id!r}")
        if stored.info.shard_id != shard_id:
            raise SnapshotOfAnotherShard(snapshot_id, stored.info.shard_id, shard_id)
        return stored.state

    def restore(self, shard_id: str, snapshot_id: str) -> RestoreResult:
        """Rebuild the shard from a snapshot, verify its integrity, then install it.

        The world is paused (the lock) from the first read to the commit. The
        candidate shard is built aside; only when its integrity equals the
        snapshot's does it replace the live one, so a mismatch leaves the
        pre-restore state untouched.
        """
        from aegis.world.sim import ShardSim

        with self._lock:
            live = self._shard(shard_id)
            snap = self.store.get_snapshot(snapshot_id)
            if snap is None:
                known = [s.snapshot_id for s in self.store.list_snapshots(shard_id)]
                raise NotFoundError(
                    f"unknown snapshot {snapshot_id!r} for shard {shard_id}; known: {', '.join(known) or 'none'}",
                    known_snapshots=known,
                )
            if snap.info.shard_id != shard_id:
                raise InvalidRequest(
                    f"snapshot {snapshot_id} belongs to shard {snap.info.shard_id}, not {shard_id}",
                    snapshot_shard=snap.info.shard_id,
                )
            candidate = ShardSim.from_state_dict(snap.state)
            version = int(live.config_version) + 1
            candidate.set_params(candidate.params, version, source="restore")
            got = candidate.integrity()
            want = snap.info.integrity
            if not got.same_player_data(want):
                self.metrics.restores.labels(outcome="integrity_mismatch").inc()
                raise IntegrityMismatchError(
                    f"restoring {snapshot_id} would not reproduce the snapshot's integrity; "
                    f"{shard_id} keeps its pre-restore state",
                    expected=want.model_dump(mode="json"),
                    restored=got.model_dump(mode="json"),
                )
            now = self.world.game_time
            self.store.save_shard(
                shard_id,
                candidate.state_dict(),
                config=ConfigRecord(shard_id, version, candidate.params, "restore", now),
            )
            self.world.shards[shard_id] = candidate
            self.metrics.restores.labels(outcome="ok").inc()
            self._after_config_change(shard_id, "restore")
            return RestoreResult(
                shard_id=shard_id,
                snapshot_id=snapshot_id,
                integrity=got,
                config_version=version,
                game_time=now,
            )

    def inject_fault(self, fault: Fault) -> FaultReceipt:
        with self._lock:
            shard = self._shard(fault.shard_id)
            now = self.world.game_time
            shard.inject(fault, now)
            self.store.save_shard(fault.shard_id, shard.state_dict())  # acknowledged: durable before the 202
            until = now + timedelta(minutes=fault.duration_minutes)
            self._faults.append(
                {"shard_id": fault.shard_id, "kind": FaultKind(fault.kind).value, "until": until.isoformat()}
            )
            self.store.set_meta("faults", self._faults)
            self.metrics.faults_injected.labels(kind=FaultKind(fault.kind).value).inc()
            self._refresh_gauges()
            return FaultReceipt(fault=fault, injected_at=now, until=until)

    def render_metrics(self) -> bytes:
        with self._lock:
            self._refresh_gauges()
            self.metrics.snapshots.set(self.store.count_snapshots())
        return self.metrics.render()

    # ------------------------------------------------------------ remediation (aegis.world.remediation)

    def _active_faults_locked(self, shard_id: str) -> list[dict[str, Any]]:
        """Faults acting on a shard: the simulation's own state, plus injected faults whose duration
        has not run out (a corrupt_telemetry source stays faulty until isolated or expired)."""
        shard = self.world.shards[shard_id]
        until = {f["kind"]: f["until"] for f in self._faults if f["shard_id"] == shard_id}
        kinds = sorted(set(shard.active_faults) | set(until))
        return [{"shard_id": shard_id, "kind": k, "until": until.get(k)} for k in kinds]

    def active_faults(self) -> list[dict[str, Any]]:
        """``GET /v1/faults``: every fault acting now, by shard."""
        with self._lock:
            return [f for sid in sorted(self.world.shards) for f in self._active_faults_locked(sid)]

    def signals(self, shard_id: str) -> dict[str, Any]:
        """``GET /v1/shards/{id}/signals``: the SLIs a remediation is verified against."""
        with self._lock:
            shard = self._shard(shard_id)
            econ = shard.economy()
            online = int(shard.players_online)
            return {
                "shard_id": shard_id,
                "game_time": self.world.game_time,
                "status": "up" if shard.online else "down",
                "players_online": online,
                "capacity": int(shard.capacity),
                "load": online / max(int(shard.capacity), 1),
                "tick_ms_last": float(shard.last_tick_ms) if shard.online else 0.0,
                "gold_per_player": econ["gold_per_player"],
                "price_level": econ["price_level"],
                "telemetry_corrupt_pending": len(shard._corrupt_pending),
                "active_faults": [f["kind"] for f in self._active_faults_locked(shard_id)],
                "config_version": int(shard.config_version),
            }

    def remediate(self, shard_id: str, request: Any) -> Any:
        """Apply one remediation (:mod:`aegis.world.remediation`) and commit the shard before answering."""
        from aegis.world import remediation as R
        from aegis.world import sim_catalog as C

        with self._lock:
            shard = self._shard(shard_id)
            result = R.apply(shard, request, C.CRASH_RECONNECT_WINDOW_MIN)
            cleared = {k.value for k in R.CLEARS[request.action]}
            if request.action == R.RemediationAction.ISOLATE_TELEMETRY and self.landing is not None:
                pend = getattr(self.landing, "_pending", {}).get(shard_id)
                if pend is not None and not pend.landed and pend.corrupt is not None:
                    pend.corrupt = None  # the open window lands clean
                    result.detail["open_window_cleaned"] = True
            gone = [f for f in self._faults if f["shard_id"] == shard_id and f["kind"] in cleared]
            if gone:
                self._faults = [f for f in self._faults if f not in gone]
                self.store.set_meta("faults", self._faults)
                result.cleared_faults = sorted({*result.cleared_faults, *(f["kind"] for f in gone)})
            self.store.save_shard(shard_id, shard.state_dict())
            self._refresh_gauges()
            log.info("remediation %s on %s: cleared %s", request.action, shard_id, result.cleared_faults)
            return result
