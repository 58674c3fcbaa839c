# Axiom 4, economy health: predicted inflation and currency velocity stay inside their bands.
package aegis.economy

import rego.v1

import data.aegis.lib

findings(inp) := lib.band_findings(inp, "economy") | lib.missing_prediction_findings(inp, "economy")
