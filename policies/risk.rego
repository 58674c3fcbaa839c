# Risk scoring and the approval mode. A change that violates no axiom runs fully autonomously
# ("auto") only when it is a low-risk parameter change within bounded deltas; a structural or
# high-risk change must pass the simulation gate first ("simulate").
package aegis.risk

import rego.v1

import data.aegis.lib

cfg := data.aegis.config.risk

op_risk(op) := object.get(cfg.operation_risk, op.kind, 1)

structural_risk(inp) := lib.max_of([r | some op in inp.changeset.operations; r := op_risk(op)]) if count(inp.changeset.operations) > 0

structural_risk(inp) := 0 if count(inp.changeset.operations) == 0

blast_share(inp) := lib.min_of([1, inp.context.canary_players_share / data.aegis.config.availability.max_canary_players_share])

# The parts of the score, each in 0..1, and their weighted sum (weights sum to 1).
components(inp) := {
	"delta": lib.min_of([1, lib.max_delta(inp) / cfg.delta_saturation]),
	"breadth": lib.min_of([1, count(inp.changeset.diff) / cfg.breadth_saturation]),
	"structural": structural_risk(inp),
	"blast_radius": blast_share(inp),
}

score(inp) := lib.round4(lib.min_of([1, s])) if {
	parts := components(inp)
	weighted := [w |
		some k
		weight := cfg.weights[k]
		w := weight * parts[k]
	]
	s := sum(weighted)
}

summary(inp) := {
	"score": score(inp),
	"max_relative_delta": lib.round4(lib.max_delta(inp)),
	"params_changed": count(inp.changeset.diff),
	"structural_risk": structural_risk(inp),
	"canary_players_share": inp.context.canary_players_share,
	"auto_max_risk": cfg.auto_max_risk,
}

findings(inp) := ((structural(inp) | large_deltas(inp)) | outside_bands(inp)) | high_score(inp)

healing_auto(inp, op) if {
	inp.changeset.kind == "healing"
	op.kind in cfg.healing_auto_operations
}

structural(inp) := {f |
	some i
	op := inp.changeset.operations[i]
	lib.is_structural(op)
	not healing_auto(inp, op)
	f := lib.finding(
		object.get(cfg.operation_axiom, op.kind, "integrity"), "risk.structural_operation", "simulate",
		sprintf("operation %d (%s) is structural (risk %v): the simulation gate must pass first", [i, op.kind, op_risk(op)]),
		{"operation": i, "kind": op.kind, "operation_risk": op_risk(op)},
	)
}

large_deltas(inp) := {f |
	some name
	d := lib.deltas(inp)[name]
	bound := object.get(cfg.max_auto_delta, name, 0)
	d > bound
	f := lib.finding(
		lib.param_axiom(name), "risk.delta_above_auto_bound", "simulate",
		sprintf("%s changes by %v (relative); at most %v may change without simulation", [name, lib.round4(d), bound]),
		{"param": name, "relative_delta": lib.round4(d), "bound": bound},
	)
}

outside_bands(inp) := {f |
	some name
	change := inp.changeset.diff[name]
	band := cfg.autonomy_bands[name]
	values := [v | some v in lib.as_list(change.after); not inside(v, band)]
	count(values) > 0
	f := lib.finding(
		lib.param_axiom(name), "risk.outside_autonomy_band", "simulate",
		sprintf("%s would become %v, outside the band [%v, %v] Aegis may set on its own", [name, change.after, band[0], band[1]]),
		{"param": name, "after": change.after, "low": band[0], "high": band[1]},
	)
}

inside(v, band) if {
	v >= band[0]
	v <= band[1]
}

high_score(inp) := {f |
	s := score(inp)
	s > cfg.auto_max_risk
	f := lib.finding(
		cfg.score_axiom, "risk.score_above_auto_threshold", "simulate",
		sprintf("risk score %v is above %v, the most a change may carry without simulation", [s, cfg.auto_max_risk]),
		{"risk_score": s, "auto_max_risk": cfg.auto_max_risk, "components": components(inp)},
	)
}
