"""Deliver what a world lands to an S3 lake, as Kinesis Firehose delivers a game's stream.

A world (the live server or a batch run) lands its batches atomically into a
local spool, ``AEGIS_HOME/lake/landing`` (:mod:`aegis.world.landing`).  The
shipper moves them to the lake bucket under the same keys Firehose writes
(``landing/telemetry/date=.../hour=.../shard=.../<batch>.parquet``, the config
feed under ``landing/configs/``), each with one ``PutObject`` (an object is
visible whole or not at all), and deletes the local copy only after S3 accepted
it: a failed pass leaves everything in the spool for the next one, and a batch
shipped twice (a crash between the PUT and the delete) lands under the same
key with the same bytes.

The world clock (``_world_clock.json``) and the instance registry go first, read
after the batches were listed: the clock in S3 is never behind a batch it
covers, so the ingest never judges a simulated world's events "in the future"
against a stale clock.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aegis.lake.landing import BATCH_SUFFIX, is_tmp_name
from aegis.lake.store import LakeStore, LakeUnavailable
from aegis.telemetry import WORLD_CLOCK_FILE

log = logging.getLogger(__name__)

REGISTRY_FILE = "_world_instances.json"
FEEDS = ("telemetry", "configs")
DEFAULT_INTERVAL_S = 5.0


@dataclass
class ShipStats:
    files: int = 0
    bytes: int = 0
    failed: list[str] = field(default_factory=list)


class FirehoseShipper:
    """Moves a local landing spool into an S3 lake (see the module docstring)."""

    def __init__(self, spool_landing: Path, store: LakeStore, landing_prefix: str = "landing") -> None:
        self.spool = Path(spool_landing)
        self.store = store
        self.prefix = landing_prefix.strip("/")

    def _pending(self) -> list[Path]:
        files: list[Path] = []
        for feed in FEEDS:
            root = self.spool / feed
            if root.is_dir():
                files += [
                    p
                    for p in root.rglob(f"*{BATCH_SUFFIX}")
                    if not is_tmp_name(p.name) and not p.name.startswith(".")
                ]
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns if p.exists() else 0, str(p)))

    def _key(self, path: Path) -> str:
        return f"{self.prefix}/{path.relative_to(self.spool).as_posix()}"

    def ship_once(self) -> ShipStats:
        """One pass: the clock and registry, then every complete batch, oldest first."""
        stats = ShipStats()
        batches = self._pending()
        for meta in (WORLD_CLOCK_FILE, REGISTRY_FILE):
            path = self.spool / "telemetry" / meta
            if path.is_file():
                self.store.write_bytes(self._key(path), path.read_bytes())
        for path in batches:
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # the writer's retention removed it meanwhile
                continue
            try:
                self.store.write_bytes(self._key(path), data)
            except LakeUnavailable as exc:
                stats.failed.append(f"{path.name}: {exc}")
                break  # keep order: later batches wait for the next pass
            path.unlink(missing_ok=True)
            stats.files += 1
            stats.bytes += len(data)
        return stats

    def run(self, stop: threading.Event, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        """Ship every ``interval_s`` until ``stop`` is set, then once more (nothing left behind)."""
        while True:
            stopping = stop.wait(interval_s)
            try:
                stats = self.ship_once()
                if stats.failed:
                    log.warning("shipping to %s: %s (kept in the spool)", self.store.uri, stats.failed[0])
            except Exception as exc:  # keep shipping: a dead thread would let the spool grow unseen
                log.warning("shipping to %s failed; batches stay in the spool: %s", self.store.uri, exc)
            if stopping:
                return
