# Strict bounds: a parameter change must land inside the autonomy band of its parameter
# (data.aegis.config.risk.autonomy_bands, always inside the world's hard bounds, aegis.domain
# PARAM_BOUNDS). A value outside it is denied, not sent to simulation: the band is the most Aegis may
# set on its own, and simulating a change it may not make wastes the gate and invites an override.
# A parameter with no band, or a change whose before/after shapes differ, cannot be judged: denied.
# The axiom is the one the parameter serves (economy or experience).
package aegis.bounds

import rego.v1

import data.aegis.lib

bands := data.aegis.config.risk.autonomy_bands

findings(inp) := lib.flatten([outside(inp.changeset.diff), unbanded(inp.changeset.diff), malformed(inp.changeset.diff)])

outside(diff) := {f |
	some name in object.keys(diff)
	band := bands[name]
	change := diff[name]
	not lib.inside_all(lib.as_list(change.after), band[0], band[1])
	f := lib.finding(
		lib.param_axiom(name), "bounds.outside_autonomy_band", "deny",
		sprintf("%s would become %v, outside the band [%v, %v] Aegis may set on its own", [name, change.after, band[0], band[1]]),
		{"param": name, "after": change.after, "low": band[0], "high": band[1]},
	)
}

unbanded(diff) := {f |
	some name in object.keys(diff)
	not bands[name]
	f := lib.finding(
		lib.param_axiom(name), "bounds.no_autonomy_band", "deny",
		sprintf("%s has no autonomy band in the policy data: its bounds are unknown", [name]),
		{"param": name},
	)
}

malformed(diff) := {f |
	some name in object.keys(diff)
	change := diff[name]
	not lib.same_shape(change.before, change.after)
	f := lib.finding(
		lib.param_axiom(name), "bounds.malformed_change", "deny",
		sprintf("%s changes shape (before %v, after %v): a change must keep the parameter's shape", [name, change.before, change.after]),
		{"param": name},
	)
}
