"""The cost model the budget guard prices a stack with: the program's own (``aegis_infra.cost``).

One table for the program (which exports the estimate) and the pack (which
denies a stack over budget), so they cannot disagree. The pack runs from this
repository (``pulumi preview --policy-pack policies/infrastructure``), so the
model is loaded from ``infrastructure/`` beside it; publishing the pack to
Pulumi Cloud would need ``aegis_infra/cost.py`` vendored in (docs/infrastructure.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

INFRA_DIR = Path(__file__).resolve().parents[3] / "infrastructure"

try:
    from aegis_infra.cost import (  # type: ignore[import-not-found]
        CostEstimate,
        LineItem,
        UnknownPriceError,
        estimate,
        over_budget_message,
    )
except ModuleNotFoundError:
    if not (INFRA_DIR / "aegis_infra" / "cost.py").exists():
        raise ModuleNotFoundError(
            f"the budget guard needs the cost model at {INFRA_DIR}/aegis_infra/cost.py"
        ) from None
    sys.path.insert(0, str(INFRA_DIR))
    from aegis_infra.cost import (  # type: ignore[import-not-found]
        CostEstimate,
        LineItem,
        UnknownPriceError,
        estimate,
        over_budget_message,
    )

__all__ = ["CostEstimate", "LineItem", "UnknownPriceError", "estimate", "over_budget_message"]
