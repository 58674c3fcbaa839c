# Axiom 4, economy health: predicted inflation and currency velocity stay inside their bands.
package aegis.economy

import rego.v1

import data.aegis.lib

# The config is read through a rule: rego-cpp caches rules, while every `data.aegis.config...` path
# in a function body walks the data tree again.
cfg := data.aegis.config.economy

findings(inp) := lib.flatten([lib.band_findings(inp, "economy", cfg), lib.missing_prediction_findings(inp, "economy", cfg)])
