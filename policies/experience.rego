# Axiom 5, player experience: predicted quest abandonment and deaths stay inside their bands.
package aegis.experience

import rego.v1

import data.aegis.lib

findings(inp) := lib.band_findings(inp, "experience") | lib.missing_prediction_findings(inp, "experience")
