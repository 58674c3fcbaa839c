# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The world model: error, calibration and the reality delta
#
# Three questions about the model that ranks every tuning proposal:
#
# 1. **Error.** Per KPI, how far are its next-bucket predictions from what happened, against
#    the two baselines it must beat (persistence: "nothing changes"; linear: ridge regression)?
#    From the MLflow run of the version behind `champion` (else `challenger`), through
#    `aegis.worldmodel.registry.ModelRegistry`.
# 2. **Calibration.** Do its intervals hold what they claim? Recomputed here with
#    `aegis.worldmodel.metrics` on the dataset built from the warehouse as it is now: the share of
#    held-out targets inside the predicted interval, at the 90% the model is calibrated for and
#    at other levels (a reliability curve).
# 3. **Reality delta.** Against what canaries really observed: each finished canary's
#    reflection pairs the model's predicted effect (mean, 90% interval) with the judge's observed
#    effect (`aegis.reflection.delta`).
#
# A stage that has produced nothing yet (no model trained, no canary finished) is said so, plainly.

# %%
import os
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

if "AEGIS_HOME" not in os.environ:
    # The default AEGIS_HOME (./.aegis) is relative to where `make up` runs: the repository root.
    root = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "pyproject.toml").exists()), Path.cwd())
    os.chdir(root)

warnings.filterwarnings("ignore", message=".*IProgress not found.*")  # no widgets needed here
warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")  # MLflow, on load

from aegis.config import paths
from aegis.worldmodel.dataset import TARGET_KPIS, DatasetError, SplitConfig, build_dataset, read_warehouse
from aegis.worldmodel.metrics import evaluate
from aegis.worldmodel.settings import CHALLENGER, CHAMPION, EVAL_SPLITS

P = paths()
info = P.info()
print(f"AEGIS_HOME  {info['home']}")
print(f"MLflow      {info['mlflow_tracking_uri']}")
print(f"warehouse   {info['warehouse']}")

# %% [markdown]
# ## The model under study

# %%
registry = None
version = None
model = None
alias = None
run_metrics: dict[str, float] = {}
if not (P.mlflow / "mlflow.db").exists():
    print(f"No MLflow tracking database under {P.mlflow} yet: no model was ever trained. "
          "Run `aegis materialize training` (after `aegis materialize telemetry`).")
else:
    from aegis.worldmodel.registry import ModelRegistry

    registry = ModelRegistry(P.mlflow_tracking_uri, artifact_location=P.mlflow_artifacts.as_uri())
    for candidate in (CHAMPION, CHALLENGER):
        if registry.version(candidate) is not None:
            alias = candidate
            break
    if alias is None:
        print(f"MLflow has no '{CHAMPION}' or '{CHALLENGER}' version of {registry.model_name} yet: "
              "run `aegis materialize training`.")
    else:
        version, model = registry.load(alias)
        run_metrics = registry.client.get_run(version.run_id).data.metrics if version.run_id else {}
        tags = version.tags or {}
        print(f"{registry.model_name} v{version.version} ('{alias}'), run {version.run_id}")
        print(f"  trained on dataset {str(tags.get('dataset_hash', '?'))[:12]}, window {model.window} buckets")
        print(f"  decision: {tags.get('aegis.decision', 'not judged yet')} — {tags.get('aegis.decision_reason', '')}")

# %% [markdown]
# ## 1. Per-KPI error against the baselines
#
# MAE of the model and of the linear baseline, each divided by persistence's MAE on the same
# held-out split (below 1: better than "nothing changes"). From the figures logged with the run.

# %%
def relative_errors(metrics: dict[str, float], split: str) -> pd.DataFrame:
    rows = []
    for kpi in TARGET_KPIS:
        base = metrics.get(f"persistence.{split}.mae.{kpi}")
        if not base:
            continue
        rows.append({
            "kpi": kpi,
            "world_model": metrics.get(f"world_model.{split}.mae.{kpi}", np.nan) / base,
            "linear": metrics.get(f"linear.{split}.mae.{kpi}", np.nan) / base,
        })
    return pd.DataFrame(rows).set_index("kpi") if rows else pd.DataFrame()


tables = {split: relative_errors(run_metrics, split) for split in EVAL_SPLITS}
if not run_metrics:
    print("No training run to read per-KPI errors from.")
elif all(t.empty for t in tables.values()):
    print("The run logged no per-KPI MAE against persistence (an older run?): nothing to plot.")
else:
    fig, axes = plt.subplots(1, len(EVAL_SPLITS), figsize=(12, 4), sharey=True)
    for ax, split in zip(np.atleast_1d(axes), EVAL_SPLITS):
        t = tables[split]
        if t.empty:
            ax.set_title(f"{split}: no figures")
            continue
        y = np.arange(len(t))
        ax.barh(y - 0.2, t["world_model"], height=0.4, label="world model")
        ax.barh(y + 0.2, t["linear"], height=0.4, label="linear baseline")
        ax.axvline(1.0, color="k", lw=1, ls="--", label="persistence")
        ax.set_yticks(y, t.index)
        ax.set_xlabel("MAE / persistence MAE")
        ax.set_title(split.replace("_", " "))
    np.atleast_1d(axes)[0].legend(frameon=False, loc="lower right")
    plt.tight_layout()
    plt.show()
    for split in EVAL_SPLITS:
        rel = run_metrics.get(f"world_model.{split}.relative_mae")
        lin = run_metrics.get(f"linear.{split}.relative_mae")
        if rel is not None:
            print(f"{split:11} relative MAE: model {rel:.3f}, linear {lin:.3f} (persistence = 1)")

