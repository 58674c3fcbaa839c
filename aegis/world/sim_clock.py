"""Game time inside the simulator: integer microseconds since the Unix epoch.

Shards keep their clocks, fault deadlines and event timestamps as ``int``
microseconds so that a tick's arithmetic is exact (no float rounding of
datetimes) and the same on every machine. Both :mod:`aegis.world.sim` (the
shards) and :mod:`aegis.world.sim_tick` (the tick) need these conversions; they
live here so that neither module imports the other for them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aegis.telemetry import WORLD_EPOCH

US = 1_000_000  # microseconds per second
EPOCH_US = int(WORLD_EPOCH.timestamp()) * US  # WORLD_EPOCH in microseconds since the Unix epoch


def to_us(ts: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float rounding)."""
    if ts.tzinfo is None:
        raise ValueError(f"game time must be timezone-aware (UTC), got naive {ts.isoformat()}")
    delta = ts - datetime(1970, 1, 1, tzinfo=ts.tzinfo)
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


def from_us(us: int) -> datetime:
    """The aware datetime of ``us`` microseconds since the Unix epoch (inverse of :func:`to_us`)."""
    return WORLD_EPOCH + timedelta(microseconds=us - EPOCH_US)
