"""``aegis changeset``: drive, inspect, roll back and resume changesets from a shell.

Exit codes: 0 when the command did its job (a rejected changeset is a job done:
the output says why), 2 for bad input (malformed file, unknown shard or id,
illegal transition), 1 when the backend failed mid-way (run ``resume``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from aegis.config import WORLD_PORT, paths
from aegis.domain import AutonomousChangeSet, ExecutionPolicy, PromotionState, explain

ENV_WORLD_URL = "AEGIS_WORLD_URL"
EXIT_BAD_INPUT = 2
EXIT_BACKEND = 1


def default_url() -> str:
    return os.environ.get(ENV_WORLD_URL, f"http://127.0.0.1:{WORLD_PORT}")


def _read_strict(path: Path) -> Any:
    """``path`` parsed by the policy inputs' strict loader; exit 2 with its message when refused."""
    from aegis.policy.strict_json import StrictJsonError, load_strict

    try:
        return load_strict(path)
    except StrictJsonError as exc:  # unreadable, NaN/Infinity, duplicate keys, nesting, bad UTF-8, size
        _bad(str(exc))


def _load_changeset(path: Path) -> AutonomousChangeSet:
    doc = _read_strict(path)
    if isinstance(doc, dict) and "changeset" in doc and isinstance(doc["changeset"], dict):
        doc = doc["changeset"]  # the policy examples' {"changeset", "context"} shape
    try:
        return AutonomousChangeSet.model_validate(doc)
    except ValidationError as exc:
        _bad(explain(exc, f"changeset in {path}"))


def _load_given_context(path: Path) -> Any:
    """The ``context`` FILE states (``{"changeset", "context"}`` shape), or None for a bare changeset."""
    from aegis.policy.context import load_given_context
    from aegis.policy.strict_json import StrictJsonError

    try:
        return load_given_context(path)
    except StrictJsonError as exc:
        _bad(str(exc))
    except ValidationError as exc:
        _bad(explain(exc, f"context in {path}"))


def _load_actor_policy(path: Path) -> ExecutionPolicy:
    doc = _read_strict(path)
    try:
        return ExecutionPolicy.model_validate(doc)
    except ValidationError as exc:
        _bad(explain(exc, f"execution policy in {path}"))