# %% [markdown]
# ## 2. Interval calibration, recomputed on today's data
#
# The dataset is rebuilt from the warehouse with the model's window (the same code the training
# asset runs); on each held-out split, `aegis.worldmodel.metrics.evaluate` gives coverage of the
# 90% interval per KPI. The reliability curve asks the same at other levels from the model's
# calibrated predictive distribution: an honest model sits on the diagonal.

# %%
dataset = None
if model is not None:
    try:
        dataset = build_dataset(read_warehouse(P.warehouse), SplitConfig(window=model.window))
    except DatasetError as exc:
        print(f"Cannot rebuild the dataset from the warehouse: {exc}")
if dataset is not None:
    trained_on = (version.tags or {}).get("dataset_hash")
    same = "the same data it was trained on" if trained_on == dataset.content_hash else (
        "newer data than it was trained on (the warehouse has grown since)")
    print(f"dataset {dataset.content_hash[:12]}: {dataset.sizes()} windows; {same}")
    coverage = pd.DataFrame(
        {split: evaluate(model, dataset[split]).coverage_by_kpi for split in EVAL_SPLITS}
    )
    levels = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98])
    from scipy import stats

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    y = np.arange(len(coverage))
    for k, split in enumerate(EVAL_SPLITS):
        ax1.barh(y + (k - 0.5) * 0.4, coverage[split], height=0.4, label=split.replace("_", " "))
    ax1.axvline(0.9, color="k", ls="--", lw=1, label="nominal 90%")
    ax1.set_yticks(y, coverage.index)
    ax1.set_xlim(0, 1)
    ax1.set_xlabel("share of held-out targets inside the 90% interval")
    ax1.legend(frameon=False, loc="upper left", bbox_to_anchor=(0, -0.12), ncol=3)
    ax1.set_title("Coverage of the 90% interval, per KPI")
    for split in EVAL_SPLITS:
        w = dataset[split]
        mu, sigma = model.predict_normalised(w)
        z = np.abs(model.normaliser.target(w.target) - mu) / sigma
        observed = [float((z <= stats.norm.ppf(0.5 + level / 2)).mean()) for level in levels]
        ax2.plot(levels, observed, marker="o", label=split.replace("_", " "))
    ax2.plot([0.45, 1], [0.45, 1], color="k", lw=1, ls="--", label="honest")
    ax2.set_xlabel("nominal interval level")
    ax2.set_ylabel("observed coverage (all KPIs)")
    ax2.set_title("Reliability of the predicted intervals")
    ax2.legend(frameon=False)
    plt.tight_layout()
    plt.show()
    display(coverage.round(3))
elif model is not None:
    logged = {s: run_metrics.get(f"world_model.{s}.coverage") for s in EVAL_SPLITS}
    print(f"Coverage of the 90% interval as logged at training time: {logged}")

# %% [markdown]
# ## 3. Reality delta: predicted effects against canaries
#
# Each finished canary's reflection (written by the canary loop into the changeset store and the
# ledger) pairs the world model's predicted KPI effect with the effect the judge observed. Over the
# recent pairs, `aegis.reflection.delta.score` reports the error, the bias and the interval coverage,
# and the interval scale the proposal engine applies from now on.

# %%
from aegis.domain import ReflectionRecord

reflections: list[ReflectionRecord] = []
store_file = P.home / "changesets.db"
if not store_file.exists():
    print(f"No changeset store at {store_file} yet: no change was ever proposed, so no canary has finished.")
else:
    from aegis.changes.store import ChangeSetStore

    store = ChangeSetStore()
    try:
        reflections = [ReflectionRecord.model_validate(r) for r in store.reflections()]
    finally:
        store.close()
    print(f"{len(reflections)} reflection(s) of finished changesets in the store")

try:
    from aegis.reflection.delta import pairs_from, read_scale, score
except ImportError as exc:  # the reflection stage is not installed in this checkout
    pairs_from = None
    print(f"aegis.reflection.delta is not available ({exc}): reality delta skipped.")

pairs = pairs_from(reflections) if pairs_from is not None else []
if pairs_from is not None and not pairs:
    print("No finished canary has both a predicted and an observed effect yet: there is no reality "
          "delta to show. It appears once the canary loop has judged a proposal the world model predicted.")
if pairs:
    delta = score(pairs, read_scale(P.home))
    print(delta.reason)
    frame = pd.DataFrame([
        {"changeset": p.changeset_id, "kpi": p.kpi, "at": p.at, "mean": p.mean, "lo": p.lo, "hi": p.hi,
         "observed": p.observed, "covered": p.covered}
        for p in pairs
    ])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    x = np.arange(len(frame))
    ax1.errorbar(x, frame["mean"], yerr=[frame["mean"] - frame["lo"], frame["hi"] - frame["mean"]],
                 fmt="o", capsize=3, label="predicted (90% interval)")
    ax1.scatter(x, frame["observed"], color=np.where(frame["covered"], "tab:green", "tab:red"),
                marker="x", s=60, zorder=3, label="observed by the canary")
    ax1.set_xticks(x, [f"{k}\n{c[-6:]}" for k, c in zip(frame["kpi"], frame["changeset"])], fontsize=7)
    ax1.axhline(0, color="k", lw=0.5)
    ax1.set_title("Predicted vs observed effect, per canary and KPI")
    ax1.legend(frameon=False)
    rolling = frame["covered"].astype(float).expanding().mean()
    ax2.plot(x, rolling, marker="o")
    ax2.axhline(0.9, color="k", ls="--", lw=1, label="nominal 90%")
    ax2.set_ylim(0, 1.05)
    ax2.set_title(f"Interval coverage so far (interval scale from now on: x{delta.interval_scale:.2f})")
    ax2.set_xlabel("pairs, oldest first")
    ax2.legend(frameon=False)
    plt.tight_layout()
    plt.show()
    display(pd.DataFrame(delta.by_kpi).T)
