"""The proposals stage: hypotheses from the marts become ranked candidate changesets.

``proposals`` (group ``proposals``) reads the marts (``fct_shard_kpis``,
``fct_quest_abandonment``, ``fct_death_heatmap``, ``fct_economy_daily``,
``fct_server_health``), the operator's goals (``policies/goals.json``), each
shard's current config from the game backend (``game`` resource: the diffs'
``before``) and the champion world model (``mlflow`` resource), and returns
``list[Proposal]`` ranked best first (core: :mod:`aegis.proposals`). The marts
are read from the ``lake`` resource's warehouse (``warehouse_path()``); the changeset state (what was
tried, the reality-delta calibration) and ``proposals/latest.json`` live in the
``changes`` resource's home. It writes ``latest.json`` and records the outcome in the ledger
(kind ``proposal``: the top candidate and the count). The canary loop's
``canary_launch`` takes the list and picks with ``select_next``; policy and
simulation gates run there, through the changeset lifecycle.

Automation: an ``AutomationCondition`` rather than a sensor. The ranking
should follow the marts (a new ``fct_shard_kpis`` is new evidence) and a new
champion (new predictions), and "a dependency updated" is exactly that; the
marts update every few minutes, so the condition asks at most once per
``refresh_minutes`` (``aegis.config.proposals``, default 30) and never while a
run of it is in flight: on a small machine a ranking costs a few seconds of
CPU (one ensemble forward pass per candidate) plus the import of torch and
MLflow. ``model_evaluation`` missing (no model trained yet) does not block it:
the ranking then says there is no champion and ranks on the hypotheses.

Import cost: torch and MLflow are imported inside the asset body only.
No ``from __future__ import annotations``: Dagster reads the types at definition time.
"""

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from aegis.domain import ShardConfig
from aegis.proposals.engine import (
    ACTOR,
    Ranking,
    busy_shards_from,
    changes_today,
    describe_change,
    markdown_table,
    model_predictor,
    rank_proposals,
    write_latest,
)
from aegis.proposals.goals import GoalFileError, load_goals
from aegis.proposals.hypotheses import MARTS, read_marts
from aegis.proposals.model import Proposal, select_next
from aegis.proposals.settings import ProposalSettings
from aegis.worldmodel.settings import CHAMPION, MODEL_NAME
from assets.resources.changes import ChangeSetResource
from assets.resources.game import GameBackendResource
from assets.resources.lake import LakeResource
from assets.resources.mlflow import MlflowResource

GROUP = "proposals"
ASSET_NAME = "proposals"
MART_KEYS: tuple[dg.AssetKey, ...] = tuple(dg.AssetKey(m) for m in MARTS)
MODEL_KEY = dg.AssetKey("model_evaluation")  # the asset that moves the champion alias
LEDGER_KIND = "proposal"
LEDGER_SUBJECT = "proposals"
LATEST_FILE = "latest.json"
READ_RETRIES = 3  # DuckDB refuses a reader while dbt holds the file: wait and try again
READ_RETRY_S = 5.0
DEFAULT_REFRESH_MINUTES = 30


def _refresh_minutes() -> int:
    try:
        return ProposalSettings.from_policy_data().refresh_minutes
    except Exception:  # a broken data.json must not break the code location's import; the asset reports it
        return DEFAULT_REFRESH_MINUTES


REFRESH_MINUTES = _refresh_minutes()
REFRESH_CRON = (
    f"*/{REFRESH_MINUTES} * * * *" if REFRESH_MINUTES < 60 else f"0 */{REFRESH_MINUTES // 60} * * *"
)


