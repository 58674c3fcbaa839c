# Axiom 5, player experience: predicted quest abandonment and deaths stay inside their bands.
package aegis.experience

import rego.v1

import data.aegis.lib

# The config is read through a rule: rego-cpp caches rules, while every `data.aegis.config...` path
# in a function body walks the data tree again.
cfg := data.aegis.config.experience

findings(inp) := lib.flatten([lib.band_findings(inp, "experience", cfg), lib.missing_prediction_findings(inp, "experience", cfg)])
