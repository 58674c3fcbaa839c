# Tests of the axioms: `aegis policy test` (or `opa test policies/`) runs every test_ rule.
# Each test calls the decision function on a literal input; inputs are the base below with
# one thing changed. object.union is applied level by level (rego-cpp's object.union is shallow,
# OPA's is deep: written this way both agree).
package aegis.axioms_test

import rego.v1

import data.aegis.decision
import data.aegis.lib
import data.aegis.risk

base_changeset := {
	"id": "cs-test", "actor": "aegis-proposer", "kind": "tuning", "target": "eu-1",
	"diff": {"npc_aggression": {"before": 1.0, "after": 1.05}}, "operations": [],
}

base_context := {
	"actor": {
		"actor": "aegis-proposer", "allowed_tools": ["set_params", "restart_shard", "remove_item", "migrate_save_schema"],
		"data_scope": ["eu-west"], "limits": {"max_changes_per_hour": 4, "max_cost_usd": 50},
	},
	"shard": {"shard_id": "eu-1", "region": "eu-west", "players_online": 100, "players_total": 1000},
	"canary_players_share": 0.05, "firing_alerts": [], "integrity_before": null, "integrity_after": null,
	"predicted": {"inflation": 0.01, "velocity": 1.2, "abandon_rate": 0.2, "deaths": 3},
	"budget": {"spent_usd": 100, "estimated_cost_usd": 1, "monthly_budget_usd": 1000},
	"changes_in_last_hour": 0,
}

judge(cs_patch, ctx_patch) := decision.decide({
	"changeset": object.union(base_changeset, cs_patch),
	"context": object.union(base_context, ctx_patch),
})

test_small_parameter_change_is_auto if {
	d := judge({}, {})
	d.verdict == "auto"
	d.axiom == null
	count(d.findings) == 0
}

test_deleting_active_inventory_is_denied_by_integrity if {
	d := judge({"operations": [{"kind": "remove_item", "deletes_active_inventory": 1}]}, {})
	d.verdict == "deny"
	d.axiom == "integrity"
	d.rule == "integrity.deletes_active_inventory"
}

test_invalidating_quests_is_denied_even_for_healing if {
	d := judge({"kind": "healing", "operations": [{"kind": "restart_shard", "invalidates_active_quests": 2}]}, {})
	d.verdict == "deny"
	d.axiom == "integrity"
}

# Schema versions relative to the configured current one (data.json, tied to aegis.domain.SAVE_SCHEMA_VERSION).
current_schema := data.aegis.config.integrity.current_save_schema

test_save_schema_downgrade_is_denied if {
	d := judge({"operations": [{"kind": "migrate_save_schema", "save_schema_to": current_schema - 1}]}, {})
	d.rule == "integrity.save_schema_downgrade"
}

test_migration_one_step_ahead_is_simulated if {
	d := judge({"diff": {}, "operations": [{"kind": "migrate_save_schema", "save_schema_to": current_schema + 1}]}, {})
	d.verdict == "simulate"
}

test_schema_jump_is_denied if {
	d := judge({"operations": [{"kind": "migrate_save_schema", "save_schema_to": current_schema + 2}]}, {})
	d.rule == "integrity.save_schema_jump"
}

test_integrity_outranks_security if {
	d := judge({"operations": [{"kind": "remove_item", "deletes_active_inventory": 1}]}, {"actor": object.union(base_context.actor, {"allowed_tools": []})})
	d.axiom == "integrity"
}

test_unlisted_tool_is_denied if {
	d := judge({"operations": [{"kind": "failover"}]}, {})
	d.axiom == "security"
	d.rule == "security.tool_not_allowed"
}

test_rate_limit if {
	judge({}, {"changes_in_last_hour": 4}).rule == "security.rate_limit"
}

test_region_scope_allows if {
	judge({}, {"actor": object.union(base_context.actor, {"data_scope": ["eu-west"]})}).verdict == "auto"
	judge({}, {"actor": object.union(base_context.actor, {"data_scope": ["us-east"]})}).rule == "security.out_of_scope"
}