def proposals_automation_condition() -> dg.AutomationCondition:
    """Re-rank when a mart or the champion updated, at most once per refresh window, never twice at once,
    and only once every input exists: right after a fresh start the marts and the first model are
    still warming up, and a run that can only fail would be a red run nobody should act on."""
    cond = dg.AutomationCondition
    requested_this_window = (
        cond.newly_requested()
        .since(cond.cron_tick_passed(REFRESH_CRON))
        .with_label(f"requested since the last {REFRESH_CRON} tick")
    )
    return (
        cond.any_deps_updated().since_last_handled().with_label("a mart or the champion updated")
        & ~cond.any_deps_missing().with_label(
            "every mart and a judged model exist (warm-up is not a failure)"
        )
        & ~cond.any_deps_in_progress()
        & ~cond.in_progress()
        & ~requested_this_window
    ).with_label("proposals_refresh")


class ProposalsConfig(dg.Config):
    """Run config of the ranking."""

    goals_path: str | None = None  # default: policies/goals.json ($AEGIS_GOALS)
    use_model: bool = True  # False: rank on the hypotheses' priors even when a champion exists


def _current_configs(
    game: GameBackendResource, shards: list[str]
) -> tuple[dict[str, ShardConfig], list[Any]]:
    """Each shard's config as the backend holds it now (the diffs' ``before``), and the backend's shard list."""
    with game.client() as client:
        infos = client.shards()
        known = {s.id for s in infos}
        configs = {s: client.get_config(s) for s in shards if s in known}
    return configs, infos


def _champion(mlflow: MlflowResource, log: Any) -> tuple[Any, str | None, str]:
    """(world model or None, its label, a sentence on what serves the predictions)."""
    registry = mlflow.registry()
    try:
        loaded = registry.load(CHAMPION)
    except Exception as exc:  # a registry that cannot load the champion: say so, rank without it
        log.warning(f"champion cannot be loaded: {exc}")
        return None, None, f"no usable champion ({exc}); ranked on hypothesis evidence with wide intervals"
    if loaded is None:
        return None, None, "no champion model yet; ranked on hypothesis evidence with wide intervals"
    mv, model = loaded
    label = f"{MODEL_NAME} v{mv.version}"
    return model, label, f"effects predicted by {label} (champion)"


def _read(warehouse: Path, settings: ProposalSettings) -> Any:
    last: Exception | None = None
    for attempt in range(READ_RETRIES):
        try:
            return read_marts(warehouse, settings.history_buckets)
        except FileNotFoundError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        except Exception as exc:  # duckdb.IOException: the file is locked by a writer
            last = exc
            time.sleep(READ_RETRY_S * (attempt + 1))
    raise dg.Failure(description=f"warehouse {warehouse} could not be read: {last}")


def _record(ranking: Ranking, selected: Proposal | None) -> int:
    """One ledger record per ranking: the top candidate and the count (the loop records the canary start).

    A ranking that cannot be recorded fails the run: the canary loop acts on
    this asset's output, and every autonomous decision must be in the ledger.
    """
    from aegis.ledger.ledger import Ledger

    top = ranking.proposals[0] if ranking.proposals else None
    payload: dict[str, Any] = {
        "summary": ranking.summary(),
        "count": len(ranking.proposals),
        "hypotheses": len(ranking.hypotheses),
        "model": ranking.model or "none",
        "top": None
        if top is None
        else {
            "changeset_id": top.changeset.id,
            "target": top.changeset.target,
            "change": describe_change(top),
            "goal_id": top.goal_id,
            "utility": top.utility,
            "hypothesis": top.hypothesis,
            "predicted": [e.model_dump() for e in top.predicted],
        },
        "selectable": None if selected is None else selected.changeset.id,
    }
    try:
        rec = Ledger().append(LEDGER_KIND, top.changeset.id if top else LEDGER_SUBJECT, payload, ACTOR)
    except Exception as exc:
        raise dg.Failure(
            description=f"the ranking could not be recorded in the ledger ({exc}); nothing goes forward unrecorded"
        ) from exc
    return rec.seq


