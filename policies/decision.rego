# The decision: every axiom's findings, ordered. Deny beats simulate beats auto; among findings of
# the winning verdict, the highest axiom (lowest rank) names the axiom and rule of the decision.
#
#   opa eval -d policies/ -i policies/examples/deny-deletes-inventory.json 'data.aegis.decision.decide(input)'
# (an example file holds {"changeset", "context"}: exactly the input document).
package aegis.decision

import rego.v1

import data.aegis.availability
import data.aegis.cost
import data.aegis.economy
import data.aegis.experience
import data.aegis.integrity
import data.aegis.lib
import data.aegis.risk
import data.aegis.security

ranks := data.aegis.config.axioms

all_findings(inp) := (((((integrity.findings(inp) | security.findings(inp)) | availability.findings(inp)) | economy.findings(inp)) | experience.findings(inp)) | cost.findings(inp)) | risk.findings(inp)

has_verdict(fs, v) if {
	some f in fs
	f.verdict == v
}

verdict_of(fs) := "deny" if has_verdict(fs, "deny")

verdict_of(fs) := "simulate" if {
	not has_verdict(fs, "deny")
	has_verdict(fs, "simulate")
}

verdict_of(fs) := "auto" if {
	not has_verdict(fs, "deny")
	not has_verdict(fs, "simulate")
}

# The axiom and rule that decide: the highest-ranked finding of the winning verdict
# (rule names break ties alphabetically, so the answer never depends on evaluation order).
top_axiom(fs, verdict) := name if {
	top := lib.min_of({r | some f in fs; f.verdict == verdict; r := ranks[f.axiom]})
	names := [n | some n; ranks[n] == top]
	name := names[0]
}

top_rule(fs, verdict, axiom) := name if {
	rules := sort([x | some g in fs; g.verdict == verdict; g.axiom == axiom; x := g.rule])
	name := rules[0]
}

headline(fs, verdict) := {"axiom": null, "rule": null} if verdict == "auto"

headline(fs, verdict) := {"axiom": axiom, "rule": top_rule(fs, verdict, axiom)} if {
	verdict != "auto"
	axiom := top_axiom(fs, verdict)
}

decide(inp) := {
	"verdict": verdict,
	"axiom": head.axiom,
	"rule": head.rule,
	"risk_score": risk.score(inp),
	"risk": risk.summary(inp),
	"findings": [f | some f in fs],
} if {
	fs := all_findings(inp)
	verdict := verdict_of(fs)
	head := headline(fs, verdict)
}

result := decide(input)
