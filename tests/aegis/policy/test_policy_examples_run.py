"""The shipped examples run against the bundled world (issue 11, sections 4-5).

Each ``policies/examples/*.json`` names shards the bundled world has, and
``aegis changeset run`` on it (the actor policy from the file, as an operator
passes it with ``--actor-policy``) gives the verdict its name claims, recorded in
the ledger. Each example runs under its own AEGIS_HOME (store, ledger) against
one world, and a change that reached its canary is rolled back, so every
example starts from the world's defaults.

The file's context is passed on too: ``changeset run`` completes the context it
measures with the facts the file states that the world cannot measure
(predictions, budget, alerts, players share, recent changes) and never relaxes
a measured one. A changeset whose operations the backend cannot execute (only
set_params is) gets the policy's decision first: a deny is rejected by the
policy, and a verdict that would let it proceed is recorded, then refused for
executability (state ``rejected``).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from aegis.ledger import Ledger
from aegis.policy.engine import default_policies_dir
from aegis.world.sim import shard_ids
from tests.support import AEGIS, CANARY_WORLD_ARGS, WorldServer

pytestmark = pytest.mark.slow

EXAMPLES = sorted((default_policies_dir() / "examples").glob("*.json"))
RUN_TIMEOUT_S = 180
UNKNOWN_TARGET = "deny-unknown-target"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorldServer]:
    home = tmp_path_factory.mktemp("examples-world")
    server = WorldServer(home, args=CANARY_WORLD_ARGS).start()
    try:
        yield server
    finally:
        server.stop()


def _aegis(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AEGIS_HOME": str(home), "AEGIS_PROFILE": "local"}
    return subprocess.run(
        [AEGIS, *args], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )


def test_examples_name_shards_of_the_bundled_world(world: WorldServer) -> None:
    bundled = set(shard_ids())
    for path in EXAMPLES:
        doc = json.loads(path.read_text())
        names = {doc["changeset"]["target"], doc["context"]["shard"]["shard_id"]}
        names |= {a["target"] for a in doc["context"].get("firing_alerts", [])}
        if path.stem == UNKNOWN_TARGET:
            assert doc["changeset"]["target"] not in bundled
            continue
        assert names <= bundled, (path.name, names - bundled)
        assert set(doc["context"]["known_shards"]) == bundled, path.name
    assert len({json.loads(p.read_text())["changeset"]["id"] for p in EXAMPLES}) == len(EXAMPLES)


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in EXAMPLES])
def test_changeset_run_gives_the_verdict_the_name_claims(
    world: WorldServer, path: Path, tmp_path: Path
) -> None:
    doc = json.loads(path.read_text())
    expected = path.stem.split("-", 1)[0]
    actor = tmp_path / "actor.json"
    actor.write_text(json.dumps(doc["context"]["actor"]))
    run = ["changeset", "run", str(path), "--url", world.url, "--actor-policy", str(actor), "--hours", "0.5"]
    home = tmp_path / "aegis"  # its own store and ledger: one example's canary never rate-limits the next
    result = _aegis(home, *run, "--json")
    if path.stem == UNKNOWN_TARGET:  # refused before anything is proposed to the backend
        assert result.returncode == 2, result.stdout + result.stderr
        assert "'eu-1' not found at the backend" in result.stderr and "eu-west-1" in result.stderr
        return
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    try:
        assert summary["verdict"] == expected, summary
        unexecutable = {op["kind"] for op in doc["changeset"]["operations"]} - {"set_params"}
        if expected == "deny":
            assert summary["state"] == "rejected" and "denied by" in summary["reason"], summary
        elif unexecutable:  # judged first, then refused: only set_params reaches the backend
            assert summary["state"] == "rejected" and "not executable" in summary["reason"], summary
        records = Ledger(f"sqlite:///{home / 'ledger.db'}", home / "keys", read_only=True).records(
            summary["id"]
        )
        decisions = [r.payload["decision"] for r in records if r.kind == "decision"]
        assert decisions and decisions[0]["verdict"] == expected, records
    finally:
        if summary["state"] == "canary":  # back to the defaults for the next example
            back = _aegis(
                home, "changeset", "rollback", summary["id"], "--url", world.url, "--mode", "config"
            )
            assert back.returncode == 0, back.stdout + back.stderr
