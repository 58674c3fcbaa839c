"""The recovery playbook: a markdown page a person can follow at 3 a.m. without Aegis.

It names the exact snapshot, the exact config to put back and the exact
integrity to expect, as ``aegis`` commands and as raw HTTP calls against the
game backend contract (a studio's backend speaks the same API), so recovery
does not depend on Aegis itself being healthy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aegis.domain import AutonomousChangeSet

DEFAULT_PAGER = "live-ops on-call (PagerDuty service 'aegis-liveops'; escalate to the game's backend on-call)"


def _integrity_table(integrity: dict[str, Any]) -> str:
    rows = [
        "| field | expected |",
        "|---|---|",
        *(f"| `{k}` | `{integrity[k]}` |" for k in sorted(integrity) if k != "shard_id"),
    ]
    return "\n".join(rows)


@dataclass(frozen=True)
class _Facts:
    """What every section of the playbook names: the changeset, its shard, snapshot and backend."""

    cs_id: str
    shard: str
    snap: str
    url: str
    manifest: dict[str, Any]


def render_playbook(
    changeset: AutonomousChangeSet,
    manifest: dict[str, Any],
    validation: dict[str, Any],
    *,
    backend_url: str,
    pager: str = DEFAULT_PAGER,
) -> str:
    """The playbook of ``changeset`` (markdown), from its ``manifest.json`` and ``validation.json``."""
    snap = manifest["snapshot_id"]
    f = _Facts(changeset.id, changeset.target, snap, backend_url.rstrip("/"), manifest)
    params_before = json.dumps({"params": manifest["params_before"]}, sort_keys=True)
    snap_integrity = validation.get("snapshot_integrity") or {}
    status = manifest.get("status", "unknown")
    result = validation.get("result", "pending")
    changed = ", ".join(sorted(_changed(manifest))) or "none"
    return (
        _summary(f, changed, status, result, pager)
        + _look_and_roll_back(f)
        + _roll_back_by_hand(f, params_before)
        + _verify_and_record(f, snap_integrity)
    )


def _summary(f: _Facts, changed: str, status: str, result: str, pager: str) -> str:
    """The title and the facts a person needs before touching anything."""
    cs_id, shard, snap, manifest = f.cs_id, f.shard, f.snap, f.manifest
    return f"""# Recovery playbook: changeset `{cs_id}`

- **Target shard:** `{shard}`
- **Pre-change snapshot:** `{snap}` (game time {manifest["snapshot_game_time"]})
- **Config version before:** {manifest["config_version_before"]}; **after:** {manifest.get("config_version_after") or "not applied yet"}
- **Parameters changed:** {changed}
- **Save schema:** {manifest["save_schema_from"]} -> {manifest["save_schema_to"]}
- **Status when written:** {status}; validation: {result}
- **Page:** {pager}

"""


def _look_and_roll_back(f: _Facts) -> str:
    """Sections 1-2: check whether the change applied; roll back with Aegis."""
    cs_id, shard, snap, url, manifest = f.cs_id, f.shard, f.snap, f.url, f.manifest
    return f"""## 1. Look before you act

```bash
aegis changeset status {cs_id}
curl -s {url}/v1/shards/{shard}/config        # the ETag header is the config version
curl -s {url}/v1/shards/{shard}/integrity
aegis audit show --changeset {cs_id}           # every decision and transition, explained
```

If the config version is still {manifest["config_version_before"]} and the params equal
`params_before` in `manifest.json`, the change never applied: nothing to undo.

## 2. Roll back with Aegis (preferred)

```bash
aegis changeset rollback {cs_id}                 # restores snapshot {snap} and verifies integrity
aegis changeset rollback {cs_id} --mode config   # puts the old params back, keeps player progress
```

`--mode snapshot` (the default) restores the world to the snapshot: progress players made
on this shard since then is discarded. `--mode config` keeps that progress and only puts
the previous parameters back; use it when player data is intact (integrity check passed).

"""


def _roll_back_by_hand(f: _Facts, params_before: str) -> str:
    """Section 3: the raw HTTP calls against the backend contract, for when Aegis is down."""
    cs_id, shard, snap, url = f.cs_id, f.shard, f.snap, f.url
    return f"""## 3. Roll back by hand (Aegis unavailable)

Restore the snapshot (the backend verifies integrity before the shard resumes and answers
409 with both integrities if it cannot):

```bash
curl -s -X POST {url}/v1/shards/{shard}/restore \\
  -H 'Content-Type: application/json' \\
  -d '{{"snapshot_id": "{snap}"}}'
```

Or put the previous config back, keeping player progress (replace `<VERSION>` with the ETag
of `GET /config`; the Idempotency-Key makes a retried call apply once):

```bash
curl -s -X PUT {url}/v1/shards/{shard}/config \\
  -H 'Content-Type: application/json' \\
  -H 'If-Match: <VERSION>' \\
  -H 'Idempotency-Key: {cs_id}:manual-rollback' \\
  -d '{params_before}'
```

A `412` means the config moved again: re-read it and decide; never retry blindly.

"""


def _verify_and_record(f: _Facts, snap_integrity: dict[str, Any]) -> str:
    """Sections 4-5: the integrity to expect after the rollback; record what was done."""
    shard, url, manifest = f.shard, f.url, f.manifest
    return f"""## 4. Verify integrity

After a snapshot restore, `GET {url}/v1/shards/{shard}/integrity` taken before any tick (the
restore answer carries it) must equal the snapshot's integrity exactly:

{_integrity_table(snap_integrity) if snap_integrity else "(snapshot integrity not recorded yet)"}

After a config-only rollback, counts must not have dropped beyond normal play (see
`validation.json`, `checks`), and `save_schema_version` must be {manifest["save_schema_from"]}.

## 5. Record it

Aegis records its own rollbacks in the audit ledger. If you rolled back by hand, tell the
on-call channel, run `aegis changeset resume` once Aegis is back (it reads the backend and
reconciles the changeset's state), and `aegis audit verify`.
"""


def _changed(manifest: dict[str, Any]) -> list[str]:
    before, after = manifest.get("params_before") or {}, manifest.get("params_after") or {}
    return [k for k in after if before.get(k) != after.get(k)]
