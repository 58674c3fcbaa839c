# Axiom 3, availability: keep the blast radius of a canary small, and leave a target alone while
# its SLO burns (only healing changes may touch it then).
package aegis.availability

import rego.v1

import data.aegis.lib

cfg := data.aegis.config.availability

findings(inp) := lib.flatten([blast_radius(inp), slo_burn(inp)])

blast_radius(inp) := {f |
	share := inp.context.canary_players_share
	share > cfg.max_canary_players_share
	f := lib.finding(
		"availability", "availability.blast_radius", "deny",
		sprintf("the change would touch %v of all players; the canary blast radius is at most %v", [share, cfg.max_canary_players_share]),
		{"canary_players_share": share, "max_canary_players_share": cfg.max_canary_players_share},
	)
}

slo_burn(inp) := {f |
	not inp.changeset.kind in cfg.exempt_kinds
	some alert in inp.context.firing_alerts
	alert.status == "firing"
	alert.target == inp.changeset.target
	alert.name in cfg.slo_alert_names
	f := lib.finding(
		"availability", "availability.slo_burn_firing", "deny",
		sprintf("alert %s (%s) is firing on %s: only %v changes may touch it until it resolves", [alert.name, alert.id, alert.target, cfg.exempt_kinds]),
		{"alert": alert.name, "alert_id": alert.id, "value": object.get(alert, "value", null), "threshold": object.get(alert, "threshold", null)},
	)
}
