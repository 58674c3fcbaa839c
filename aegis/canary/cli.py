"""``aegis canary``: judge a canary offline (``judge``), and the live loop's ``status`` and ``list``.

``judge`` replays a canary from a directory with ``kpis.parquet`` and
``canary.json`` through the live judge's own code (:func:`aegis.canary.judge.judge`),
so anyone can audit a verdict Aegis took. ``status`` and ``list`` read the
canary loop's state (``aegis.canary.ops_cli``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from aegis.cli import LazyGroup

KPIS_FILE = "kpis.parquet"
SPEC_FILE = "canary.json"
EXIT_BAD_INPUT = 2

canary = LazyGroup(
    name="canary",
    lazy={
        "judge": "aegis.canary.cli:judge_cmd",
        "status": "aegis.canary.ops_cli:status",
        "list": "aegis.canary.ops_cli:list_canaries",
    },
    help="Canary shards: judge one offline, see the live ones.",
)


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _load(directory: Path) -> tuple[Any, Any]:
    """(kpis DataFrame, CanarySpec) from ``directory``; exits 2 naming what is wrong."""
    import pandas as pd
    from pydantic import ValidationError

    from aegis.canary.judge import CanarySpec

    if not directory.is_dir():
        _fail(f"{directory} is not a directory (it must hold {KPIS_FILE} and {SPEC_FILE})")
    for name in (KPIS_FILE, SPEC_FILE):
        if not (directory / name).is_file():
            _fail(f"{directory / name} is missing")
    try:
        raw = json.loads((directory / SPEC_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        _fail(f"{directory / SPEC_FILE} is not valid JSON: {exc}")
    if not isinstance(raw, dict):
        _fail(f"{directory / SPEC_FILE} must be a JSON object with canary, controls, start, max_buckets")
    try:
        spec = CanarySpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
        )
        _fail(f"{directory / SPEC_FILE}: {problems}")
    try:
        kpis = pd.read_parquet(directory / KPIS_FILE)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        _fail(f"{directory / KPIS_FILE} cannot be read as Parquet: {exc}")
    return kpis, spec


def _fmt(x: float) -> str:
    return f"{x * 100:+.1f}%" if math.isfinite(x) else ("+inf" if x > 0 else "-inf")


@click.command("judge")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as one JSON object.")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A policies data.json to judge with (default: the installed policies).",
)
def judge_cmd(directory: Path, as_json: bool, policy_file: Path | None) -> None:
    """Replay the canary in DIRECTORY one look per bucket and print the verdict.

    DIRECTORY holds kpis.parquet (rows shaped like fct_shard_kpis) and
    canary.json ({"canary", "controls", "start", "max_buckets"}, optional
    "targets"). Rows before start are the pre-change history; each look uses
    only the buckets up to it, exactly as the live judge does. A canary whose
    data ends before a decision and before its budget is reported inconclusive
    with decided_at null. Bad input exits 2.
    """
    from aegis.canary.judge import JudgeInputError, JudgeSettings, judge

    kpis, spec = _load(directory)
    try:
        settings = JudgeSettings.from_policy_data(policy_file)
    except (ValueError, OSError) as exc:
        _fail(f"canary settings: {exc}")
    try:
        result = judge(kpis, spec, settings)
    except JudgeInputError as exc:
        _fail(str(exc))
    if result.verdict == "continue":
        result = result.model_copy(
            update={
                "verdict": "inconclusive",
                "decided_at": None,
                "reason": f"inconclusive: the data ends after {result.buckets_observed} of {spec.max_buckets} "
                "buckets with no decision",
            }
        )
    if as_json:
        click.echo(json.dumps(result.as_output()))
        return
    decided = result.decided_at.isoformat() if result.decided_at else "-"
    click.echo(f"canary {spec.canary} vs {', '.join(spec.controls)} from {spec.start.isoformat()}")
    click.echo(
        f"verdict: {result.verdict}  (after {result.buckets_observed} of {spec.max_buckets} buckets, at {decided})"
    )
    click.echo(f"{'metric':28} {'role':9} {'effect':>8} {'interval':>19} {'margin':>7}  status")
    for m in result.metrics:
        interval = f"{_fmt(m.interval[0])}..{_fmt(m.interval[1])}"
        click.echo(
            f"{m.name:28} {m.role:9} {_fmt(m.effect):>8} {interval:>19} {_fmt(m.margin):>7}  {m.status}"
        )
    click.echo(result.reason)
