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
# # Canary replay: every look of a canary, up to its verdict
#
# The canary judge (`aegis.canary.judge.judge`) takes one look per 5-minute bucket after a change
# goes live on the canary shard and stops at the first decision. Replaying it with `trace=True`
# runs exactly the live code and keeps every look, so this notebook shows what the judge saw:
#
# 1. the canary against its controls on each metric, before and after the change;
# 2. each metric's anytime-valid confidence sequence closing in on the effect, against its margin;
# 3. the verdict and why.
#
# What it replays, first found wins:
#
# - `AEGIS_CANARY_SCENARIO=DIR`: a `canary judge` scenario directory (`kpis.parquet` + `canary.json`,
#   as `aegis canary judge DIR` reads it);
# - the newest finished canary in this AEGIS_HOME (changeset store + warehouse), else the newest live one;
# - otherwise it says that no canary has run here, and replays the scenario bundled with the repository
#   for the judge's tests (`tests/data/kpis_world.parquet`: a real world run in which one shard's NPC
#   aggression was really raised), labelled as such.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

ROOT = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "pyproject.toml").exists()), Path.cwd())
if "AEGIS_HOME" not in os.environ:
    os.chdir(ROOT)  # the default AEGIS_HOME (./.aegis) is relative to where `make up` runs

from aegis.canary.judge import CanarySpec, JudgeInputError, JudgeSettings, choose_controls, judge
from aegis.canary.metrics import METRICS
from aegis.config import paths
from aegis.domain import TERMINAL_STATES

P = paths()
print(f"AEGIS_HOME  {P.info()['home']}")

# %%
def from_scenario_dir(directory: Path) -> tuple[pd.DataFrame, CanarySpec, str] | None:
    kpis_file, spec_file = directory / "kpis.parquet", directory / "canary.json"
    missing = [f.name for f in (kpis_file, spec_file) if not f.is_file()]
    if missing:
        print(f"{directory} is not a canary judge scenario: {', '.join(missing)} missing")
        return None
    spec = CanarySpec.model_validate(json.loads(spec_file.read_text()))
    return pd.read_parquet(kpis_file), spec, f"scenario directory {directory}"


def from_changeset_store() -> tuple[pd.DataFrame, CanarySpec, str] | None:
    store_file = P.home / "changesets.db"
    if not store_file.exists():
        print(f"No changeset store at {store_file}: no canary has ever run in this AEGIS_HOME.")
        return None
    from aegis.canary.loop import WarehouseUnavailable, judge_spec, read_kpis
    from aegis.changes.store import ChangeSetStore

    store = ChangeSetStore()
    try:
        started = [(s, store.get(s.changeset_id)) for s in store.canary_specs() if s.start is not None]
    finally:
        store.close()
    if not started:
        print("No canary has started in this AEGIS_HOME yet (no changeset reached the canary stage).")
        return None
    finished = [(s, r) for s, r in started if r.state in TERMINAL_STATES]
    spec_rec, record = (finished or started)[-1]
    spec = judge_spec(spec_rec)
    try:
        kpis = read_kpis(P.warehouse, [spec.canary, *spec.controls])
    except WarehouseUnavailable as exc:
        print(f"Canary {record.id} found, but its KPIs cannot be read: {exc}")
        return None
    what = "finished" if finished else "not finished yet"
    return kpis, spec, f"changeset {record.id} ({what}, state {record.state.value}) on {spec.canary}"


def from_bundled_fixture() -> tuple[pd.DataFrame, CanarySpec, str] | None:
    data = ROOT / "tests" / "data"
    meta_file, kpis_file = data / "kpis_world.json", data / "kpis_world.parquet"
    if not (meta_file.exists() and kpis_file.exists()):
        print("The bundled scenario (tests/data/kpis_world.*) is not in this checkout: nothing to replay.")
        return None
    meta = json.loads(meta_file.read_text())
    kpis = pd.read_parquet(kpis_file)
    canary, change = next(iter(meta["changes"].items()))
    start = pd.Timestamp(meta["change_start"])
    history = kpis[pd.to_datetime(kpis["bucket_start"], utc=True) < start]
    unchanged = sorted(set(kpis["shard_id"]) - set(meta["changes"]))
    controls = choose_controls(history, canary, unchanged, 3)
    spec = CanarySpec(canary=canary, controls=controls, start=start.to_pydatetime(), max_buckets=144)
    label = (f"the repository's bundled judge scenario, NOT this AEGIS_HOME: a real world run (seed "
             f"{meta['seed']}) in which {canary} got {change['params']} at {meta['change_start']} "
             f"(expected: {change['expect']})")
    return kpis, spec, label


source = None
if os.environ.get("AEGIS_CANARY_SCENARIO"):
    source = from_scenario_dir(Path(os.environ["AEGIS_CANARY_SCENARIO"]))
if source is None:
    source = from_changeset_store()
if source is None:
    source = from_bundled_fixture()
if source is not None:
    kpis, spec, label = source
    print(f"Replaying {label}")
    print(f"canary {spec.canary} vs controls {', '.join(spec.controls)}, from {spec.start.isoformat()}, "
          f"budget {spec.max_buckets} buckets")

# %% [markdown]
# ## The judge, look by look

# %%
judgement = None
if source is not None:
    settings = JudgeSettings.from_policy_data()
    try:
        judgement = judge(kpis, spec, settings, trace=True)
    except JudgeInputError as exc:
        print(f"The judge cannot replay this canary: {exc}")
