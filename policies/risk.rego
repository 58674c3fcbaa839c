# Risk scoring and the approval mode. A change that violates no axiom runs fully autonomously
# ("auto") only when it is a low-risk parameter change within bounded deltas; a structural or
# high-risk change must pass the simulation gate first ("simulate").
#
# `assess(inp)` computes the deltas, components and score of a changeset once; the decision passes
# that assessment to `summary_of` and `findings_of` (rego-cpp does not cache function calls, and
# recomputing the score per use was most of the cost of a decision). `score`, `summary`,
# `components` and `findings` are the same values for callers holding only the input.
package aegis.risk

import rego.v1

import data.aegis.lib

cfg := data.aegis.config.risk

# Read through rules (cached by rego-cpp) rather than `data.aegis.config...` paths in function bodies.
max_canary_players_share := data.aegis.config.availability.max_canary_players_share

param_change_tool := data.aegis.config.security.param_change_tool

structural_risk(inp) := structural_risk_of(inp.changeset.operations)

structural_risk_of(ops) := 0 if {
	count(ops) == 0
} else := lib.max_of([r | some op in ops; r := object.get(cfg.operation_risk, op.kind, 1)])

blast_share(inp) := lib.smaller(1, inp.context.canary_players_share / max_canary_players_share)

# Everything the score and the risk findings need, computed once per changeset.
assess(inp) := {
	"deltas": ds,
	"max_delta": md,
	"structural_risk": sr,
	"components": parts,
	"score": score_of(parts),
} if {
	ds := lib.deltas(inp)
	md := lib.max_delta_of(ds, inp.changeset.diff)
	sr := structural_risk_of(inp.changeset.operations)
	parts := components_of(inp, md, sr)
}

# The parts of the score, each in 0..1 (md: the largest relative delta; sr: the structural risk).
components_of(inp, md, sr) := {
	"delta": lib.smaller(1, md / cfg.delta_saturation),
	"breadth": lib.smaller(1, count(inp.changeset.diff) / cfg.breadth_saturation),
	"structural": sr,
	"blast_radius": blast_share(inp),
}

components(inp) := assess(inp).components

# The weighted sum of the parts (weights sum to 1), capped at 1 and rounded.
score_of(parts) := lib.round4(lib.smaller(1, s)) if {
	weights := cfg.weights
	weighted := [w |
		some k in object.keys(weights)
		w := weights[k] * parts[k]
	]
	s := sum(weighted)
}

score(inp) := assess(inp).score

summary_of(inp, a) := {
	"score": a.score,
	"max_relative_delta": lib.round4(a.max_delta),
	"params_changed": count(inp.changeset.diff),
	"structural_risk": a.structural_risk,
	"canary_players_share": inp.context.canary_players_share,
	"auto_max_risk": cfg.auto_max_risk,
}

summary(inp) := summary_of(inp, assess(inp))

findings_of(inp, a) := lib.flatten([structural(inp), large_deltas(a.deltas), high_score(a)])

findings(inp) := findings_of(inp, assess(inp))

healing_auto(inp, op) if {
	inp.changeset.kind == "healing"
	op.kind in cfg.healing_auto_operations
}

structural(inp) := {f |
	some i
	op := inp.changeset.operations[i]
	op.kind != param_change_tool
	not healing_auto(inp, op)
	r := object.get(cfg.operation_risk, op.kind, 1)
	f := lib.finding(
		object.get(cfg.operation_axiom, op.kind, "integrity"), "risk.structural_operation", "simulate",
		sprintf("operation %d (%s) is structural (risk %v): the simulation gate must pass first", [i, op.kind, r]),
		{"operation": i, "kind": op.kind, "operation_risk": r},
	)
}

# ds: the relative delta of every changed parameter, by name (lib.deltas).
large_deltas(ds) := {f |
	some name
	d := ds[name]
	bound := object.get(cfg.max_auto_delta, name, 0)
	d > bound
	rounded := lib.round4(d)
	f := lib.finding(
		lib.param_axiom(name), "risk.delta_above_auto_bound", "simulate",
		sprintf("%s changes by %v (relative); at most %v may change without simulation", [name, rounded, bound]),
		{"param": name, "relative_delta": rounded, "bound": bound},
	)
}

# (A value outside its autonomy band is denied by aegis.bounds, not sent to simulation here.)

# a: the assessment of the changeset (assess).
high_score(a) := {f |
	s := a.score
	s > cfg.auto_max_risk
	f := lib.finding(
		cfg.score_axiom, "risk.score_above_auto_threshold", "simulate",
		sprintf("risk score %v is above %v, the most a change may carry without simulation", [s, cfg.auto_max_risk]),
		{"risk_score": s, "auto_max_risk": cfg.auto_max_risk, "components": a.components},
	)
}
