"""Remediation actions of the game backend contract, as the bundled world implements them.

A fault injected through ``POST /v1/faults`` acts on a shard until its duration
runs out. These actions are how an operator (or Aegis's healing playbooks) ends
it sooner, each the way a live game would:

``failover``
    A standby takes over a crashed shard: it is up at once and its dropped
    players reconnect (within their reconnect window). Clears ``shard_crash``.
``restart``
    A fresh server process: clears ``shard_crash`` and ``latency_spike`` (a
    degraded process is replaced), at the price of every online session, which
    goes to the reconnect queue.
``shed_load``
    Moves a share of the online sessions to the login queue (the reconnect
    queue, drained at the normal reconnect rate), lowering the load and thus
    the tick time. It does not end a latency fault by itself: whether it is
    enough is for the verification to say.
``freeze_trading``
    Closes the market that duplicated items are sold through: the duplication
    exploit has no outlet and stops. Clears ``duplication_exploit``.
``isolate_telemetry``
    Cuts the shard's telemetry emitter off and restarts it clean: pending
    corrupt batches (and the open window's corruption mark) are dropped, so no
    further corrupt batch reaches the lake. Clears ``corrupt_telemetry``.

Patching an economy coefficient and rolling back a changeset need no endpoint
of their own: both are config changes (``PUT /v1/shards/{id}/config``).

The functions here mutate a :class:`~aegis.world.sim.ShardSim` in place (its
arrays are views into the world's packed shard group) and never touch its
random generator, so a remediated world stays reproducible. The world service
calls them under its lock and commits the shard right after.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aegis.domain import FaultKind

# Share of online sessions ``shed_load`` moves to the login queue unless told otherwise.
DEFAULT_SHED_SHARE = 0.5
MAX_SHED_SHARE = 0.9
_US = 1_000_000


class RemediationAction(StrEnum):
    FAILOVER = "failover"
    RESTART = "restart"
    SHED_LOAD = "shed_load"
    FREEZE_TRADING = "freeze_trading"
    ISOLATE_TELEMETRY = "isolate_telemetry"


# Which injected faults each action ends in the bundled world.
CLEARS: dict[RemediationAction, tuple[FaultKind, ...]] = {
    RemediationAction.FAILOVER: (FaultKind.SHARD_CRASH,),
    RemediationAction.RESTART: (FaultKind.SHARD_CRASH, FaultKind.LATENCY_SPIKE),
    RemediationAction.SHED_LOAD: (),
    RemediationAction.FREEZE_TRADING: (FaultKind.DUPLICATION_EXPLOIT,),
    RemediationAction.ISOLATE_TELEMETRY: (FaultKind.CORRUPT_TELEMETRY,),
}


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RemediationRequest(_Wire):
    """Body of ``POST /v1/shards/{id}/remediations``."""

    action: RemediationAction
    reason: str = Field("", max_length=500, description="Why (recorded with the result)")
    share: float | None = Field(
        None,
        gt=0,
        le=MAX_SHED_SHARE,
        description=f"shed_load only: share of online sessions moved to the login queue "
        f"(default {DEFAULT_SHED_SHARE})",
    )
    incident_id: str | None = Field(None, max_length=100, description="The incident this acts on, if any")


class RemediationResult(_Wire):
    """Answer of a remediation: what it changed, and the faults it ended."""

    shard_id: str
    action: RemediationAction
    applied_at: datetime = Field(description="Game time the action took effect")
    cleared_faults: list[FaultKind] = Field(default_factory=list)
    sessions_moved: int = Field(0, ge=0, description="Online sessions moved to the reconnect/login queue")
    status: str = Field(description="Shard status after the action: up | down")
    detail: dict[str, Any] = Field(default_factory=dict)


class ActiveFault(_Wire):
    """One row of ``GET /v1/faults``: a fault acting on a shard now."""

    shard_id: str
    kind: FaultKind
    until: datetime | None = Field(None, description="Game time the fault would end by itself")


class ShardSignals(_Wire):
    """``GET /v1/shards/{id}/signals``: the SLIs a remediation is verified against, read in one go."""

    shard_id: str
    game_time: datetime
    status: str = Field(description="up | down")
    players_online: int = Field(ge=0)
    capacity: int = Field(ge=1)
    load: float = Field(ge=0, description="players_online / capacity")
    tick_ms_last: float = Field(ge=0, description="Last simulated server tick latency (ms)")
    gold_per_player: float
    price_level: float
    telemetry_corrupt_pending: int = Field(ge=0, description="Corrupt batches queued at the emitter")
    active_faults: list[FaultKind] = Field(default_factory=list)
    config_version: int = Field(ge=1)


def _drop_sessions(shard: Any, mask: Any, window_min: float) -> int:
    """Move the sessions in ``mask`` to the reconnect queue (in place: the arrays are group views)."""
    n = int(mask.sum())
    if n:
        shard.pending |= mask
        shard.pending_until_us[mask] = shard.clock_us + int(window_min * 60 * _US)
        shard.on[mask] = False
    return n


def apply(shard: Any, request: RemediationRequest, reconnect_window_min: float) -> RemediationResult:
    """Apply ``request`` to ``shard`` (a ShardSim) now; the caller holds the world lock and commits."""
    import numpy as np

    now_us = int(shard.clock_us)
    before = set(shard.active_faults)
    moved = 0
    detail: dict[str, Any] = {}
    action = request.action
    if action in (RemediationAction.FAILOVER, RemediationAction.RESTART):
        was_down = shard.down_until_us > now_us
        shard.down_until_us = min(int(shard.down_until_us), now_us)
        if was_down:
            # Sessions dropped by the crash may come back from now on, within a fresh window.
            waiting = shard.pending & (shard.pending_until_us > now_us)
            shard.pending_until_us[waiting] = now_us + int(reconnect_window_min * 60 * _US)
        if action == RemediationAction.RESTART:
            shard.latency_until_us = min(int(shard.latency_until_us), now_us)
            shard.latency_mult = 1.0
            moved = _drop_sessions(shard, shard.on.copy(), reconnect_window_min)
        detail["was_down"] = was_down
    elif action == RemediationAction.SHED_LOAD:
        share = request.share if request.share is not None else DEFAULT_SHED_SHARE
        online = np.flatnonzero(shard.on)
        k = round(len(online) * share)
        # Every n-th session, deterministically: no draw from the shard's random stream.
        chosen = (
            online[np.linspace(0, len(online) - 1, k).astype(np.int64)] if k and len(online) else online[:0]
        )
        mask = np.zeros(len(shard.on), dtype=bool)
        mask[chosen] = True
        moved = _drop_sessions(shard, mask, reconnect_window_min)
        detail["share"] = share
    elif action == RemediationAction.FREEZE_TRADING:
        shard.exploit_until_us = min(int(shard.exploit_until_us), now_us)
        shard.exploit_mag = 0.0
    elif action == RemediationAction.ISOLATE_TELEMETRY:
        dropped = 0
        while shard.consume_corrupt_telemetry() is not None:
            dropped += 1
        detail["corrupt_batches_dropped"] = dropped
    else:  # pragma: no cover - the enum is closed
        raise ValueError(f"unknown remediation {action!r}")
    after = set(shard.active_faults)
    cleared = sorted(FaultKind(k) for k in before - after)
    return RemediationResult(
        shard_id=shard.shard_id,
        action=action,
        applied_at=shard.clock,
        cleared_faults=cleared,
        sessions_moved=moved,
        status="up" if shard.online else "down",
        detail=detail,
    )