if judgement is not None:
    verdict = judgement.verdict
    if verdict == "continue":
        print(f"No verdict yet: {judgement.buckets_observed} of {spec.max_buckets} buckets observed "
              "(the canary is still running, or its data ends before a decision).")
    print(f"verdict: {verdict.upper()} after {judgement.buckets_observed} look(s)"
          + (f", at {judgement.decided_at.isoformat()}" if judgement.decided_at else ""))
    print(judgement.reason)
    table = pd.DataFrame([
        {"metric": m.name, "role": m.role, "effect": m.effect, "lo": m.interval[0], "hi": m.interval[1],
         "margin": m.margin, "direction": m.direction, "status": m.status}
        for m in judgement.metrics
    ])
    display(table.round(4))

# %% [markdown]
# ## Canary against controls
#
# Each metric as the judge defines it (`aegis.canary.metrics.METRICS`: pooled rates, per-player
# counts), for the canary and for its controls pooled together. The dashed line is the change; the
# red one, the look that decided.

# %%
def pooled(df: pd.DataFrame, shards: list[str], name: str) -> pd.Series:
    mdef = METRICS[name]
    rows = df[df["shard_id"].isin(shards)]
    num = rows[list(mdef.numerator)].sum(axis=1)
    den = rows[list(mdef.denominator)].sum(axis=1) if mdef.denominator else None
    t = pd.to_datetime(rows["bucket_start"], utc=True)
    if den is None:
        return num.groupby(t).mean()
    sums = pd.DataFrame({"num": num, "den": den, "t": t}).groupby("t").sum()
    return sums["num"] / sums["den"].where(sums["den"] > 0)


if judgement is not None:
    names = [m.name for m in judgement.metrics if m.name in METRICS]
    start = pd.Timestamp(spec.start)
    shown = kpis[pd.to_datetime(kpis["bucket_start"], utc=True) >= start - pd.Timedelta(hours=12)]
    last = pd.to_datetime(kpis["bucket_start"], utc=True).max()
    end = min(start + pd.Timedelta(minutes=5 * spec.max_buckets), last)
    shown = shown[pd.to_datetime(shown["bucket_start"], utc=True) <= end]
    cols = 3
    fig, axes = plt.subplots(int(np.ceil(len(names) / cols)), cols, figsize=(13, 2.6 * np.ceil(len(names) / cols)),
                             sharex=True, squeeze=False)
    for ax, name in zip(axes.flat, names):
        ax.plot(pooled(shown, [spec.canary], name), lw=1, label=f"canary {spec.canary}")
        ax.plot(pooled(shown, spec.controls, name), lw=1, label="controls (pooled)")
        ax.axvline(start, color="k", ls="--", lw=1)
        if judgement.decided_at:
            ax.axvline(pd.Timestamp(judgement.decided_at), color="tab:red", lw=1)
        ax.set_title(name, fontsize=9)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.tick_params(axis="x", rotation=30, labelsize=7)
    axes.flat[0].legend(frameon=False, fontsize=7)
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## The confidence sequences closing in
#
# At each look, each metric's estimated relative effect (line) and its anytime-valid interval (band).
# The dotted line is the margin of harm the policy tolerates (`aegis.config.canary` in
# `policies/data.json`): a rollback needs the whole interval beyond it on the harmful side;
# non-inferiority needs the whole interval on the safe side of it.

# %%
if judgement is not None and not judgement.trace:
    print("The judge took no look: no bucket after the start yet.")
elif judgement is not None:
    looks = pd.DataFrame(judgement.trace)
    at = pd.to_datetime(looks["bucket_start"], utc=True)
    metric_names = [c for c in looks.columns if c != "bucket_start"]
    policies = {m.name: m for m in judgement.metrics}
    cols = 3
    rows_n = int(np.ceil(len(metric_names) / cols))
    fig, axes = plt.subplots(rows_n, cols, figsize=(13, 2.8 * rows_n), sharex=True, squeeze=False)
    for ax, name in zip(axes.flat, metric_names):
        eff = np.array([v[0] for v in looks[name]])
        lo = np.clip([v[1] for v in looks[name]], -1.0, 1.0)  # the first looks' bounds are near infinite
        hi = np.clip([v[2] for v in looks[name]], -1.0, 1.0)
        ax.fill_between(at, lo, hi, alpha=0.3, step="post")
        ax.plot(at, eff, lw=1.2)
        ax.axhline(0, color="k", lw=0.5)
        pol = policies.get(name)
        if pol is not None and pol.margin:
            harmful = {"lower": [pol.margin], "higher": [-pol.margin], "two_sided": [pol.margin, -pol.margin]}
            for m in harmful[pol.direction]:
                ax.axhline(m, color="tab:red", ls=":", lw=1)
        if judgement.decided_at:
            ax.axvline(pd.Timestamp(judgement.decided_at), color="tab:red", lw=1)
        status = pol.status if pol is not None else ""
        ax.set_title(f"{name}: {status}", fontsize=9)
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:+.0%}"))
        ax.set_ylim(-0.6, 0.6)
    for ax in axes.flat[len(metric_names):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.tick_params(axis="x", rotation=30, labelsize=7)
    fig.suptitle(f"{spec.canary}: verdict {judgement.verdict} after {judgement.buckets_observed} look(s)")
    plt.tight_layout()
    plt.show()
