# The decision: every axiom's findings, ordered. Deny beats simulate beats auto; among findings of
# the winning verdict, the highest axiom (lowest rank) names the axiom and rule of the decision.
#
#   opa eval -d policies/ -i policies/examples/deny-deletes-inventory.json 'data.aegis.decision.decide(input)'
# (an example file holds {"changeset", "context"}: exactly the input document).
package aegis.decision

import rego.v1

import data.aegis.availability
import data.aegis.bounds
import data.aegis.cost
import data.aegis.economy
import data.aegis.experience
import data.aegis.integrity
import data.aegis.lib
import data.aegis.operations
import data.aegis.risk
import data.aegis.security

ranks := data.aegis.config.axioms

all_findings(inp) := all_findings_of(inp, risk.assess(inp))

# Every finding of every axiom, as an array (a: the risk assessment, risk.assess, computed once per
# decision); concatenated like the rules of each package (lib.flatten).
all_findings_of(inp, a) := lib.flatten([
	integrity.findings(inp),
	security.findings(inp),
	operations.findings(inp),
	availability.findings(inp),
	economy.findings(inp),
	experience.findings(inp),
	bounds.findings(inp),
	cost.findings(inp),
	risk.findings_of(inp, a),
])

verdict_of(fs) := verdict_among({f.verdict | some f in fs})

# vs: the verdicts of the findings, as a set (collected once rather than scanned per verdict).
verdict_among(vs) := "deny" if {
	"deny" in vs
} else := "simulate" if {
	"simulate" in vs
} else := "auto"

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

headline(fs, verdict) := {"axiom": null, "rule": null} if {
	verdict == "auto"
} else := {"axiom": axiom, "rule": top_rule(fs, verdict, axiom)} if {
	axiom := top_axiom(fs, verdict)
}

decide(inp) := {
	"verdict": verdict,
	"axiom": head.axiom,
	"rule": head.rule,
	"risk_score": a.score,
	"risk": risk.summary_of(inp, a),
	"findings": fs,
} if {
	a := risk.assess(inp)
	fs := all_findings_of(inp, a)
	verdict := verdict_of(fs)
	head := headline(fs, verdict)
}

result := decide(input)
