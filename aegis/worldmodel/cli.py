"""``aegis model``: train, inspect and query the world model from a terminal.

Training from the CLI registers at most a ``challenger``; only the evaluation
asset moves ``champion`` (a model is promoted by the asset graph, never by hand).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from aegis.config import paths
from aegis.worldmodel.settings import (
    CHAMPION,
    DEFAULT_DEVICE,
    DEFAULT_EPOCHS,
    DEFAULT_HIDDEN,
    DEFAULT_MEMBERS,
    DEFAULT_SEED,
    DEFAULT_WINDOW,
    MODEL_NAME,
)

DEFAULT_OUT = "world_model.pt"
CHAMPION_URI = f"models:/{MODEL_NAME}@{CHAMPION}"


def _load_rows(source: str | None):  # type: ignore[no-untyped-def]
    from aegis.worldmodel.dataset import DatasetError, load_kpi_frame

    src = Path(source) if source else paths().warehouse
    try:
        return load_kpi_frame(src)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc


def _load_model(ref: str):  # type: ignore[no-untyped-def]
    from aegis.worldmodel.model import WorldModel

    if ref.startswith("models:/"):
        import mlflow

        mlflow.set_tracking_uri(paths().mlflow_tracking_uri)
        try:
            return mlflow.pyfunc.load_model(ref).unwrap_python_model().world_model
        except Exception as exc:
            raise click.ClickException(
                f"cannot load {ref} from {paths().mlflow_tracking_uri}: {exc}"
            ) from exc
    path = Path(ref)
    if not path.exists():
        raise click.ClickException(f"model file {path} does not exist (train one with 'aegis model train')")
    try:
        return WorldModel.load(path)
    except Exception as exc:
        raise click.ClickException(f"cannot load model file {path}: {exc}") from exc


@click.group()
def model() -> None:
    """The world model: learn the game's dynamics, predict the effect of a change."""


@model.command()
@click.option("--source", help="KPI rows: warehouse .duckdb (default: AEGIS_HOME's), .parquet or .csv.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True
)
@click.option(
    "--window", type=int, default=DEFAULT_WINDOW, show_default=True, help="History buckets per sample."
)
@click.option("--epochs", type=int, default=DEFAULT_EPOCHS, show_default=True)
@click.option("--members", type=int, default=DEFAULT_MEMBERS, show_default=True, help="Ensemble members.")
@click.option("--hidden", type=int, default=DEFAULT_HIDDEN, show_default=True)
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True)
@click.option("--device", default=DEFAULT_DEVICE, show_default=True, help="auto | cpu | cuda")
@click.option("--register/--no-register", default=False, help="Log to MLflow and register as 'challenger'.")
def train(
    source: str | None,
    out: Path,
    window: int,
    epochs: int,
    members: int,
    hidden: int,
    seed: int,
    device: str,
    register: bool,
) -> None:
    """Train on KPI rows, compare with persistence and ridge, save the model file."""
    from tqdm import tqdm

    from aegis.worldmodel.dataset import DatasetError, SplitConfig, build_dataset
    from aegis.worldmodel.pipeline import log_to_registry, train_with_baselines
    from aegis.worldmodel.train import EpochLog, TrainConfig

    rows = _load_rows(source)
    try:
        ds = build_dataset(rows, SplitConfig(window=window, seed=seed))
        cfg = TrainConfig(epochs=epochs, members=members, hidden=hidden, seed=seed, device=device)
    except (DatasetError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    sizes = ds.sizes()
    click.echo(
        f"dataset {ds.content_hash[:12]}: {sizes} windows, held-out shards {', '.join(ds.held_out_shards)}"
    )
    bar = tqdm(total=epochs * members, unit="epoch", file=sys.stderr, dynamic_ncols=True)
    last_member = [0]

    def progress(log: EpochLog) -> None:
        if log.member != last_member[0]:  # early stopping skipped the rest of the previous member
            bar.update(epochs * log.member - bar.n)
            last_member[0] = log.member
        bar.update(1)
        bar.set_postfix(member=log.member, train=f"{log.train_loss:.3f}", val=f"{log.val_loss:.3f}")

    try:
        outcome = train_with_baselines(ds, cfg, progress)
    except (ValueError, FloatingPointError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        bar.update(bar.total - bar.n)
        bar.close()
    outcome.model.info["dataset_hash"] = ds.content_hash
    outcome.model.save(out)
    click.echo(outcome.markdown())
    click.echo(f"saved {out} ({outcome.result.samples_per_second:,.0f} samples/s on {outcome.result.device})")
    if register:
        from aegis.worldmodel.registry import ModelRegistry

        p = paths().ensure()
        reg = ModelRegistry(p.mlflow_tracking_uri, p.mlflow_artifacts.as_uri())
        registered = log_to_registry(reg, outcome, ds, rows, cfg, {"aegis.trigger": "cli"})
        click.echo(
            f"registered {reg.model_name} v{registered.version} as challenger (run {registered.run_id})"
        )


@model.command()
@click.option(
    "--model",
    "model_ref",
    default=CHAMPION_URI,
    show_default=True,
    help="Model file or models:/ URI.",
)
@click.option("--source", help="KPI rows (default: the warehouse).")
@click.option("--shard", required=True, help="Shard id to predict for.")
def predict(model_ref: str, source: str | None, shard: str) -> None:
    """Predict a shard's next-bucket KPIs (mean and 90% interval) as JSON."""
    from aegis.worldmodel.dataset import DatasetError
    from aegis.worldmodel.pyfunc import predict_frame

    wm = _load_model(model_ref)
    rows = _load_rows(source)
    rows = rows[rows["shard_id"].astype(str) == shard]
    if rows.empty:
        raise click.ClickException(f"no KPI rows for shard {shard!r}")
    try:
        frame = predict_frame(wm, rows)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    record = frame.iloc[0].to_dict()
    record["bucket_start"] = str(record["bucket_start"])
    click.echo(json.dumps(record, indent=2))


@model.command()
@click.argument("changeset_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "model_ref", default=CHAMPION_URI, show_default=True)
@click.option("--source", help="KPI rows (default: the warehouse).")
def effects(changeset_file: Path, model_ref: str, source: str | None) -> None:
    """Predicted KPI effects of an AutonomousChangeSet (JSON file) on its target shard."""
    from pydantic import ValidationError

    from aegis.domain import AutonomousChangeSet, explain
    from aegis.worldmodel.effects import EffectError, predict_effects

    try:
        cs = AutonomousChangeSet.model_validate_json(changeset_file.read_text())
    except ValidationError as exc:
        raise click.ClickException(explain(exc, "changeset")) from exc
    wm = _load_model(model_ref)
    rows = _load_rows(source)
    try:
        est = predict_effects(cs, rows[rows["shard_id"].astype(str) == cs.target], wm)
    except EffectError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({k: v.model_dump() for k, v in est.items()}, indent=2))