@dg.asset(
    name=ASSET_NAME,
    group_name=GROUP,
    deps=[*MART_KEYS, MODEL_KEY],
    kinds={"python", "mlflow"},
    automation_condition=proposals_automation_condition(),
    description="Hypotheses from the marts -> candidate changesets with predicted effects, ranked by utility.",
)
def proposals(
    context: dg.AssetExecutionContext,
    config: ProposalsConfig,
    game: GameBackendResource,
    mlflow: MlflowResource,
    changes: ChangeSetResource,
    lake: LakeResource,
) -> dg.Output[list[Proposal]]:
    from aegis.reflection.delta import read_scale  # the reality_delta asset's interval scale

    home = changes.paths()  # the changeset state: what was tried, the calibration, latest.json
    try:
        goals = load_goals(config.goals_path)
        settings = ProposalSettings.from_policy_data()
    except (GoalFileError, ValueError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    marts = _read(lake.warehouse_path(), settings)
    regions = marts.shard_regions()
    try:
        configs, infos = _current_configs(game, sorted(regions))
    except Exception as exc:
        raise dg.Failure(
            description=f"the game backend at {game.base_url} did not give the shards' current configs "
            f"(a candidate's 'before' must be what the shard runs now): {exc}"
        ) from exc
    gone = sorted(set(regions) - set(configs))
    model, label, model_note = (None, None, "model disabled by run config")
    if config.use_model:
        model, label, model_note = _champion(mlflow, context.log)
    predictor = model_predictor(model) if model is not None else None
    store = changes.open_store()
    try:
        records = store.changesets()
        tried = {r.id for r in records}
        today = changes_today(store.transitions())
    finally:
        store.close()
    scale = read_scale(home.home)
    ranking = rank_proposals(
        marts, goals, configs, settings, predictor, label, tried=tried, interval_scale=scale
    )
    if gone:
        ranking.notes.append(f"shards in the marts but not at the backend (no candidates): {gone}")
    if marts.missing:
        ranking.notes.append(f"marts not built yet (their hypotheses skipped): {marts.missing}")
    busy = busy_shards_from(infos)
    selected = select_next(ranking.proposals, busy, today, settings.daily_budget)
    latest = write_latest(home.home / "proposals" / LATEST_FILE, ranking, datetime.now(UTC))
    seq = _record(ranking, selected)
    context.log.info(ranking.summary())
    top = ranking.proposals[0] if ranking.proposals else None
    metadata: dict[str, Any] = {
        "ranking": dg.MetadataValue.md(markdown_table(ranking.proposals)),
        "hypotheses": dg.MetadataValue.md(
            "\n".join(f"- **{h.kind}** ({h.strength:.2f}): {h.text}" for h in ranking.hypotheses)
            or "_the marts show nothing out of the ordinary_"
        ),
        "summary": ranking.summary(),
        "model": model_note,
        "candidates": dg.MetadataValue.int(ranking.candidates),
        "proposals": dg.MetadataValue.int(len(ranking.proposals)),
        "skipped_already_tried": dg.MetadataValue.int(ranking.skipped_tried),
        "top_changeset": top.changeset.id if top else "none",
        "selectable_now": (
            f"{selected.changeset.id} on {selected.changeset.target}: {describe_change(selected)}"
            if selected
            else f"none (busy shards {sorted(busy)}, {today}/{settings.daily_budget} changes today)"
        ),
        "busy_shards": dg.MetadataValue.json(sorted(busy)),
        "changes_today": dg.MetadataValue.int(today),
        "daily_budget": dg.MetadataValue.int(settings.daily_budget),
        "interval_scale": dg.MetadataValue.float(scale),
        "latest_json": dg.MetadataValue.path(str(latest)),
        "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in ranking.notes) or "_none_"),
    }
    metadata["ledger_seq"] = dg.MetadataValue.int(seq)
    return dg.Output(ranking.proposals, metadata=metadata)


defs = proposals_defs = dg.Definitions(assets=[proposals])