def _bad(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(EXIT_BAD_INPUT)


def _build(
    url: str,
    simulator: str,
    hours: float | None,
    seed: int | None,
    actor_policy: Path | None,
    given_context: Any = None,
) -> Any:
    from aegis.changes.gate import HttpRunner, InProcessRunner, store_snapshot_loader
    from aegis.changes.lifecycle import Lifecycle, LifecycleConfig, warehouse_slo_alerts
    from aegis.world.client import GameBackendClient

    p = paths().ensure()
    config = LifecycleConfig(firing_alerts=warehouse_slo_alerts(p), given_context=given_context)
    if hours is not None:
        config.simulation_hours = hours
    config.simulation_seed = seed
    if actor_policy is not None:
        policy = _load_actor_policy(actor_policy)
        config.actor_policies[policy.actor] = policy
    if simulator == "auto":  # the contract's endpoint; in-process only when asked for
        simulator = "http"
    runner = (
        InProcessRunner(store_snapshot_loader(p.world_db)) if simulator == "inprocess" else HttpRunner(url)
    )
    return Lifecycle(GameBackendClient(url), simulator=runner, config=config, aegis_paths=p)


def _emit(data: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    if isinstance(data, list):
        for row in data:
            click.echo(f"{row['id']}  {row['target']:<16} {row['state']:<15} {row.get('reason') or ''}")
        return
    for key, value in data.items():
        click.echo(f"{key:<22} {value}")


def _guard(fn: Any) -> Any:
    """Turn the lifecycle's exceptions into clear messages and exit codes."""
    from aegis.changes.gate import SimulationUnavailable
    from aegis.changes.lifecycle import ChangeSetError
    from aegis.changes.states import IllegalTransition
    from aegis.changes.store import ChangeSetConflict, ChangeSetNotFound
    from aegis.world.client import BadRequest, GameBackendError, NotFound

    try:
        return fn()
    except (
        ChangeSetError,
        IllegalTransition,
        ChangeSetNotFound,
        ChangeSetConflict,
        NotFound,
        BadRequest,
    ) as exc:
        _bad(str(exc))
    except (GameBackendError, SimulationUnavailable) as exc:
        click.echo(
            f"error: {exc}\nthe changeset is journalled; run 'aegis changeset resume' once it is fixed",
            err=True,
        )
        raise SystemExit(EXIT_BACKEND) from exc


_url = click.option(
    "--url", default=default_url, show_default=f"${ENV_WORLD_URL} or :{WORLD_PORT}", help="Game backend."
)
_json = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.group()
def changeset() -> None:
    """Autonomous changesets: policy, simulation gate, canary, promotion, rollback."""


@changeset.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_url
@click.option(
    "--simulator",
    type=click.Choice(["auto", "inprocess", "http"]),
    default="auto",
    show_default=True,
    help="Where the simulation gate runs: in-process from the local world store, or the backend's endpoint.",
)
@click.option("--hours", type=float, help="Game hours the simulation gate runs (default 6).")
@click.option("--seed", type=int, help="Seed both simulation arms with this (default: the snapshot's rng).")
@click.option(
    "--actor-policy",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="ExecutionPolicy JSON of the changeset's actor (default: set_params on any shard).",
)
@_json
def run(
    file: Path,
    url: str,
    simulator: str,
    hours: float | None,
    seed: int | None,
    actor_policy: Path | None,
    as_json: bool,
) -> None:
    """Propose FILE and drive it up to canary start (or rejection).

    When FILE is an example-shaped ``{"changeset", "context"}`` document, the facts
    its context states that the world cannot measure (predictions, budget, alerts,
    players share, recent changes) complete the measured context; a measured fact
    is never relaxed by them, and the actor's policy comes from --actor-policy.
    """
    cs = _load_changeset(file)
    given = _load_given_context(file)
    lc = _build(url, simulator, hours, seed, actor_policy, given)
    rec = _guard(lambda: lc.run(cs))
    _emit(rec.summary(), as_json)


@changeset.command()
@click.argument("changeset_id")
@_json
def status(changeset_id: str, as_json: bool) -> None:
    """State, decision, snapshot and artifacts of one changeset."""
    from aegis.changes.store import ChangeSetStore

    store = ChangeSetStore()
    rec = _guard(lambda: store.get(changeset_id))
    data = rec.summary()
    data["artifacts"] = {k: v["path"] for k, v in store.artifacts(changeset_id).items()}
    data["steps"] = {s.step: s.status for s in store.steps(changeset_id)}
    data["transitions"] = [
        f"{t.src.value} -> {t.dst.value}: {t.reason}" for t in store.transitions(changeset_id)
    ]
    _emit(data, as_json)


@changeset.command()
@click.argument("changeset_id")
@_url
@click.option(
    "--mode",
    type=click.Choice(["snapshot", "config"]),
    default="snapshot",
    show_default=True,
    help="snapshot: restore the pre-change snapshot; config: put the old params back, keep progress.",
)
@click.option("--reason", default="manual rollback", show_default=True)
@_json
def rollback(changeset_id: str, url: str, mode: str, reason: str, as_json: bool) -> None:
    """Roll an applied changeset back and verify integrity."""
    lc = _build(url, "http", None, None, None)
    rec = _guard(lambda: lc.roll_back(changeset_id, reason, mode))
    _emit(rec.summary(), as_json)


@changeset.command()
@click.argument("changeset_id")
@_url
@click.option(
    "--rollout/--no-rollout",
    default=True,
    show_default=True,
    help="Carry the change to the remaining shards in guarded waves after promoting the canary.",
)
@click.option("--by", default="operator", show_default=True, help="Who decided (recorded in the ledger).")
@click.option(
    "--hours", type=float, help="Game hours of a wave shard's simulation gate, when its verdict asks."
)
@_json
def promote(changeset_id: str, url: str, rollout: bool, by: str, hours: float | None, as_json: bool) -> None:
    """Promote a canary by hand: its config must still be in force; then roll it out in waves."""
    from aegis.canary.loop import CanaryLoop, LoopError

    lc = _build(url, "http", hours, None, None)
    loop = CanaryLoop(lc)

    def go() -> Any:
        if not rollout:
            rec = lc.promote(changeset_id)
            loop.reflect(changeset_id)
            return rec
        try:
            return loop.promote(changeset_id, None, by=by)
        except LoopError as exc:
            _bad(str(exc))

    rec = _guard(go)
    data = rec.summary()
    spec = lc.store.canary_spec(changeset_id)
    if spec is not None and spec.rollout:
        data["rollout"] = {k: spec.rollout.get(k) for k in ("status", "waves", "done", "failed_wave")}
    _emit(data, as_json)


@changeset.command()
@_url
@click.option(
    "--simulator", type=click.Choice(["auto", "inprocess", "http"]), default="auto", show_default=True
)
@click.option(
    "--hours", type=float, help="Game hours of a simulation gate that still has to run (default 6)."
)
@_json
def resume(url: str, simulator: str, hours: float | None, as_json: bool) -> None:
    """Finish every changeset a crash left mid-way (reads the backend to learn what applied)."""
    lc = _build(url, simulator, hours, None, None)
    recs = _guard(lc.resume)
    _emit([r.summary() for r in recs], as_json)


@changeset.command(name="list")
@click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in PromotionState]))
@_json
def list_(states: tuple[str, ...], as_json: bool) -> None:
    """Every changeset (or those in the given states)."""
    from aegis.changes.store import ChangeSetStore

    recs = ChangeSetStore().changesets({PromotionState(s) for s in states} or None)
    _emit([r.summary() for r in recs], as_json)
