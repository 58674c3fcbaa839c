"""``aegis canary status [ID]`` and ``aegis canary list``: the live judgement of the canaries.

Registered lazily by ``aegis.canary.cli`` under ``aegis canary``. ``status``
re-judges a live canary on the warehouse's newest KPI buckets with the same
code the sensor runs (so a person sees what the loop will see on its next
look), and falls back to the judgement the loop stored last when the
warehouse cannot be read now (a dbt build holds it). Exit 2 for an unknown id.
"""

from __future__ import annotations

import json
from typing import Any

import click

from aegis.config import paths

EXIT_BAD_INPUT = 2


def _bad(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(EXIT_BAD_INPUT)


def canary_view(store: Any, changeset_id: str, live: bool = True) -> dict[str, Any]:
    """Everything ``status`` shows about one canary, as JSON-able data."""
    from aegis.canary.loop import PRE_PERIOD_BUCKETS, WarehouseUnavailable, judge_spec, read_kpis
    from aegis.changes.lifecycle import finite
    from aegis.domain import PromotionState

    rec = store.get(changeset_id)
    spec = store.canary_spec(changeset_id)
    if spec is None:
        _bad(f"changeset {changeset_id} has no canary spec: it was not started as a judged canary")
    judgement = spec.judgement
    source = "stored" if judgement else "none"
    note = ""
    js = judge_spec(spec)
    if live and rec.state == PromotionState.CANARY and js is not None:
        import pandas as pd

        from aegis.canary.judge import JudgeInputError, judge
        from aegis.telemetry import KPI_BUCKET_MINUTES

        since = pd.Timestamp(js.start) - pd.Timedelta(minutes=KPI_BUCKET_MINUTES * PRE_PERIOD_BUCKETS)
        try:
            kpis = read_kpis(paths().warehouse, [spec.canary, *spec.controls], since.to_pydatetime())
            judgement = finite(judge(kpis, js).model_dump(mode="json"))
            source = "live"
        except (WarehouseUnavailable, JudgeInputError, ValueError) as exc:
            note = f"live judgement unavailable ({exc}); showing the last stored one"
    judgement = judgement or {}
    observed = int(judgement.get("buckets_observed") or 0)
    return {
        "changeset_id": rec.id,
        "state": rec.state.value,
        "canary": spec.canary,
        "controls": spec.controls,
        "start": spec.start.isoformat() if spec.start else None,
        "max_buckets": spec.max_buckets,
        "buckets_observed": observed,
        "exposure_used": round(observed / spec.max_buckets, 4),
        "verdict": judgement.get("verdict"),
        "decided_at": judgement.get("decided_at"),
        "reason": judgement.get("reason") or rec.reason,
        "metrics": [
            {"name": m["name"], "effect": m["effect"], "interval": list(m["interval"]), "status": m["status"]}
            for m in judgement.get("metrics") or []
        ],
        "judged_at": spec.judged_at.isoformat() if spec.judged_at else None,
        "source": source,
        "note": note,
        "hypothesis": (spec.proposal or {}).get("hypothesis"),
        "rollout": spec.rollout,
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2%}"


def _print_view(v: dict[str, Any]) -> None:
    click.echo(
        f"{v['changeset_id']}  {v['state']}  canary {v['canary']} vs {', '.join(v['controls']) or '-'}"
    )
    click.echo(
        f"  verdict {v['verdict'] or '-'} ({v['source']}); exposure {v['buckets_observed']}/{v['max_buckets']} "
        f"buckets ({v['exposure_used']:.0%}) from {v['start'] or '-'}"
    )
    if v["reason"]:
        click.echo(f"  {v['reason']}")
    if v["note"]:
        click.echo(f"  note: {v['note']}")
    for m in v["metrics"]:
        lo, hi = m["interval"]
        click.echo(f"  {m['name']:<22} {_pct(m['effect']):>8}  [{_pct(lo)}, {_pct(hi)}]  {m['status']}")
    if v["rollout"]:
        r = v["rollout"]
        click.echo(f"  rollout {r.get('status')}: waves done {r.get('done')} of {len(r.get('waves') or [])}")


@click.command()
@click.argument("changeset_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--stored", is_flag=True, help="Show the loop's last stored judgement; do not read the warehouse."
)
def status(changeset_id: str | None, as_json: bool, stored: bool) -> None:
    """The live judgement of one canary (or of every live canary): verdict, exposure, per-metric effects."""
    from aegis.changes.store import ChangeSetNotFound, ChangeSetStore
    from aegis.domain import PromotionState

    store = ChangeSetStore()
    if changeset_id:
        try:
            views = [canary_view(store, changeset_id, live=not stored)]
        except ChangeSetNotFound as exc:
            _bad(str(exc))
    else:
        views = [
            canary_view(store, s.changeset_id, live=not stored)
            for s in store.canary_specs()
            if store.get(s.changeset_id).state == PromotionState.CANARY
        ]
    if as_json:
        click.echo(json.dumps(views[0] if changeset_id else views, indent=2, default=str))
        return
    if not views:
        click.echo("no live canary")
    for v in views:
        _print_view(v)


@click.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_canaries(as_json: bool) -> None:
    """Every canary the loop started: state, verdict, exposure used, rollout."""
    from aegis.changes.store import ChangeSetStore

    store = ChangeSetStore()
    rows = []
    for spec in store.canary_specs():
        rec = store.get(spec.changeset_id)
        j = spec.judgement or {}
        observed = int(j.get("buckets_observed") or 0)
        rows.append(
            {
                "changeset_id": rec.id,
                "state": rec.state.value,
                "canary": spec.canary,
                "controls": spec.controls,
                "verdict": j.get("verdict"),
                "buckets_observed": observed,
                "max_buckets": spec.max_buckets,
                "exposure_used": round(observed / spec.max_buckets, 4),
                "rollout": (spec.rollout or {}).get("status"),
                "created_at": spec.created_at.isoformat(),
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no canary yet")
    for r in rows:
        click.echo(
            f"{r['changeset_id']}  {r['state']:<12} {r['canary']:<14} verdict {r['verdict'] or '-':<12} "
            f"exposure {r['buckets_observed']}/{r['max_buckets']}  rollout {r['rollout'] or '-'}"
        )
