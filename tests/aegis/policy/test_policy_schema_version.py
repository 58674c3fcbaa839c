"""The save schema version is one fact: the domain constant, the policy data and the world agree."""

from __future__ import annotations

import json

from aegis.domain import SAVE_SCHEMA_VERSION, Integrity
from aegis.policy.engine import PolicyEngine, default_policies_dir


def test_policy_data_current_save_schema_is_the_domain_constant() -> None:
    data = json.loads((default_policies_dir() / "data.json").read_text())
    assert data["aegis"]["config"]["integrity"]["current_save_schema"] == SAVE_SCHEMA_VERSION
    # and the engine evaluates exactly that file
    assert PolicyEngine().data["aegis"]["config"]["integrity"]["current_save_schema"] == SAVE_SCHEMA_VERSION


def test_world_saves_are_written_in_the_domain_schema() -> None:
    from aegis.world.sim import ShardSim

    integrity = ShardSim("schema-check", "eu-west", players=8).integrity()
    assert isinstance(integrity, Integrity)
    assert integrity.save_schema_version == SAVE_SCHEMA_VERSION


def test_downgrade_example_is_below_the_current_schema() -> None:
    """The documented downgrade example stays a downgrade if the schema version moves."""
    doc = json.loads((default_policies_dir() / "examples" / "deny-save-schema-downgrade.json").read_text())
    targets = [op["save_schema_to"] for op in doc["changeset"]["operations"] if op.get("save_schema_to")]
    assert targets and all(t < SAVE_SCHEMA_VERSION for t in targets)
