"""The lifecycle end to end over real HTTP against a world server subprocess.

Each test targets its own shard (the module's server has 12), so tests do not
see each other's changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aegis.changes.lifecycle import ChangeSetError, UnknownTarget
from aegis.changes.states import IllegalTransition
from aegis.changes.store import ChangeSetConflict
from aegis.domain import (
    AutonomousChangeSet,
    Integrity,
    Operation,
    OperationKind,
    ParamChange,
    PromotionState,
    Verdict,
    WorldParams,
)
from aegis.world.client import BackendUnavailable, GameBackendClient

S = PromotionState
IN_BAND = {"inflation": 0.0, "velocity": 1.0, "abandon_rate": 0.1, "deaths": 1.0}


def sink_change(target: str, cs_id: str, after: float = 1.01) -> AutonomousChangeSet:
    """A benign change: a little more currency sink (it lowers inflation, passes the gate)."""
    return AutonomousChangeSet(
        id=cs_id,
        target=target,
        diff={"sink_multiplier": ParamChange(before=1.0, after=after)},
        rationale="test",
    )


def test_changes_auto_change_goes_to_canary_then_promoted(make_lifecycle, world) -> None:
    lc = make_lifecycle(predict=lambda cs: IN_BAND)
    client = GameBackendClient(world.url)
    before = client.get_config("eu-west-2")
    rec = lc.run(sink_change("eu-west-2", "cs-auto-1"))
    assert rec.state == S.CANARY, rec.reason
    assert rec.decision is not None and rec.decision.verdict == Verdict.AUTO
    steps = {s.step: s.status for s in lc.store.steps("cs-auto-1")}
    assert "sim_snapshot" not in steps  # auto skipped the gate
    assert steps == {"apply_snapshot": "done", "apply": "done", "verify_apply": "done"}
    live = client.get_config("eu-west-2")
    assert live.version == before.version + 1
    assert live.params.sink_multiplier == 1.01
    assert client.shard("eu-west-2").role.value == "canary"

    # every step is idempotent: re-running returns the recorded outcome and applies nothing
    assert lc.run(sink_change("eu-west-2", "cs-auto-1")).state == S.CANARY
    assert lc.check("cs-auto-1").id == rec.decision.id
    assert client.get_config("eu-west-2").version == before.version + 1

    promoted = lc.promote("cs-auto-1")
    assert promoted.state == S.PROMOTED
    assert lc.promote("cs-auto-1").state == S.PROMOTED
    assert client.shard("eu-west-2").role.value == "control"
    with pytest.raises(IllegalTransition, match="promoted -> rolled_back"):
        lc.roll_back("cs-auto-1")
    kinds = [(r.kind, (r.payload.get("to") or "")) for r in lc.ledger.records("cs-auto-1")]
    assert kinds[0] == ("decision", "")
    assert [k[1] for k in kinds[1:]] == ["policy_checked", "canary", "promoted"]
    assert lc.ledger.verify().ok


def test_changes_simulated_change_then_rollback_restores_config_and_data(make_lifecycle, world) -> None:
    lc = make_lifecycle()
    client = GameBackendClient(world.url)
    before = client.get_config("eu-west-3")
    rec = lc.run(sink_change("eu-west-3", "cs-sim-1"))
    assert rec.decision.verdict == Verdict.SIMULATE
    assert rec.state == S.CANARY, rec.reason
    assert rec.simulation["passed"] is True
    assert [t.dst for t in lc.store.transitions("cs-sim-1")] == [S.POLICY_CHECKED, S.SIMULATED, S.CANARY]
    snapshot_id = rec.snapshot["snapshot_id"]

    # the rollback artifacts
    folder = lc.paths.changesets / "cs-sim-1"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["snapshot_id"] == snapshot_id
    assert (
        manifest["params_before"]["sink_multiplier"] == 1.0
        and manifest["params_after"]["sink_multiplier"] == 1.01
    )
    assert manifest["config_version_before"] == before.version
    assert manifest["save_schema_from"] == manifest["save_schema_to"] == 3
    diff = json.loads((folder / "diff.json").read_text())
    assert diff["effective"] == {"sink_multiplier": {"before": 1.0, "after": 1.01}}
    validation = json.loads((folder / "validation.json").read_text())
    assert validation["result"] == "passed" and validation["apply"]["ok"]
    playbook = (folder / "playbook.md").read_text()
    assert snapshot_id in playbook
    assert f"POST {world.url}/v1/shards/eu-west-3/restore" in playbook.replace("-X POST ", "POST ")
    assert "aegis changeset rollback cs-sim-1" in playbook
    stored = lc.store.artifacts("cs-sim-1")
    assert set(stored) == {"manifest", "diff", "validation", "playbook"}

    rolled = lc.roll_back("cs-sim-1", "test rollback")
    assert rolled.state == S.ROLLED_BACK
    live = client.get_config("eu-west-3")
    assert live.params == before.params  # config restored
    validation = json.loads((folder / "validation.json").read_text())
    restored = Integrity.model_validate(validation["rollback"]["after"])
    assert restored == Integrity.model_validate(rec.snapshot["integrity"])  # data restored exactly
    assert validation["rollback"]["ok"] and validation["rollback"]["mode"] == "exact"
    assert lc.roll_back("cs-sim-1").state == S.ROLLED_BACK  # idempotent
    assert lc.ledger.verify().ok


def test_changes_gate_rejects_a_harmful_change_and_nothing_is_applied(make_lifecycle, world) -> None:
    lc = make_lifecycle()
    client = GameBackendClient(world.url)
    before = client.get_config("us-east-1")
    harder = AutonomousChangeSet(
        id="cs-harm-1",
        target="us-east-1",
        diff={"quest_difficulty": ParamChange(before=[1.0] * 5, after=[2.0] * 5)},
    )
    rec = lc.run(harder)
    assert rec.state == S.REJECTED
    assert rec.decision.verdict == Verdict.SIMULATE
    assert "simulation gate failed" in rec.reason and "abandon_rate" in rec.reason
    assert client.get_config("us-east-1").version == before.version
    with pytest.raises(IllegalTransition, match="rejected -> canary"):
        lc.start_canary("cs-harm-1")


class LossyBackend(GameBackendClient):
    """A backend whose integrity endpoint shows 40 active items lost once a config was PUT.

    The bundled world has no data-destroying fault, so the loss is injected at the
    client boundary; the rollback that follows is real (restore over HTTP).
    """

    lost = False

    def put_config(self, *args, **kwargs):
        out = super().put_config(*args, **kwargs)
        self.lost = True
        return out

    def integrity(self, shard_id: str) -> Integrity:
        real = super().integrity(shard_id)
        if not self.lost:
            return real
        return real.model_copy(
            update={
                "active_inventory_items": max(0, real.active_inventory_items - 40),
                "active_inventory_checksum": "0",
            }
        )

    def restore(self, shard_id: str, snapshot_id: str):
        self.lost = False
        return super().restore(shard_id, snapshot_id)


def test_changes_integrity_violation_rolls_back_to_the_snapshot(make_lifecycle, world) -> None:
    # a floor of 0 makes any unexplained drop a violation, whatever the natural drift
    lc = make_lifecycle(
        backend=LossyBackend(world.url),
        predict=lambda cs: IN_BAND,
        floor_fraction=0.0,
        drift_factor=0.0,
        drift_per_minute=0.0,
    )
    client = GameBackendClient(world.url)
    before = client.get_config("us-east-2")
    rec = lc.run(sink_change("us-east-2", "cs-lossy-1"))
    assert rec.state == S.ROLLED_BACK, rec.reason
    assert "integrity check failed" in rec.reason
    assert client.get_config("us-east-2").params == before.params
    validation = json.loads((lc.paths.changesets / "cs-lossy-1" / "validation.json").read_text())
    assert validation["apply"]["ok"] is False
    assert Integrity.model_validate(validation["rollback"]["after"]) == Integrity.model_validate(
        rec.snapshot["integrity"]
    )
    assert [t.dst for t in lc.store.transitions("cs-lossy-1")] == [S.POLICY_CHECKED, S.ROLLED_BACK]


class CrashAfterPut(GameBackendClient):
    """The PUT reaches the backend, then the process 'dies' before it learns the answer."""

    def put_config(self, *args, **kwargs):
        super().put_config(*args, **kwargs)
        raise BackendUnavailable("connection reset after the request was sent")


class CrashBeforePut(GameBackendClient):
    def put_config(self, *args, **kwargs):
        raise BackendUnavailable("connection refused")


@pytest.mark.parametrize(
    ("backend_cls", "target"), [(CrashAfterPut, "ap-southeast-1"), (CrashBeforePut, "ap-southeast-2")]
)
def test_changes_resume_learns_from_the_backend_whether_the_apply_happened(
    make_lifecycle, world, backend_cls, target
) -> None:
    client = GameBackendClient(world.url)
    before = client.get_config(target)
    crashing = make_lifecycle(backend=backend_cls(world.url), predict=lambda cs: IN_BAND)
    with pytest.raises(BackendUnavailable):
        crashing.run(sink_change(target, f"cs-crash-{target}"))
    step = crashing.store.step(f"cs-crash-{target}", "apply")
    assert step is not None and step.status == "intent"  # outcome unknown

    healthy = make_lifecycle(predict=lambda cs: IN_BAND)
    healthy.resume()
    rec = healthy.get(f"cs-crash-{target}")
    assert rec.state == S.CANARY, rec.reason
    live = client.get_config(target)
    assert live.version == before.version + 1  # applied exactly once
    assert live.params.sink_multiplier == 1.01
    outcome = healthy.store.step(f"cs-crash-{target}", "apply").outcome
    if backend_cls is CrashAfterPut:
        assert "applied before the crash" in outcome["resolved"]


def test_changes_bad_input_gets_a_clear_error(make_lifecycle, world) -> None:
    lc = make_lifecycle()
    with pytest.raises(UnknownTarget, match=r"'mars-1' not found.*eu-west-1"):
        lc.propose(sink_change("mars-1", "cs-bad-1"))
    with pytest.raises(UnknownTarget, match=r"'mars-1' not found"):  # operation-only: the target still counts
        lc.propose(
            AutonomousChangeSet(target="mars-1", operations=[Operation(kind=OperationKind.RESTART_SHARD)])
        )
    with pytest.raises(ChangeSetError, match="diff is empty and there are no operations"):
        lc.propose(AutonomousChangeSet(target="eu-west-4"))
    with pytest.raises(ChangeSetError, match="outside"):
        lc.propose(
            AutonomousChangeSet(
                target="eu-west-4", diff={"sink_multiplier": ParamChange(before=1.0, after=9.0)}
            )
        )
    lc.propose(sink_change("eu-west-4", "cs-dup-1"))
    with pytest.raises(ChangeSetConflict, match="different content"):
        lc.propose(sink_change("eu-west-4", "cs-dup-1", after=1.02))
    with pytest.raises(IllegalTransition, match="proposed -> canary"):
        lc.start_canary("cs-dup-1")
    assert lc.store.changesets() and all(r.id != "cs-bad-1" for r in lc.store.changesets())


def test_changes_stale_proposal_is_rejected_not_reapplied(make_lifecycle, world) -> None:
    lc = make_lifecycle(predict=lambda cs: IN_BAND)
    client = GameBackendClient(world.url)
    before = client.get_config("ap-southeast-3")
    stale = AutonomousChangeSet(
        id="cs-stale-1",
        target="ap-southeast-3",
        diff={"sink_multiplier": ParamChange(before=0.9, after=0.93)},
    )
    rec = lc.run(stale)
    assert rec.state == S.REJECTED
    assert "changed since the proposal" in rec.reason
    assert client.get_config("ap-southeast-3").version == before.version


def test_changes_cli_reports_malformed_files_and_unknown_ids(tmp_path: Path, aegis_home) -> None:
    from aegis.changes.cli import changeset

    runner = CliRunner()
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    result = runner.invoke(changeset, ["run", str(bad_json)])
    assert result.exit_code == 2 and "not valid JSON" in result.output
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"target": "eu-west-1", "diff": {"quest_rewrd": {"before": 1, "after": 2}}}))
    result = runner.invoke(changeset, ["run", str(typo)])
    assert result.exit_code == 2 and "quest_rewrd" in result.output
    result = runner.invoke(changeset, ["status", "cs-nope"])
    assert result.exit_code == 2 and "cs-nope" in result.output
    result = runner.invoke(changeset, ["list", "--json"])
    assert result.exit_code == 0 and json.loads(result.output) == []


def test_changes_world_params_roundtrip_in_intent() -> None:
    # the journal stores params as JSON: they must come back equal (resume compares them)
    p = WorldParams(quest_reward=1.05, spawn_rate=[1.1] * 6)
    assert WorldParams.model_validate(json.loads(json.dumps(p.model_dump(mode="json")))) == p


class FlakyLedger:
    """A ledger that is down for the canary transition (the store already committed it)."""

    def __init__(self, real) -> None:
        self.real = real

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def record_transition(self, changeset_id, from_state, to_state, *args, **kwargs):
        if PromotionState(to_state) == S.CANARY:
            from aegis.ledger.ledger import LedgerError

            raise LedgerError("ledger database unavailable")
        return self.real.record_transition(changeset_id, from_state, to_state, *args, **kwargs)


def test_changes_ledger_outbox_is_repaired_on_resume_exactly_once(make_lifecycle, world) -> None:
    from aegis.ledger.ledger import LedgerError

    flaky = make_lifecycle(predict=lambda cs: IN_BAND)
    flaky.ledger = FlakyLedger(flaky.ledger)
    with pytest.raises(LedgerError):
        flaky.run(sink_change("ap-southeast-4", "cs-outbox-1"))
    assert flaky.get("cs-outbox-1").state == S.CANARY  # the store moved, the ledger missed it
    assert [t.id for t in flaky.store.transitions(unrecorded=True)]

    healthy = make_lifecycle(predict=lambda cs: IN_BAND)
    healthy.resume()
    healthy.resume()
    tos = [r.payload["to"] for r in healthy.ledger.records("cs-outbox-1") if r.kind == "transition"]
    assert tos == ["policy_checked", "canary"]
    assert healthy.store.transitions(unrecorded=True) == []
    assert healthy.ledger.verify().ok


def test_changes_denied_change_is_rejected_with_the_rule_and_recorded(make_lifecycle, world) -> None:
    from aegis.domain import ExecutionPolicy

    no_tools = ExecutionPolicy(actor="aegis-proposer", allowed_tools=[], data_scope=["*"])
    lc = make_lifecycle(actor_policies={"aegis-proposer": no_tools}, predict=lambda cs: IN_BAND)
    client = GameBackendClient(world.url)
    before = client.get_config("eu-west-1")
    rec = lc.run(sink_change("eu-west-1", "cs-deny-1"))
    assert rec.state == S.REJECTED
    assert rec.decision.verdict == Verdict.DENY
    assert "security.tool_not_allowed" in rec.reason
    assert client.get_config("eu-west-1").version == before.version
    assert lc.store.steps("cs-deny-1") == []  # nothing touched the backend
    kinds = [r.kind for r in lc.ledger.records("cs-deny-1")]
    assert kinds == ["decision", "transition", "transition"]
    with pytest.raises(IllegalTransition, match="rejected -> simulated"):
        lc.simulate("cs-deny-1")
