"""Great Expectations Core 1.x, used directly, behind a small typed surface.

Why not dagster-ge: the checks must be testable without Dagster (the layering rule: the
core library has no Dagster), and a Dagster asset check should only turn a
:class:`ValidationReport` into metadata. GX runs on pandas frames through one
ephemeral context (no files, no project directory); suites are built in code.

A report carries what a person needs in the UI: overall success, one outcome
per expectation (counts, observed value), and a few failing example rows,
taken from the frame by the indices GX reports as unexpected.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

MAX_EXAMPLE_ROWS = 5
_SOURCE = "aegis_frames"
_ASSET = "frame"
_BATCH = "whole_frame"
_lock = threading.Lock()
_batch_definition: Any = None


class ExpectationOutcome(BaseModel):
    """One expectation's verdict on one frame."""

    expectation: str
    column: str | None = None
    success: bool
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    observed_value: Any = None
    partial_unexpected: list[Any] = Field(default_factory=list)
    error: str | None = None  # GX raised while evaluating (e.g. a missing column)


class ValidationReport(BaseModel):
    """The result of validating one frame against one suite."""

    suite: str
    success: bool
    row_count: int
    outcomes: list[ExpectationOutcome] = Field(default_factory=list)
    failing_examples: list[dict[str, Any]] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)  # reasons a rule could not be evaluated
    details: dict[str, Any] = Field(default_factory=dict)  # e.g. baseline, lag

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    @property
    def unexpected_total(self) -> int:
        return sum(o.unexpected_count or 0 for o in self.outcomes)

    def summary(self) -> str:
        if self.skipped and not self.outcomes:
            return f"{self.suite}: skipped ({'; '.join(self.skipped)})"
        errors = [o.error for o in self.failed if o.expectation == "data_is_present" and o.error]
        if errors:
            return f"{self.suite}: FAILED: {'; '.join(errors)}"
        verdict = (
            "passed" if self.success else f"FAILED {len(self.failed)} of {len(self.outcomes)} expectations"
        )
        return f"{self.suite}: {verdict} on {self.row_count} rows"

    def outcomes_markdown(self) -> str:
        """The expectation results as a markdown table (shown as MetadataValue.md)."""
        lines = [
            "| expectation | column | result | unexpected | unexpected % | observed | examples |",
            "|---|---|---|---|---|---|---|",
        ]
        for o in self.outcomes:
            pct = "" if o.unexpected_percent is None else f"{o.unexpected_percent:.3g}"
            examples = ", ".join(_cell(v) for v in o.partial_unexpected[:MAX_EXAMPLE_ROWS])
            result = "pass" if o.success else ("error: " + (o.error or "") if o.error else "**FAIL**")
            lines.append(
                f"| {o.expectation} | {o.column or ''} | {result} | {_cell(o.unexpected_count)} | {pct} "
                f"| {_cell(o.observed_value)} | {examples} |"
            )
        for reason in self.skipped:
            lines.append(f"| skipped | | {reason} | | | | |")
        return "\n".join(lines)

    def examples_markdown(self) -> str:
        if not self.failing_examples:
            return "_no failing rows_"
        cols = list(self.failing_examples[0])
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_cell(row.get(c)) for c in cols) + " |" for row in self.failing_examples]
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null" if value is None else "NaN"
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _batch_def() -> Any:
    """One ephemeral GX context for the process: creating one per call costs ~50 ms and leaks nothing."""
    global _batch_definition
    if _batch_definition is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = context.data_sources.add_pandas(_SOURCE)
        _batch_definition = source.add_dataframe_asset(_ASSET).add_batch_definition_whole_dataframe(_BATCH)
    return _batch_definition


def validate_frame(
    df: pd.DataFrame,
    suite_name: str,
    expectations: Sequence[Any],
    *,
    example_rows: int = MAX_EXAMPLE_ROWS,
    details: dict[str, Any] | None = None,
) -> ValidationReport:
    """Validate ``df`` against ``expectations`` (GX expectation objects) and type the result.

    An expectation GX cannot evaluate (missing column, wrong type) is a failure
    with its error message, never a silent pass.
    """
    import great_expectations as gx

    if not expectations:
        raise ValueError(f"suite {suite_name!r} has no expectations: a check that cannot fail is a defect")
    frame = df.reset_index(drop=True)
    with _lock:
        batch_definition = _batch_def()  # first: a suite needs the active context
        suite = gx.ExpectationSuite(name=suite_name)
        for expectation in expectations:
            suite.add_expectation(expectation)
        batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(
            suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": example_rows}
        )
    outcomes: list[ExpectationOutcome] = []
    bad_rows: list[int] = []
    for r in result.results:
        res = dict(r.result or {})
        error = _exception_message(r.exception_info)
        raised = error is not None
        kwargs = r.expectation_config.kwargs
        observed = res.get("observed_value")
        outcomes.append(
            ExpectationOutcome(
                expectation=r.expectation_config.type,
                column=kwargs.get("column"),
                success=bool(r.success) and not raised,
                element_count=res.get("element_count"),
                unexpected_count=res.get("unexpected_count"),
                unexpected_percent=res.get("unexpected_percent"),
                observed_value=_jsonable(observed),
                partial_unexpected=[_jsonable(v) for v in res.get("partial_unexpected_list") or []],
                error=error,
            )
        )
        if not r.success:
            bad_rows.extend(int(i) for i in res.get("partial_unexpected_index_list") or [])
    examples: list[dict[str, Any]] = []
    for i in dict.fromkeys(bad_rows):  # ordered, unique
        if len(examples) >= example_rows:
            break
        if 0 <= i < len(frame):
            examples.append({k: _jsonable(v) for k, v in frame.iloc[i].items()})
    success = all(o.success for o in outcomes)
    return ValidationReport(
        suite=suite_name,
        success=success,
        row_count=len(frame),
        outcomes=outcomes,
        failing_examples=examples,
        details=details or {},
    )


def skipped_report(suite_name: str, reason: str, details: dict[str, Any] | None = None) -> ValidationReport:
    """A rule that could not be evaluated yet (e.g. no baseline): passes, and says why."""
    return ValidationReport(
        suite=suite_name, success=True, row_count=0, skipped=[reason], details=details or {}
    )


def failed_report(suite_name: str, reason: str, details: dict[str, Any] | None = None) -> ValidationReport:
    """A suite that cannot run because its data is missing: fails, and says what to do.

    Used where a blocking check must not pass on nothing (an empty lake) but a
    stack trace would tell the operator less than one sentence.
    """
    outcome = ExpectationOutcome(expectation="data_is_present", success=False, error=reason)
    return ValidationReport(
        suite=suite_name,
        success=False,
        row_count=0,
        outcomes=[outcome],
        details={"reason": reason, **(details or {})},
    )


def _exception_message(info: Any) -> str | None:
    """GX reports evaluation errors either flat or keyed by metric; either way, the first message."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "GX raised while evaluating")
    for nested in info.values():
        message = _exception_message(nested)
        if message:
            return message
    return None


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
