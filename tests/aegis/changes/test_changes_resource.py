"""``ChangeSetResource``: the lifecycle as the Dagster canary/healing assets will call it."""

from __future__ import annotations

import pytest

from aegis.domain import CanaryResult, CanaryVerdict
from aegis.world.client import GameBackendClient
from assets.resources.changes import ChangeSetResource


def test_changes_resource_drives_the_lifecycle(world, monkeypatch: pytest.MonkeyPatch) -> None:
    # share the server's AEGIS_HOME so the in-process gate reads its snapshots
    monkeypatch.setenv("AEGIS_HOME", str(world.home))
    res = ChangeSetResource(backend_url=world.url, simulator="inprocess", simulation_hours=1.0)
    client = GameBackendClient(world.url)
    before = client.get_config("us-east-3")
    proposed = res.propose(
        {"id": "cs-res-1", "target": "us-east-3", "diff": {"sink_multiplier": {"before": 1.0, "after": 1.01}}}
    )
    assert proposed["state"] == "proposed"
    decision = res.check("cs-res-1")
    assert decision["verdict"] == "simulate" and decision["changeset_id"] == "cs-res-1"
    started = res.start_canary("cs-res-1")
    assert started["state"] == "canary", started["reason"]
    assert client.get_config("us-east-3").version == before.version + 1
    status = res.status("cs-res-1")
    assert set(status["artifacts"]) == {"manifest", "diff", "validation", "playbook"}
    result = CanaryResult(
        canary_shard="us-east-3",
        control_shards=["us-east-4"],
        metric="abandon_rate",
        effect=0.0,
        verdict=CanaryVerdict.PROMOTE,
    )
    assert res.promote("cs-res-1", result.model_dump(mode="json"))["state"] == "promoted"
    assert res.lifecycle().get("cs-res-1").changeset.canary_result == result
    with pytest.raises(ValueError, match="simulator"):
        ChangeSetResource(backend_url=world.url, simulator="cloud").lifecycle()
    client.close()
