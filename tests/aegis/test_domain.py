import json

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from aegis.cli import cli
from aegis.domain import (
    CORE_TYPES,
    AutonomousChangeSet,
    Axiom,
    ParamChange,
    WorldParams,
    explain,
)


def test_world_params_defaults_are_valid_and_vector_is_stable() -> None:
    p = WorldParams()
    assert len(p.to_vector()) == len(WorldParams.vector_names())
    assert WorldParams.vector_names()[0] == "npc_aggression"


def test_world_params_out_of_range_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        WorldParams(npc_aggression=9.0)
    text = explain(info.value, "world parameters")
    assert "npc_aggression=9.0 is outside [0.1, 3.0]" in text


def test_wrong_length_vector_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        WorldParams(spawn_rate=[1.0, 1.0])
    assert "spawn_rate" in explain(info.value)


def test_unknown_field_reads_well() -> None:
    with pytest.raises(ValidationError) as info:
        AutonomousChangeSet.model_validate({"target": "eu-1", "diff": {}, "risk": 0.3})
    text = explain(info.value, "changeset")
    assert "risk: unknown field (got 0.3)" in text


def test_unknown_param_in_diff_rejected() -> None:
    with pytest.raises(ValidationError, match="unknown world parameter"):
        AutonomousChangeSet(target="eu-1", diff={"gravity": ParamChange(before=1.0, after=2.0)})


def test_diff_and_apply_roundtrip() -> None:
    a = WorldParams()
    b = WorldParams(npc_aggression=1.3, quest_difficulty=[1.0, 1.2, 1.0, 1.0, 1.0])
    diff = a.diff(b)
    assert set(diff) == {"npc_aggression", "quest_difficulty"}
    assert diff["npc_aggression"].relative_delta() == pytest.approx(0.3)
    assert a.apply(diff) == b


def test_axiom_order() -> None:
    assert [a.rank for a in Axiom] == [1, 2, 3, 4, 5, 6]
    assert Axiom.INTEGRITY.rank < Axiom.COST.rank


def test_schema_command_exports_every_core_type(tmp_path) -> None:
    out = tmp_path / "schemas"
    result = CliRunner().invoke(cli, ["schema", "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = {p.stem for p in out.glob("*.json")}
    required = {
        "GoalSpec",
        "ExecutionPolicy",
        "TaskTrace",
        "ReflectionRecord",
        "SecurityIncident",
        "AutonomousChangeSet",
        "WorldParams",
        "Alert",
        "Decision",
        "AuditRecord",
    }
    assert required <= names == set(CORE_TYPES)
    doc = json.loads((out / "AutonomousChangeSet.json").read_text())
    assert {"target", "diff", "risk_score", "canary_result", "promotion_state"} <= set(doc["properties"])


def test_schema_unknown_type_is_usage_error() -> None:
    result = CliRunner().invoke(cli, ["schema", "Nope"])
    assert result.exit_code == 2
    assert "unknown type" in result.output
