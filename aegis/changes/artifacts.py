"""Rollback artifacts: what a person (or ``resume``) needs to undo a change without Aegis.

Every applied changeset keeps, under ``AEGIS_HOME/changesets/<id>/``:

``manifest.json``   the migration manifest: target, snapshot, config versions,
                    params before/after, operations, save schema from/to
``diff.json``       the change diff, parameter by parameter
``validation.json`` integrity before/after, every check run and its result
``playbook.md``     the recovery playbook: exact commands and HTTP calls to
                    restore the snapshot and the config, to verify integrity,
                    and whom to page

Files are written atomically (temporary name, then rename) and their sha256 is
recorded in the store, so a reader can tell a complete artifact from a torn one
and an edited one from the original. They are written twice: right after the
pre-change snapshot (so a crash mid-apply still leaves a playbook) and again
when the outcome is known.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from aegis.changes.playbook import render_playbook
from aegis.domain import AutonomousChangeSet, WorldParams

ARTIFACT_FILES: dict[str, str] = {
    "manifest": "manifest.json",
    "diff": "diff.json",
    "validation": "validation.json",
    "playbook": "playbook.md",
}


def write_atomic_text(path: Path, text: str) -> str:
    """Write ``text`` under a temporary name, fsync, rename; return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def build_manifest(
    changeset: AutonomousChangeSet,
    snapshot: dict[str, Any],
    config_before: dict[str, Any],
    params_after: WorldParams,
    config_after: dict[str, Any] | None,
    status: str,
) -> dict[str, Any]:
    schema_from = int(snapshot["integrity"]["save_schema_version"])
    declared = [op.save_schema_to for op in changeset.operations if op.save_schema_to is not None]
    return {
        "changeset_id": changeset.id,
        "status": status,
        "target": changeset.target,
        "actor": changeset.actor,
        "kind": changeset.kind.value,
        "snapshot_id": snapshot["snapshot_id"],
        "snapshot_game_time": str(snapshot["game_time"]),
        "config_version_before": config_before["version"],
        "config_version_after": (config_after or {}).get("version"),
        "params_before": config_before["params"],
        "params_after": params_after.model_dump(mode="json"),
        "operations": [op.model_dump(mode="json") for op in changeset.operations],
        "save_schema_from": schema_from,
        "save_schema_to": max(declared) if declared else schema_from,
    }


def build_diff(
    changeset: AutonomousChangeSet, params_before: WorldParams, params_after: WorldParams
) -> dict[str, Any]:
    """Declared diff and effective diff (what the PUT really changes against the live config)."""
    return {
        "changeset_id": changeset.id,
        "declared": {k: v.model_dump(mode="json") for k, v in changeset.diff.items()},
        "effective": {k: v.model_dump(mode="json") for k, v in params_before.diff(params_after).items()},
        "relative_delta": {k: v.relative_delta() for k, v in changeset.diff.items()},
    }


def write_artifacts(
    root: Path,
    changeset: AutonomousChangeSet,
    *,
    manifest: dict[str, Any],
    diff: dict[str, Any],
    validation: dict[str, Any],
    backend_url: str,
    pager: str,
) -> dict[str, tuple[Path, str]]:
    """Write all four artifacts; returns kind -> (path, sha256)."""
    folder = root / changeset.id
    playbook = render_playbook(changeset, manifest, validation, backend_url=backend_url, pager=pager)
    docs = {
        "manifest": json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n",
        "diff": json.dumps(diff, indent=2, sort_keys=True, default=str) + "\n",
        "validation": json.dumps(validation, indent=2, sort_keys=True, default=str) + "\n",
        "playbook": playbook,
    }
    out: dict[str, tuple[Path, str]] = {}
    if folder.is_dir():  # temporaries a killed writer left behind
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    for kind, text in docs.items():
        path = folder / ARTIFACT_FILES[kind]
        out[kind] = (path, write_atomic_text(path, text))
    return out
