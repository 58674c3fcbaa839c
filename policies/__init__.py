"""Policy as code: the Rego axioms (``*.rego``), their thresholds (``data.json``) and examples.

Data only, plus this thin loader: ``POLICY_DIR`` is where the files are, for
tools that want them without importing the engine (``aegis.policy`` finds the
same directory on its own, or ``$AEGIS_POLICIES``).
"""

from pathlib import Path

POLICY_DIR = Path(__file__).resolve().parent
DATA_FILE = POLICY_DIR / "data.json"
EXAMPLES_DIR = POLICY_DIR / "examples"


def policy_dir() -> Path:
    return POLICY_DIR
