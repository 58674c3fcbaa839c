"""The budget guard's cost model (re-exported; the implementation is ``aegis_infra.cost``).

``python infrastructure/cost.py dev`` prints the estimate of a stack from its stack file,
read through ``pulumi.Config`` exactly as ``pulumi up`` reads it (``aegis_infra.stack_file``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aegis_infra.cost import *  # noqa: F403
from aegis_infra.cost import CostEstimate


def estimate_stack(stack: str) -> CostEstimate:
    import pulumi
    from aegis_infra.config import load_settings
    from aegis_infra.program import estimate_cost
    from aegis_infra.stack_file import cli_config

    pulumi.runtime.set_all_config(cli_config(stack), [])
    return estimate_cost(load_settings())


if __name__ == "__main__":
    stack = sys.argv[1] if len(sys.argv) > 1 else "dev"
    est = estimate_stack(stack)
    print(json.dumps(est.summary(), indent=2))
