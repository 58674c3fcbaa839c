"""``aegis incidents`` as a subprocess, over a real incident store."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta

from aegis.config import AegisPaths
from aegis.domain import utcnow
from aegis.healing.models import ActionOutcome, Incident, IncidentAction, IncidentStatus
from aegis.healing.store import IncidentStore
from tests.support import AEGIS

FIELDS = {"id", "target", "kind", "status", "opened_at", "contained_at", "resolved_at", "actions"}


def _run(home: AegisPaths, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AEGIS_HOME": str(home.home)}
    return subprocess.run([AEGIS, "incidents", *args], env=env, capture_output=True, text=True, timeout=120)


def test_list_and_show(aegis_home: AegisPaths) -> None:
    t0 = utcnow()
    store = IncidentStore()
    done = store.save(
        Incident(
            target="eu-west-1",
            kind="shard_down",
            status=IncidentStatus.RESOLVED,
            opened_at=t0,
            contained_at=t0 + timedelta(seconds=2),
            resolved_at=t0 + timedelta(seconds=5),
            actions=[
                IncidentAction(name="failover", outcome=ActionOutcome.APPLIED, operation="failover", at=t0),
                IncidentAction(name="verify:failover", outcome=ActionOutcome.VERIFIED, at=t0),
            ],
        )
    )
    store.save(Incident(target="us-east-1", kind="latency", opened_at=t0 + timedelta(seconds=1)))

    out = _run(aegis_home, "list", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["status"] for r in rows] == ["resolved", "open"]
    assert all(set(r) == FIELDS for r in rows)
    assert rows[0]["actions"] == [
        {"name": "failover", "outcome": "applied", "at": t0.isoformat()},
        {"name": "verify:failover", "outcome": "verified", "at": t0.isoformat()},
    ]
    assert rows[1]["contained_at"] is None and rows[1]["resolved_at"] is None

    shown = _run(aegis_home, "show", done.id, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout) == rows[0]
    human = _run(aegis_home, "show", done.id)
    assert "failover" in human.stdout and "resolved" in human.stdout

    only_open = json.loads(_run(aegis_home, "list", "--json", "--status", "open").stdout)
    assert [r["target"] for r in only_open] == ["us-east-1"]
    assert "us-east-1" in _run(aegis_home, "list").stdout


def test_bad_input_exits_2(aegis_home: AegisPaths) -> None:
    missing = _run(aegis_home, "show", "inc-nope")
    assert missing.returncode == 2 and "no incident 'inc-nope'" in missing.stderr
    assert _run(aegis_home, "list", "--status", "sleeping").returncode == 2
    assert _run(aegis_home, "open", "--target", "eu-west-1", "--problem", "weather").returncode == 2


def test_open_by_hand_and_take_over(aegis_home: AegisPaths) -> None:
    opened = _run(aegis_home, "open", "--target", "eu-west-1", "--problem", "latency")
    assert opened.returncode == 0, opened.stderr
    inc_id = opened.stdout.strip()
    assert _run(aegis_home, "escalate", inc_id, "--reason", "on it").returncode == 0
    row = json.loads(_run(aegis_home, "show", inc_id, "--json").stdout)
    assert row["status"] == "escalated" and row["actions"][-1]["name"] == "escalate"
    assert _run(aegis_home, "escalate", inc_id, "--reason", "again").returncode == 2
