# Shared helpers of the Aegis axioms: findings, relative deltas, bands.
# Standard Rego v1 only: the same files load into OPA (`opa eval -d policies/`).
package aegis.lib

import rego.v1

cfg := data.aegis.config

# A finding: which axiom, which rule, which verdict, why (message) and the numbers behind it.
finding(axiom, rule, verdict, message, numbers) := {
	"axiom": axiom,
	"rule": rule,
	"verdict": verdict,
	"message": message,
	"numbers": numbers,
}

# Largest / smallest element of a non-empty array. Written out rather than the max/min builtins:
# rego-cpp 1.5 orders numbers such as 1e-09 wrongly inside max/min/sort, while > and <= are exact.
max_of(xs) := m if {
	some m in xs
	every x in xs {
		x <= m
	}
}

min_of(xs) := m if {
	some m in xs
	every x in xs {
		x >= m
	}
}

# Relative change of one number: |after - before| / max(|before|, tiny).
rel1(before, after) := abs(after - before) / max_of([abs(before), 0.000000001])

same_shape(before, after) if {
	is_number(before)
	is_number(after)
}

same_shape(before, after) if {
	is_array(before)
	is_array(after)
	count(before) == count(after)
}

# Largest relative change over the elements of a parameter (scalar or per-zone/per-stage vector);
# a change whose before/after shapes differ is malformed and counts as a huge delta.
rel_delta(before, after) := rel1(before, after) if {
	is_number(before)
	is_number(after)
}

rel_delta(before, after) := d if {
	is_array(before)
	is_array(after)
	count(before) == count(after)
	count(before) > 0
	ds := [x |
		some i
		b := before[i]
		x := rel1(b, after[i])
	]
	d := max_of(ds)
}

rel_delta(before, after) := 0 if {
	is_array(before)
	is_array(after)
	count(before) == 0
	count(after) == 0
}

rel_delta(before, after) := cfg.risk.malformed_delta if {
	not same_shape(before, after)
}

as_list(x) := x if is_array(x)

as_list(x) := [x] if not is_array(x)

# The relative delta of every changed parameter, by name.
deltas(inp) := {name: d |
	some name
	change := inp.changeset.diff[name]
	d := rel_delta(change.before, change.after)
}

max_delta(inp) := m if {
	ds := [d | some name; d := deltas(inp)[name]]
	count(ds) > 0
	m := max_of(ds)
}

max_delta(inp) := 0 if count(inp.changeset.diff) == 0

# The axiom a parameter serves: economy parameters move the economy, the rest the player experience.
param_axiom(name) := "economy" if name in cfg.economy.params

param_axiom(name) := "experience" if not name in cfg.economy.params

is_structural(op) if op.kind != cfg.security.param_change_tool

round4(x) := round(x * 10000) / 10000

# Band findings of one axiom ("economy" or "experience"): a prediction outside its band denies.
band_findings(inp, axiom) := {f |
	some kpi
	band := cfg[axiom].bands[kpi]
	value := inp.context.predicted[kpi]
	not within(value, band)
	f := finding(
		axiom,
		sprintf("%s.%s_band", [axiom, kpi]),
		"deny",
		sprintf("predicted %s %v is outside its band [%v, %v]", [kpi, value, band.low, band.high]),
		{"kpi": kpi, "predicted": value, "low": band.low, "high": band.high},
	)
}

within(value, band) if {
	value >= band.low
	value <= band.high
}

# A change to a parameter of this axiom with no prediction for one of its KPIs cannot be judged
# blind: it goes to the simulation gate.
missing_prediction_findings(inp, axiom) := {f |
	some kpi
	cfg[axiom].bands[kpi]
	not inp.context.predicted[kpi]
	touched := sort([name | some name; inp.changeset.diff[name]; name in cfg[axiom].params])
	count(touched) > 0
	f := finding(
		axiom,
		sprintf("%s.prediction_missing", [axiom]),
		"simulate",
		sprintf("no prediction of %s for a change to %v: the simulation gate must measure it", [kpi, touched]),
		{"kpi": kpi, "params": touched},
	)
}
