"""Progression integrity: did a change (or its undo) lose any player data?

Two comparisons, because a live shard never stands still:

* **Exact** (after a rollback, and after an apply when no tick ran in between):
  the integrity must equal the reference exactly, counts and checksums. A
  restore is verified against the snapshot's integrity as the backend answers
  it, measured before the shard resumes. After an apply, the backend's tick
  counter (``GET /v1/health``) read before and after the integrity read proves
  whether any game time passed since the snapshot; if none did, the player
  data must be bit-identical.
* **Live** (after an apply while players kept playing): checksums change
  through ordinary play, so they prove nothing; counts do not drop by much in a
  few ticks. The check allows each count to drop by what the changeset declared
  (its operations' ``deletes_active_inventory`` / ``invalidates_active_quests``)
  plus the natural turnover of the elapsed game time: ``max(floor_fraction * before,
  drift_per_minute * before * elapsed_minutes, drift_factor * observed_rate *
  elapsed_minutes)``, where the rate is measured from two reads taken before the
  change. This detects a loss larger than ordinary play (a deleted item class, a
  wiped quest stage), not a handful of items: small losses hide in play, which is
  why the simulation gate proves exact integrity on a snapshot copy, and why a
  rollback is proven exactly. After a long outage (``resume`` hours later) the
  allowance grows with the elapsed time and the live check says little. The save schema must stay within the
  declared migration: never lower, never anything but the current version or the
  declared ``save_schema_to``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from aegis.domain import AutonomousChangeSet, Integrity

COUNT_FIELDS: tuple[str, ...] = ("players", "active_inventory_items", "active_quests")
DEFAULT_FLOOR_FRACTION = 0.02
# Share of a count that ordinary play may turn over per game minute (quests end and
# start, items are sold and dropped). Measured on the bundled world: active quests of
# a 300-player shard move by up to ~3% a minute; inventories far less.
DEFAULT_DRIFT_PER_MINUTE = 0.03
DEFAULT_DRIFT_FACTOR = 3.0


@dataclass(frozen=True)
class Observation:
    """One integrity read and the game time (minutes, any origin) it was taken at."""

    integrity: Integrity
    minute: float
    tick: int | None = None


@dataclass
class IntegrityReport:
    """The result of one check: what was compared, how, and each violation in words."""

    mode: str  # exact | live
    ok: bool
    violations: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    allowed_drop: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "ok": self.ok,
            "violations": list(self.violations),
            "checks": list(self.checks),
            "before": self.before,
            "after": self.after,
            "allowed_drop": dict(self.allowed_drop),
        }


def declared_removals(changeset: AutonomousChangeSet) -> dict[str, int]:
    """What the changeset says it removes, by integrity count."""
    return {
        "players": 0,
        "active_inventory_items": sum(op.deletes_active_inventory for op in changeset.operations),
        "active_quests": sum(op.invalidates_active_quests for op in changeset.operations),
    }


def allowed_schemas(changeset: AutonomousChangeSet, current: int) -> set[int]:
    declared = {op.save_schema_to for op in changeset.operations if op.save_schema_to is not None}
    return {current, *declared}


def check_exact(reference: Integrity, observed: Integrity, what: str = "restore") -> IntegrityReport:
    """Exact equality: every count and checksum, and the save schema."""
    violations = []
    for name in (*COUNT_FIELDS, "active_inventory_checksum", "active_quest_checksum", "save_schema_version"):
        a, b = getattr(reference, name), getattr(observed, name)
        if a != b:
            violations.append(f"{what}: {name} is {b}, expected {a}")
    if reference.shard_id != observed.shard_id:
        violations.append(f"{what}: integrity is of shard {observed.shard_id}, expected {reference.shard_id}")
    return IntegrityReport(
        mode="exact",
        ok=not violations,
        violations=violations,
        checks=[f"{what}: counts, checksums and save schema equal the reference exactly"],
        before=reference.model_dump(),
        after=observed.model_dump(),
    )


def check_live(
    changeset: AutonomousChangeSet,
    baseline: Observation | None,
    before: Observation,
    after: Observation,
    *,
    floor_fraction: float = DEFAULT_FLOOR_FRACTION,
    drift_factor: float = DEFAULT_DRIFT_FACTOR,
    drift_per_minute: float = DEFAULT_DRIFT_PER_MINUTE,
) -> IntegrityReport:
    """Compare the pre-change integrity (``before``, the snapshot) with a read after the change.

    ``baseline`` is an earlier read (before the snapshot) that calibrates natural
    drift; with no tick between ``before`` and ``after`` the check is exact.
    """
    ref, obs = before.integrity, after.integrity
    if after.tick is not None and before.tick is not None and after.tick == before.tick:
        report = check_exact(ref, obs, "apply (no tick since the snapshot)")
        report.checks.append("save schema: unchanged")
        return report
    violations: list[str] = []
    checks: list[str] = []
    allowed: dict[str, int] = {}
    declared = declared_removals(changeset)
    elapsed = max(0.0, after.minute - before.minute)
    window = (before.minute - baseline.minute) if baseline is not None else 0.0
    for name in COUNT_FIELDS:
        b, a = getattr(ref, name), getattr(obs, name)
        rate = 0.0
        if baseline is not None and window > 0:
            rate = max(0.0, getattr(baseline.integrity, name) - b) / window
        natural = min(
            b,
            max(
                math.ceil(floor_fraction * b),
                math.ceil(drift_per_minute * b * elapsed),
                math.ceil(drift_factor * rate * elapsed),
            ),
        )
        allowed[name] = declared[name] + natural
        checks.append(
            f"{name}: {b} -> {a} over {elapsed:g} game min; allowed drop {allowed[name]} "
            f"(declared {declared[name]}, natural {natural})"
        )
        if b - a > allowed[name]:
            violations.append(
                f"{name} dropped by {b - a} ({b} -> {a}) in {elapsed:g} game minutes; at most {allowed[name]} "
                f"is explained by the changeset ({declared[name]}) and natural play ({natural})"
            )
    schemas = allowed_schemas(changeset, ref.save_schema_version)
    checks.append(
        f"save schema: {ref.save_schema_version} -> {obs.save_schema_version}; allowed {sorted(schemas)}"
    )
    if obs.save_schema_version < ref.save_schema_version:
        violations.append(
            f"save schema went down from {ref.save_schema_version} to {obs.save_schema_version}: saves are incompatible"
        )
    elif obs.save_schema_version not in schemas:
        violations.append(
            f"save schema is {obs.save_schema_version}; the changeset allows only {sorted(schemas)}"
        )
    if obs.shard_id != ref.shard_id:
        violations.append(f"integrity is of shard {obs.shard_id}, expected {ref.shard_id}")
    return IntegrityReport(
        mode="live",
        ok=not violations,
        violations=violations,
        checks=checks,
        before=ref.model_dump(),
        after=obs.model_dump(),
        allowed_drop=allowed,
    )
