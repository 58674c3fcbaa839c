"""Prometheus metrics of the world server (``GET /metrics``).

Each service owns its own ``CollectorRegistry`` rather than the process-global
one, so several servers (tests, the simulation gate) can live in one process
without "duplicated timeseries" errors, and ``/metrics`` shows exactly one
world. Names follow Prometheus conventions: ``aegis_world_`` prefix, base
units (seconds, except the simulated tick latency whose unit, milliseconds, is
the one the SLO and the telemetry use and is named in the metric).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Simulated server tick latency buckets (ms): the game's SLO threshold sits around 100 ms.
TICK_MS_BUCKETS = (5.0, 10.0, 20.0, 35.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0, 1000.0, 5000.0)
# Wall-clock cost of simulating / persisting one tick of the whole world (s).
WALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class WorldMetrics:
    """All metrics of one world service, registered in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Declared in exposition order: the clock, the shards, then the control API.
        self._declare_clock(self.registry)
        self._declare_shards(self.registry)
        self._declare_control(self.registry)

    def _declare_clock(self, r: CollectorRegistry) -> None:
        """The world clock: ticks, game time, speed and lag, and the wall cost of a tick."""
        self.ticks = Counter("aegis_world_ticks", "World ticks simulated and committed", registry=r)
        self.game_time = Gauge(
            "aegis_world_game_time_seconds", "Game time of the last committed tick (Unix s)", registry=r
        )
        self.speed = Gauge(
            "aegis_world_speed", "Game seconds simulated per wall-clock second (target)", registry=r
        )
        self.lag_ticks = Gauge(
            "aegis_world_lag_ticks",
            "Ticks the simulation is behind its target speed (0 = keeping up)",
            registry=r,
        )
        self.step_seconds = Histogram(
            "aegis_world_step_seconds",
            "Wall time to simulate one tick of every shard",
            buckets=WALL_BUCKETS,
            registry=r,
        )
        self.persist_seconds = Histogram(
            "aegis_world_persist_seconds",
            "Wall time to commit one tick (all shard states) to SQLite",
            buckets=WALL_BUCKETS,
            registry=r,
        )

    def _declare_shards(self, r: CollectorRegistry) -> None:
        """Per shard: tick latency, players, up/down, config version, telemetry and currency."""
        self.shard_tick_ms = Histogram(
            "aegis_world_shard_tick_ms",
            "Simulated server tick latency per shard (ms), from its server_tick events",
            ["shard"],
            buckets=TICK_MS_BUCKETS,
            registry=r,
        )
        self.shard_tick_ms_last = Gauge(
            "aegis_world_shard_tick_ms_last",
            "Last simulated server tick latency per shard (ms)",
            ["shard"],
            registry=r,
        )
        self.players_online = Gauge(
            "aegis_world_players_online", "Players online per shard", ["shard"], registry=r
        )
        self.shard_up = Gauge(
            "aegis_world_shard_up", "1 when the shard is up, 0 when down", ["shard"], registry=r
        )
        self.config_version = Gauge(
            "aegis_world_config_version", "Config version in force per shard", ["shard"], registry=r
        )
        self.events = Counter(
            "aegis_world_events",
            "Telemetry events produced, by shard and kind",
            ["shard", "kind"],
            registry=r,
        )
        # The AMOUNT of currency created (faucets), not the event count: a duplication exploit
        # shows in the amount per player (the EconomyInflation alert rule reads it).
        self.currency_created = Counter(
            "aegis_world_currency_created",
            "Currency created (faucets: loot, quests, vendor sales), by shard and currency",
            ["shard", "currency"],
            registry=r,
        )
        self.events_landed = Counter(
            "aegis_world_events_landed", "Telemetry events landed as Parquet in the lake", registry=r
        )

    def _declare_control(self, r: CollectorRegistry) -> None:
        """The control API: config writes, idempotent replays, faults, snapshots and restores."""
        self.config_puts = Counter(
            "aegis_world_config_puts",
            "PUT /config requests by outcome (applied, stale, missing_if_match, invalid, replayed, conflict)",
            ["shard", "outcome"],
            registry=r,
        )
        self.idempotent_replays = Counter(
            "aegis_world_idempotent_replays",
            "Requests answered from a stored Idempotency-Key response",
            registry=r,
        )
        self.faults_injected = Counter(
            "aegis_world_faults_injected", "Faults injected, by kind", ["kind"], registry=r
        )
        self.faults_active = Gauge(
            "aegis_world_faults_active",
            "Faults currently active, by shard and kind",
            ["shard", "kind"],
            registry=r,
        )
        self.snapshots = Gauge("aegis_world_snapshots", "Snapshots stored", registry=r)
        self.restores = Counter(
            "aegis_world_restores", "Restores by outcome (ok, integrity_mismatch)", ["outcome"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
