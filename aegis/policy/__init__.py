"""The policy gate: Rego axioms evaluated in-process (see :mod:`aegis.policy.engine`).

Kept import-light: ``from aegis.policy import PolicyEngine`` loads regopy only
when an engine is made.
"""

from aegis.policy.context import BudgetContext, PolicyContext, ShardContext
from aegis.policy.engine import PolicyEngine, PolicyError
from aegis.policy.rego_tests import PolicyTestReport, PolicyTestResult

__all__ = [
    "BudgetContext",
    "PolicyContext",
    "PolicyEngine",
    "PolicyError",
    "PolicyTestReport",
    "PolicyTestResult",
    "ShardContext",
]
