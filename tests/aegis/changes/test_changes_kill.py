"""``kill -9`` the lifecycle at random points, then ``resume``: never a half state.

The lifecycle runs as ``aegis changeset run`` in a subprocess against a real world
server; it is killed at a random moment (a bounded handful of iterations), then
``aegis changeset resume`` runs, and the end state must be one of: no changeset
and an untouched config; rejected and an untouched config; canary with the new
config applied exactly once; rolled back with the snapshot's integrity.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest

from aegis.changes.store import ChangeSetNotFound, ChangeSetStore
from aegis.domain import Integrity, PromotionState
from aegis.world.client import GameBackendClient
from tests.support import AEGIS, CANARY_WORLD_ARGS, WorldServer

S = PromotionState
ITERATIONS = 6
SEED = 20260101
SIM_HOURS = "0.5"


def _run_cli(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([AEGIS, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _state_of(home: Path, cs_id: str) -> str:
    """State and pending steps when the process died (for the report of what was exercised)."""
    store = ChangeSetStore(f"sqlite:///{home / 'changesets.db'}")
    try:
        rec = store.get(cs_id)
        pending = [s.step for s in store.steps(cs_id) if s.status == "intent"]
        return f"{rec.state.value}{' pending ' + ','.join(pending) if pending else ''}"
    except ChangeSetNotFound:
        return "absent"
    finally:
        store.close()


@pytest.mark.slow
def test_changes_kill9_at_random_points_then_resume_is_consistent(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = WorldServer(home, speed="300", args=CANARY_WORLD_ARGS).start()
    env = {**os.environ, "AEGIS_HOME": str(home), "AEGIS_PROFILE": "local", "AEGIS_WORLD_URL": server.url}
    rng = random.Random(SEED)
    client = GameBackendClient(server.url)
    targets = ["eu-west-1", "us-east-3", "ap-southeast-4", "eu-west-4", "us-east-4", "ap-southeast-1"][
        :ITERATIONS
    ]
    outcomes: list[str] = []
    try:
        for i, target in enumerate(targets):
            cs_id = f"cs-kill-{i}"
            before = client.get_config(target)
            file = tmp_path / f"{cs_id}.json"
            file.write_text(
                json.dumps(
                    {
                        "id": cs_id,
                        "target": target,
                        "diff": {"sink_multiplier": {"before": 1.0, "after": 1.01}},
                    }
                )
            )
            proc = subprocess.Popen(
                [AEGIS, "changeset", "run", str(file), "--hours", SIM_HOURS],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            # the CLI spends ~2-3 s importing; the lifecycle itself runs for a few seconds after
            delay = rng.uniform(2.8, 9.0)
            try:
                proc.wait(timeout=delay)
                killed = False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                killed = True

            at_kill = _state_of(home, cs_id)
            resumed = _run_cli(["changeset", "resume", "--hours", SIM_HOURS, "--json"], env)
            assert resumed.returncode == 0, resumed.stderr

            store = ChangeSetStore(f"sqlite:///{home / 'changesets.db'}")
            live = client.get_config(target)
            try:
                rec = store.get(cs_id)
            except ChangeSetNotFound:
                outcomes.append(f"{delay:.1f}s killed={killed}: never proposed")
                assert (live.version, live.params) == (before.version, before.params)
                continue
            assert not [s.step for s in store.steps(cs_id) if s.status == "intent"], (
                "a step left with unknown outcome"
            )
            outcomes.append(f"{delay:.1f}s killed={killed}: {at_kill} -> {rec.state.value}")
            if rec.state == S.CANARY:
                assert live.version == before.version + 1, "the change must apply exactly once"
                assert live.params.sink_multiplier == 1.01
                assert rec.config_after["version"] == live.version
            elif rec.state == S.REJECTED:
                assert (live.version, live.params) == (before.version, before.params)
            elif rec.state == S.ROLLED_BACK:
                assert live.params == before.params
                validation = json.loads((home / "changesets" / cs_id / "validation.json").read_text())
                assert Integrity.model_validate(validation["rollback"]["after"]) == Integrity.model_validate(
                    rec.snapshot["integrity"]
                )
            else:
                pytest.fail(f"{cs_id} left in half state {rec.state.value} after resume ({outcomes[-1]})")
            if rec.state in (S.CANARY, S.ROLLED_BACK):
                assert (home / "changesets" / cs_id / "playbook.md").read_text().count(
                    rec.snapshot["snapshot_id"]
                ) >= 2
            store.close()
        verified = _run_cli(["audit", "verify"], env, timeout=60)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        client.close()
        server.stop()
    print("kill outcomes:", outcomes)
