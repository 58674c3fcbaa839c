"""Loading ``policies/playbooks.json``: the playbooks are data, validated here once.

A playbook that names an unknown next action, an operation the policy data does
not allow, or an action twice is refused at load time with every problem listed,
so a typo never surfaces in the middle of an incident.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from aegis.domain import explain
from aegis.healing.models import PlaybookBook

PLAYBOOKS_FILE = "playbooks.json"
TERMINAL_STEPS = ("escalate", "resolve")


class PlaybookError(ValueError):
    pass


def default_path() -> Path:
    from aegis.policy.engine import default_policies_dir

    return default_policies_dir() / PLAYBOOKS_FILE


def load_playbooks(path: Path | None = None, allowed_operations: set[str] | None = None) -> PlaybookBook:
    """The validated playbook book (``allowed_operations``: kinds of ``operations.allowed_args``)."""
    path = path or default_path()
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise PlaybookError(f"cannot read the playbooks at {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise PlaybookError(f"{path} is not valid JSON: {exc}") from exc
    try:
        book = PlaybookBook.model_validate(raw)
    except ValidationError as exc:
        raise PlaybookError(explain(exc, what=str(path))) from exc
    if allowed_operations is None:
        data = (
            json.loads((path.parent / "data.json").read_text())
            if (path.parent / "data.json").is_file()
            else {}
        )
        allowed = data.get("aegis", {}).get("config", {}).get("operations", {}).get("allowed_args")
        allowed_operations = set(allowed) if isinstance(allowed, dict) else None
    problems: list[str] = []
    seen_alerts: dict[str, str] = {}
    for pb in book.playbooks:
        names = [a.name for a in pb.actions]
        if len(set(names)) != len(names):
            problems.append(f"playbook {pb.problem}: an action name is used twice ({names})")
        for a in pb.actions:
            for step, target in (("on_failure", a.on_failure), ("on_success", a.on_success)):
                if target not in TERMINAL_STEPS and target not in names:
                    problems.append(
                        f"playbook {pb.problem}, action {a.name}: {step} names unknown {target!r}"
                    )
            if allowed_operations is not None and a.operation.value not in allowed_operations:
                problems.append(
                    f"playbook {pb.problem}, action {a.name}: operation {a.operation.value} is not in "
                    "operations.allowed_args of policies/data.json"
                )
        for alert in pb.alerts:
            if alert in seen_alerts:
                problems.append(f"alert {alert} opens both {seen_alerts[alert]} and {pb.problem}")
            seen_alerts[alert] = pb.problem
    if problems:
        raise PlaybookError(f"invalid playbooks in {path}:\n  - " + "\n  - ".join(problems))
    return book
