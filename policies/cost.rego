# Axiom 6, cost: a change never spends more than what is left of the monthly budget.
package aegis.cost

import rego.v1

import data.aegis.lib

findings(inp) := {f |
	budget := inp.context.budget
	remaining := budget.monthly_budget_usd - budget.spent_usd
	budget.estimated_cost_usd > 0
	budget.estimated_cost_usd > remaining
	f := lib.finding(
		"cost", "cost.over_budget", "deny",
		sprintf("the change is estimated at %v USD but only %v USD of the %v USD monthly budget remain", [budget.estimated_cost_usd, remaining, budget.monthly_budget_usd]),
		{"estimated_cost_usd": budget.estimated_cost_usd, "remaining_usd": remaining, "spent_usd": budget.spent_usd, "monthly_budget_usd": budget.monthly_budget_usd},
	)
}