test_blast_radius if {
	judge({}, {"canary_players_share": 0.2}).rule == "availability.blast_radius"
}

test_slo_burn_blocks_tuning_not_healing if {
	alert := {"id": "a1", "name": "SLOBurnRateFast", "status": "firing", "target": "eu-1"}
	judge({}, {"firing_alerts": [alert]}).rule == "availability.slo_burn_firing"
	judge({"kind": "healing", "diff": {}, "operations": [{"kind": "restart_shard"}]}, {"firing_alerts": [alert]}).verdict == "auto"
}

test_economy_band if {
	judge({}, {"predicted": object.union(base_context.predicted, {"inflation": 0.2})}).rule == "economy.inflation_band"
}

test_experience_band if {
	judge({}, {"predicted": object.union(base_context.predicted, {"deaths": 9})}).rule == "experience.deaths_band"
}

test_over_budget if {
	judge({}, {"budget": object.union(base_context.budget, {"spent_usd": 999, "estimated_cost_usd": 5})}).rule == "cost.over_budget"
}

test_large_delta_needs_simulation if {
	d := judge({"diff": {"quest_reward": {"before": 1.0, "after": 1.5}}}, {})
	d.verdict == "simulate"
}

test_relative_delta_of_vectors if {
	lib.rel_delta([1.0, 2.0], [1.0, 3.0]) == 0.5
	lib.rel_delta([1.0], [1.0, 2.0]) == data.aegis.config.risk.malformed_delta
	lib.rel_delta(0, 0.5) > 1000
}

test_risk_score_is_bounded if {
	s := risk.score({
		"changeset": object.union(base_changeset, {"operations": [{"kind": "remove_item"}], "diff": {"drop_rate": {"before": 1, "after": 5}}}),
		"context": object.union(base_context, {"canary_players_share": 1}),
	})
	s <= 1
	s >= 0.9
}

# Strict policies: operations only with the arguments the policy knows; parameters inside their
# autonomy bands; targets among the known shards.
healing_restart(args) := {"kind": "healing", "diff": {}, "operations": [{"kind": "restart_shard", "args": args}]}

test_known_operation_args_pass if {
	d := judge(healing_restart({"reason": "ShardDown"}), {})
	d.verdict == "auto"
}

test_unknown_operation_args_are_denied_not_auto if {
	d := judge(healing_restart({"reason": "ShardDown", "wipe_inventory": true}), {})
	d.verdict == "deny"
	d.rule == "operations.unknown_args"
	d.findings[0].numbers.unknown_args == ["wipe_inventory"]
}

test_unknown_operation_kind_is_denied if {
	d := judge({"kind": "healing", "diff": {}, "operations": [{"kind": "drop_saves", "args": {}}]}, {})
	d.verdict == "deny"
	"operations.unknown_kind" in {f.rule | some f in d.findings}
}

test_nested_operation_arg_is_denied if {
	d := judge(healing_restart({"reason": {"wipe_inventory": true}}), {})
	d.verdict == "deny"
	d.rule == "operations.arg_not_plain"
}

test_outside_autonomy_band_is_denied_not_simulated if {
	d := judge({"diff": {"npc_aggression": {"before": 1.9, "after": 2.1}}}, {})
	d.verdict == "deny"
	d.rule == "bounds.outside_autonomy_band"
}

test_malformed_change_is_denied if {
	d := judge({"diff": {"spawn_rate": {"before": [1, 1, 1], "after": 1.05}}}, {})
	d.verdict == "deny"
	d.rule == "bounds.malformed_change"
}

test_unknown_target_is_denied if {
	d := judge({}, {"known_shards": ["eu-west-1", "eu-west-2"]})
	d.verdict == "deny"
	d.rule == "security.unknown_target"
}

test_known_target_passes if {
	d := judge({"target": "eu-west-1"}, {"known_shards": ["eu-west-1", "eu-west-2"], "shard": {"shard_id": "eu-west-1", "region": "eu-west", "players_online": 100, "players_total": 1000}})
	d.verdict == "auto"
}
