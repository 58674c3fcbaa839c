# Axiom 1, player data integrity: never delete or invalidate active inventory or active quests;
# keep save compatibility across rebuilds and migrations. Nothing overrides it, healing included.
package aegis.integrity

import rego.v1

import data.aegis.lib

cfg := data.aegis.config.integrity

findings(inp) := lib.flatten([deletes_inventory(inp), invalidates_quests(inp), save_schema(inp), observed_loss(inp)])

deletes_inventory(inp) := {f |
	some i
	op := inp.changeset.operations[i]
	op.deletes_active_inventory > cfg.max_deleted_active_inventory
	f := lib.finding(
		"integrity", "integrity.deletes_active_inventory", "deny",
		sprintf("operation %d (%s) deletes %v active inventory item(s); at most %v may be deleted", [i, op.kind, op.deletes_active_inventory, cfg.max_deleted_active_inventory]),
		{"operation": i, "kind": op.kind, "deletes_active_inventory": op.deletes_active_inventory, "limit": cfg.max_deleted_active_inventory},
	)
}

invalidates_quests(inp) := {f |
	some i
	op := inp.changeset.operations[i]
	op.invalidates_active_quests > cfg.max_invalidated_active_quests
	f := lib.finding(
		"integrity", "integrity.invalidates_active_quests", "deny",
		sprintf("operation %d (%s) invalidates %v active quest(s); at most %v may be invalidated", [i, op.kind, op.invalidates_active_quests, cfg.max_invalidated_active_quests]),
		{"operation": i, "kind": op.kind, "invalidates_active_quests": op.invalidates_active_quests, "limit": cfg.max_invalidated_active_quests},
	)
}

# The save schema in force: the one measured on the shard when known, else the configured one.
current_schema(inp) := v if {
	before := object.get(inp.context, "integrity_before", null)
	before != null
	v := before.save_schema_version
} else := cfg.current_save_schema if {
	object.get(inp.context, "integrity_before", null) == null
}

# The schema checks take the operations that set a schema and the current schema, each computed
# once per decision (most changesets set none, and then nothing else is evaluated).
save_schema(inp) := lib.flatten([schema_checks(inp, schema_ops(inp)), untargeted_migrations(inp)])

schema_checks(inp, sops) := [] if {
	count(sops) == 0
} else := lib.flatten([downgrades(sops, current), jumps(sops, current), unmigrated(sops, current)]) if {
	current := current_schema(inp)
} else := []

schema_ops(inp) := [[i, op] |
	some i
	op := inp.changeset.operations[i]
	object.get(op, "save_schema_to", null) != null
]

downgrades(sops, current) := {f |
	some pair in sops
	op := pair[1]
	op.save_schema_to < current
	f := lib.finding(
		"integrity", "integrity.save_schema_downgrade", "deny",
		sprintf("operation %d (%s) moves saves to schema %v, below the current %v: older schemas cannot read newer saves", [pair[0], op.kind, op.save_schema_to, current]),
		{"operation": pair[0], "save_schema_to": op.save_schema_to, "current": current},
	)
}

jumps(sops, current) := {f |
	some pair in sops
	op := pair[1]
	op.save_schema_to > current + cfg.max_schema_step
	f := lib.finding(
		"integrity", "integrity.save_schema_jump", "deny",
		sprintf("operation %d (%s) moves saves to schema %v; from %v at most %v step(s) ahead is compatible", [pair[0], op.kind, op.save_schema_to, current, cfg.max_schema_step]),
		{"operation": pair[0], "save_schema_to": op.save_schema_to, "current": current, "max_step": cfg.max_schema_step},
	)
}

unmigrated(sops, current) := {f |
	some pair in sops
	op := pair[1]
	op.save_schema_to != current
	op.kind != cfg.migration_operation
	f := lib.finding(
		"integrity", "integrity.schema_change_without_migration", "deny",
		sprintf("operation %d (%s) changes the save schema %v -> %v without a %s operation", [pair[0], op.kind, current, op.save_schema_to, cfg.migration_operation]),
		{"operation": pair[0], "save_schema_to": op.save_schema_to, "current": current},
	)
}

untargeted_migrations(inp) := {f |
	some i
	op := inp.changeset.operations[i]
	op.kind == cfg.migration_operation
	object.get(op, "save_schema_to", null) == null
	f := lib.finding(
		"integrity", "integrity.migration_target_missing", "deny",
		sprintf("operation %d (%s) does not declare the save schema it migrates to", [i, op.kind]),
		{"operation": i},
	)
}

# Integrity of the same snapshot before and after the change (simulation gate): any drop is loss.
observed_fields := ["players", "active_inventory_items", "active_quests", "save_schema_version"]

observed_loss(inp) := observed_loss_of(object.get(inp.context, "integrity_before", null), object.get(inp.context, "integrity_after", null))

observed_loss_of(before, after) := set() if {
	before == null
} else := set() if {
	after == null
} else := {f |
	some field in observed_fields
	after[field] < before[field]
	f := lib.finding(
		"integrity", sprintf("integrity.%s_lost", [field]), "deny",
		sprintf("after the change the snapshot has %v %s, before it had %v", [after[field], field, before[field]]),
		{"field": field, "before": before[field], "after": after[field]},
	)
}
