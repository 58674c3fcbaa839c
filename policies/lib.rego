# Shared helpers of the Aegis axioms: findings, relative deltas, bands.
# Standard Rego v1 only: the same files load into OPA (`opa eval -d policies/`).
#
# Performance: rego-cpp caches rules but never function calls, and every decision is a chain of
# functions of `inp` (so that tests can call it on literal inputs; see docs/policies.md). Each
# intermediate (deltas, score, ...) is therefore computed once by the caller and passed down as an
# argument, never recomputed inside a comprehension.
package aegis.lib

import rego.v1

cfg := data.aegis.config

# The findings of several rules as one array. Rules collect their findings in sets (no duplicates
# within a rule); the rules of a package are concatenated, not unioned: a set union re-keys every
# finding object of both sides in rego-cpp, and two rules never give the same finding (each names
# its own rule).
flatten(parts) := [f | some part in parts; some f in part]

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

# The smaller of two numbers (min_of of a pair, without building and scanning an array).
smaller(a, b) := a if {
	a <= b
} else := b

# Relative change of one number: |after - before| / max(|before|, tiny).
# Note: rego-cpp 1.5's abs() rounds to six significant digits (abs(0.1000001) is 0.1); the deltas
# have always been measured that way (it also hides binary noise: 1.0 -> 1.1 is exactly 0.1).
rel1(before, after) := abs(after - before) / abs(before) if {
	abs(before) >= 0.000000001
} else := abs(after - before) / 0.000000001

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
# (The cases exclude each other; `else` stops at the first that holds.)
rel_delta(before, after) := rel1(before, after) if {
	is_number(before)
	is_number(after)
} else := d if {
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
} else := 0 if {
	is_array(before)
	is_array(after)
	count(before) == 0
	count(after) == 0
} else := cfg.risk.malformed_delta if {
	not same_shape(before, after)
}

as_list(x) := x if is_array(x)

# Every value of `values` lies in [low, high].
inside_all(values, low, high) if {
	every v in values {
		v >= low
		v <= high
	}
}

as_list(x) := [x] if not is_array(x)

# The relative delta of every changed parameter, by name.
deltas(inp) := {name: d |
	some name
	change := inp.changeset.diff[name]
	d := rel_delta(change.before, change.after)
}

# The largest of the deltas `ds` (as computed by `deltas`) of the changeset diff `diff`; 0 for no change.
max_delta_of(ds, diff) := 0 if {
	count(diff) == 0
} else := m if {
	vs := [d | some name; d := ds[name]]
	count(vs) > 0
	m := max_of(vs)
}

max_delta(inp) := max_delta_of(deltas(inp), inp.changeset.diff)

# The axiom a parameter serves: economy parameters move the economy, the rest the player experience.
param_axiom(name) := "economy" if {
	name in cfg.economy.params
} else := "experience"

round4(x) := round(x * 10000) / 10000

# Rule names are built with concat: rego-cpp 1.5's sprintf("%s") keeps the quotes of a string that
# was a literal in the caller (`"economy"`).

# Band findings of one axiom: a prediction outside its band denies. `acfg` is the axiom's section of
# the config (data.aegis.config.economy or .experience): passed in, because rego-cpp plans
# `cfg[axiom]` with a variable key as a scan over every section.
band_findings(inp, axiom, acfg) := {f |
	predicted := object.get(inp.context, "predicted", {})
	some kpi in object.keys(acfg.bands)
	value := predicted[kpi]
	band := acfg.bands[kpi]
	not within(value, band)
	f := finding(
		axiom,
		concat("", [axiom, ".", kpi, "_band"]),
		"deny",
		sprintf("predicted %s %v is outside its band [%v, %v]", [kpi, value, band.low, band.high]),
		{"kpi": kpi, "predicted": value, "low": band.low, "high": band.high},
	)
}

within(value, band) if {
	value >= band.low
	value <= band.high
}

# The changed parameters among `params`, sorted.
touched_params(diff, params) := sort([name | some name in object.keys(diff); name in params])

# A change to a parameter of this axiom with no prediction for one of its KPIs cannot be judged
# blind: it goes to the simulation gate. `acfg` as for band_findings.
missing_prediction_findings(inp, axiom, acfg) := missing_predictions(inp, axiom, acfg, touched_params(object.get(inp.changeset, "diff", {}), acfg.params))

# touched: the changed parameters of this axiom (touched_params), listed once rather than per KPI.
missing_predictions(inp, axiom, acfg, touched) := set() if {
	count(touched) == 0
} else := {f |
	some kpi in object.keys(acfg.bands)
	not inp.context.predicted[kpi]
	f := finding(
		axiom,
		concat("", [axiom, ".prediction_missing"]),
		"simulate",
		sprintf("no prediction of %s for a change to %v: the simulation gate must measure it", [kpi, touched]),
		{"kpi": kpi, "params": touched},
	)
}
