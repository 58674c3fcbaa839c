"""Run the pack over a resource graph offline (``tests/infrastructure/stack_runner.py``): no CLI, no cloud.

    python tests/infrastructure/stack_runner.py prod --out /tmp/prod.json  # at the repository root
    python -m aegis_guard.offline /tmp/prod.json --budget 110000           # in policies/infrastructure/

Prints every violation and exits 1 when there is one. This is how the tests
prove the program's own resources pass the whole pack.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from aegis_guard.policies import ALL_POLICIES


@dataclass(frozen=True)
class Violation:
    policy: str
    message: str
    urn: str | None


def _options(rec: dict[str, Any]) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=bool(rec.get("protect")),
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=rec.get("parent"),
    )


def policy_resources(graph: dict[str, Any]) -> list[PolicyResource]:
    """PolicyResource objects (props = outputs, as in AnalyzeStack) with parents and dependencies linked."""
    records = graph["resources"]
    by_urn = {r["urn"]: r for r in records}
    providers = {
        r["urn"]: PolicyProviderResource(r["type"], r["inputs"], r["urn"], r["name"])
        for r in records
        if r["type"].startswith("pulumi:providers:")
    }
    out: dict[str, PolicyResource] = {}
    for r in records:
        out[r["urn"]] = PolicyResource(
            r["type"],
            r["outputs"] or r["inputs"],
            r["urn"],
            r["name"],
            _options(r),
            providers.get(r.get("provider") or ""),
            None,
            [],
            {},
        )
    for urn, res in out.items():
        rec = by_urn[urn]
        res.parent = out.get(rec.get("parent") or "")
        res.dependencies = [out[d] for d in rec.get("dependencies", []) if d in out]
        res.property_dependencies = {
            k: [out[d] for d in v if d in out] for k, v in (rec.get("propertyDependencies") or {}).items()
        }
    return list(out.values())


def run_pack(
    graph: dict[str, Any], config: dict[str, dict[str, Any]] | None = None, policies: list | None = None
) -> list[Violation]:
    """Every violation the pack reports for the graph: resource policies on inputs, stack policies on outputs."""
    config = config or {}
    violations: list[Violation] = []
    resources = policy_resources(graph)
    for policy in policies or ALL_POLICIES:

        def collect(message: str, urn: str | None = None, _name: str = policy.name) -> None:
            violations.append(Violation(_name, message, urn))

        if isinstance(policy, ResourceValidationPolicy):
            for rec, res in zip(graph["resources"], resources, strict=True):
                if res.resource_type.startswith("pulumi:providers:") or not rec.get("custom"):
                    continue
                args = ResourceValidationArgs(
                    rec["type"],
                    rec["inputs"],
                    rec["urn"],
                    rec["name"],
                    res.opts,
                    res.provider,
                    config.get(policy.name),
                )
                result = policy.validate(
                    args,
                    lambda m, u=None, _urn=rec["urn"], _n=policy.name: violations.append(
                        Violation(_n, m, _urn)
                    ),
                )
                if inspect.isawaitable(result):
                    raise TypeError(f"{policy.name}: asynchronous validation is not supported offline")
        elif isinstance(policy, StackValidationPolicy):
            result = policy.validate(StackValidationArgs(resources, config.get(policy.name)), collect)
            if inspect.isawaitable(result):
                raise TypeError(f"{policy.name}: asynchronous validation is not supported offline")
    return violations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("graph", type=Path)
    parser.add_argument(
        "--budget", type=float, help="monthly budget in USD (default: the graph's monthlyBudgetUsd output)"
    )
    ns = parser.parse_args(argv)
    graph = json.loads(ns.graph.read_text())
    budget = ns.budget if ns.budget is not None else graph.get("outputs", {}).get("monthlyBudgetUsd")
    violations = run_pack(
        graph, {"budget-guard": {"monthlyBudgetUsd": budget}} if budget is not None else None
    )
    for v in violations:
        print(f"[{v.policy}] {v.urn or '(stack)'}: {v.message}")
    print(f"{len(violations)} violation(s) over {len(graph['resources'])} resources")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
