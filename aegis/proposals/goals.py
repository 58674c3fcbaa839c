"""The operator's goals: which KPIs Aegis should improve, and the guardrails that must hold.

Humans set goals and the policy envelope; Aegis does the rest. The goal file
(``policies/goals.json`` beside the policies, or ``$AEGIS_GOALS``) is a list of
:class:`aegis.domain.GoalSpec` plus guardrails shared by every goal. It is
checked here, before anything is proposed, so a typo in a KPI name is an error
that names the goal, the field and the closest valid KPI, never a goal that
silently matches nothing.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aegis.domain import GoalSpec
from aegis.telemetry import KPI_COLUMNS

GOALS_FILE = "goals.json"
GOALS_ENV = "AEGIS_GOALS"
# Priority 1 is the most important goal, 5 the least (as P1..P5 in an on-call rota);
# its weight in the expected utility is 6 - priority.
PRIORITY_TOP = 1
PRIORITY_BOTTOM = 5


def priority_weight(priority: int) -> float:
    """How much a goal's improvement counts: 5 for priority 1 down to 1 for priority 5."""
    return float(PRIORITY_BOTTOM + 1 - priority)


class GoalFileError(ValueError):
    """The goal file cannot be used; the message says where and what to write instead."""


def _kpi_problem(name: str) -> str | None:
    if name in KPI_COLUMNS:
        return None
    close = difflib.get_close_matches(name, KPI_COLUMNS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{name!r} is not a KPI column of fct_shard_kpis{hint} (see aegis/telemetry.py KPI_COLUMNS)"


def _band_problem(name: str, band: tuple[float, float]) -> str | None:
    lo, hi = band
    if not lo <= hi:
        return f"guardrail {name!r} has low {lo} above high {hi}; write [low, high]"
    return None


class GoalBook(BaseModel):
    """The whole goal file: goals (each a GoalSpec with an explicit, stable id) and shared guardrails."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(1, ge=1, le=1, description="File format version")
    guardrails: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="KPI -> [low, high] band every goal must keep"
    )
    goals: list[GoalSpec] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _ids_are_explicit(cls, data: Any) -> Any:
        # A generated id would change on every load; changesets and the ledger refer to goals by id.
        if isinstance(data, dict) and isinstance(data.get("goals"), list):
            for i, goal in enumerate(data["goals"]):
                if isinstance(goal, dict) and not goal.get("id"):
                    raise ValueError(
                        f"goals[{i}] has no 'id': give every goal a stable id (e.g. 'late-abandonment')"
                    )
        return data

    @model_validator(mode="after")
    def _names_are_kpis(self) -> GoalBook:
        problems: list[str] = []
        for name, band in self.guardrails.items():
            for p in (_kpi_problem(name), _band_problem(name, band)):
                if p:
                    problems.append(f"guardrails: {p}")
        seen: set[str] = set()
        for i, goal in enumerate(self.goals):
            where = f"goals[{i}] (id {goal.id!r})"
            if goal.id in seen:
                problems.append(f"{where}: the id is used twice; ids must be unique")
            seen.add(goal.id)
            if p := _kpi_problem(goal.kpi):
                problems.append(f"{where}: kpi {p}")
            for name, band in goal.guardrails.items():
                for p in (_kpi_problem(name), _band_problem(name, band)):
                    if p:
                        problems.append(f"{where}: guardrails: {p}")
            if goal.regions is not None and not goal.regions:
                problems.append(f"{where}: regions is empty; leave it out to mean every region")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def guardrails_for(self, goal: GoalSpec) -> dict[str, tuple[float, float]]:
        """Shared guardrails overlaid with the goal's own (the goal's band wins for a KPI named in both)."""
        return {**self.guardrails, **goal.guardrails}

    def applies(self, goal: GoalSpec, region: str) -> bool:
        return goal.regions is None or region in goal.regions

    def goal(self, goal_id: str) -> GoalSpec:
        for g in self.goals:
            if g.id == goal_id:
                return g
        raise KeyError(goal_id)


def default_goals_path() -> Path:
    """``$AEGIS_GOALS`` when set, else ``goals.json`` in the policy directory (``$AEGIS_POLICIES`` or ``policies/``)."""
    env = os.environ.get(GOALS_ENV, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    from aegis.policy.engine import default_policies_dir

    return default_policies_dir() / GOALS_FILE


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(lines)


def parse_goals(doc: Any, source: str = "goals") -> GoalBook:
    """Validate a loaded goal document; :class:`GoalFileError` with every problem at once."""
    try:
        return GoalBook.model_validate(doc)
    except ValidationError as exc:
        raise GoalFileError(f"{source} is not a valid goal file: {_explain(exc)}") from None


def load_goals(path: Path | str | None = None) -> GoalBook:
    """Read and validate the goal file (default: :func:`default_goals_path`)."""
    p = Path(path) if path is not None else default_goals_path()
    if not p.is_file():
        raise GoalFileError(
            f"goal file {p} does not exist: write one (see docs/proposals.md) or set {GOALS_ENV} to its path"
        )
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise GoalFileError(
            f"{p} is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    return parse_goals(doc, str(p))
