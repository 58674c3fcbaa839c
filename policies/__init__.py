"""Policy as code: the Rego axioms (``*.rego``), their thresholds (``data.json``) and examples.

Data only, plus this thin loader: ``POLICY_DIR`` is where the files are, installed
with the package; ``aegis.policy`` reads it (unless ``$AEGIS_POLICIES`` names another
directory), and an OPA server can be pointed at the same directory.
"""

from pathlib import Path

POLICY_DIR = Path(__file__).resolve().parent
