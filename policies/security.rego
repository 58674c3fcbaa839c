# Axiom 2, security: least privilege. The actor's ExecutionPolicy must allow every tool the
# changeset uses, on this target, within its rate and cost limits.
package aegis.security

import rego.v1

import data.aegis.lib

cfg := data.aegis.config.security

findings(inp) := lib.flatten([actor_mismatch(inp), tools(inp), scope(inp), context_mismatch(inp), unknown_target(inp), rate(inp), cost_cap(inp)])

actor_mismatch(inp) := {f |
	inp.changeset.actor != inp.context.actor.actor
	f := lib.finding(
		"security", "security.actor_mismatch", "deny",
		sprintf("the changeset is proposed by %s but the execution policy given is %s's", [inp.changeset.actor, inp.context.actor.actor]),
		{"changeset_actor": inp.changeset.actor, "policy_actor": inp.context.actor.actor},
	)
}

used_tools(inp) := {op.kind | some op in inp.changeset.operations} | {cfg.param_change_tool | count(inp.changeset.diff) > 0}

tools(inp) := {f |
	some tool in used_tools(inp)
	not tool in inp.context.actor.allowed_tools
	f := lib.finding(
		"security", "security.tool_not_allowed", "deny",
		sprintf("actor %s may not use %s (allowed: %v)", [inp.context.actor.actor, tool, inp.context.actor.allowed_tools]),
		{"tool": tool, "allowed_tools": inp.context.actor.allowed_tools},
	)
}

in_scope(inp) if cfg.wildcard_scope in inp.context.actor.data_scope

in_scope(inp) if inp.changeset.target in inp.context.actor.data_scope

in_scope(inp) if inp.context.shard.region in inp.context.actor.data_scope

scope(inp) := {f |
	not in_scope(inp)
	f := lib.finding(
		"security", "security.out_of_scope", "deny",
		sprintf("target %s (region %s) is outside actor %s's data scope %v", [inp.changeset.target, inp.context.shard.region, inp.context.actor.actor, inp.context.actor.data_scope]),
		{"target": inp.changeset.target, "region": inp.context.shard.region, "data_scope": inp.context.actor.data_scope},
	)
}

# The facts about the shard must be about the target: judging one shard with another's numbers is refused.
context_mismatch(inp) := {f |
	shard_id := object.get(inp.context.shard, "shard_id", null)
	shard_id != null
	shard_id != inp.changeset.target
	f := lib.finding(
		"security", "security.context_mismatch", "deny",
		sprintf("the context describes shard %s but the changeset targets %s", [shard_id, inp.changeset.target]),
		{"context_shard": shard_id, "target": inp.changeset.target},
	)
}

# The target must be a shard the backend knows (context.known_shards, filled by whoever gathers the
# facts: the lifecycle asks the backend). Without that list the target is not checked here.
unknown_target(inp) := {f |
	known := object.get(inp.context, "known_shards", null)
	is_array(known)
	not inp.changeset.target in known
	f := lib.finding(
		"security", "security.unknown_target", "deny",
		sprintf("target %s is not a known shard id (known: %v)", [inp.changeset.target, known]),
		{"target": inp.changeset.target, "known_shards": known},
	)
}

# The actor's rate and cost limits.
rate(inp) := {f |
	limit := inp.context.actor.limits.max_changes_per_hour
	inp.context.changes_in_last_hour >= limit
	f := lib.finding(
		"security", "security.rate_limit", "deny",
		sprintf("actor %s already made %v change(s) in the last hour; its limit is %v per hour", [inp.context.actor.actor, inp.context.changes_in_last_hour, limit]),
		{"changes_in_last_hour": inp.context.changes_in_last_hour, "max_changes_per_hour": limit},
	)
}

cost_cap(inp) := {f |
	cap := inp.context.actor.limits.max_cost_usd
	inp.context.budget.estimated_cost_usd > cap
	f := lib.finding(
		"security", "security.cost_limit", "deny",
		sprintf("the change is estimated at %v USD; actor %s may spend at most %v USD per change", [inp.context.budget.estimated_cost_usd, inp.context.actor.actor, cap]),
		{"estimated_cost_usd": inp.context.budget.estimated_cost_usd, "max_cost_usd": cap},
	)
}
