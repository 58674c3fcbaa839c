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
# # Incidents: alerts, actions and verification, on one timeline
#
# What healing saw and did. Incidents come from `aegis incidents list --json` (the healing store,
# `healing_db` in `aegis info --json`): `id, target, kind, status, opened_at, contained_at,
# resolved_at` and the `actions` timeline (`name, outcome, at`; verification steps are the
# `verify:*` actions). The diagnosis of each incident is read from the same store, and the alerts
# that fired on the same targets from the alert inbox (`alerts_db`).
#
# Times are wall-clock UTC (when Aegis received or did something), not game time.

# %%
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

if "AEGIS_HOME" not in os.environ:
    # The default AEGIS_HOME (./.aegis) is relative to where `make up` runs: the repository root.
    root = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "pyproject.toml").exists()), Path.cwd())
    os.chdir(root)

from aegis.config import paths

P = paths()
info = P.info()
print(f"AEGIS_HOME  {info['home']}")
print(f"healing     {info['healing_db']}")
print(f"alerts      {info['alerts_db']}")

# %%
incidents: list[dict] = []
if not Path(info["healing_db"]).exists():
    print("No healing store yet: no alert has reached the healing sensor and no incident was opened. "
          "Healing runs under `make up` (alerts -> incidents -> playbooks); `aegis incidents tick` runs it once.")
else:
    out = subprocess.run(
        [sys.executable, "-m", "aegis.cli", "incidents", "list", "--json"],
        capture_output=True, text=True, env={**os.environ, "AEGIS_HOME": info["home"]}, timeout=120,
    )
    if out.returncode != 0:
        print(f"`aegis incidents list --json` failed (exit {out.returncode}): {out.stderr.strip()[-500:]}")
    else:
        incidents = json.loads(out.stdout)
        print(f"{len(incidents)} incident(s)")
if Path(info["healing_db"]).exists() and not incidents:
    print("No incident yet: healing has had nothing to do.")

alerts = pd.DataFrame()
if Path(info["alerts_db"]).exists():
    from aegis.alerts.inbox import AlertInbox

    inbox = AlertInbox()
    try:
        entries = inbox.all()
    finally:
        inbox.close()
    alerts = pd.DataFrame([
        {"name": e.alert.name, "target": e.alert.target, "status": e.status, "received_at": e.received_at,
         "resolved_at": e.resolved_at, "count": e.count, "known": e.known}
        for e in entries
    ])
    print(f"{len(alerts)} alert(s) in the inbox")
else:
    print("No alert inbox yet: no alert was ever received (the receiver runs under `make up`).")

# %% [markdown]
# ## The incidents

# %%
if incidents:
    from aegis.healing.store import IncidentStore

    store = IncidentStore()
    try:
        detail = {i["id"]: store.get(i["id"]) for i in incidents}
    finally:
        store.close()
    table = pd.DataFrame([
        {
            "id": i["id"], "target": i["target"], "kind": i["kind"], "status": i["status"],
            "opened_at": i["opened_at"], "contained_at": i["contained_at"], "resolved_at": i["resolved_at"],
            "actions": len(i["actions"]),
            "diagnosis": detail[i["id"]].diagnosis.summary if detail[i["id"]].diagnosis else "",
            "note": detail[i["id"]].note,
        }
        for i in incidents
    ])
    display(table)

# %% [markdown]
# ## Timeline
#
# One row per incident: the bar runs from opening to resolution (or to now while open); the
# markers are its actions, coloured by outcome (verification steps are `verify:*`), and the
# triangles the alerts received on the same target.

# %%
OUTCOME_COLORS = {
    "applied": "tab:blue", "verified": "tab:green", "unverified": "tab:orange", "denied": "tab:purple",
    "failed": "tab:red", "skipped": "tab:gray", "escalated": "black",
}
if incidents:
    now = pd.Timestamp.now(tz="UTC")
    fig, ax = plt.subplots(figsize=(12, 0.8 + 0.7 * len(incidents)))
    seen: set[str] = set()
    for row, inc in enumerate(incidents):
        opened = pd.Timestamp(inc["opened_at"])
        closed = pd.Timestamp(inc["resolved_at"]) if inc["resolved_at"] else None
        end = closed or (pd.Timestamp(inc["actions"][-1]["at"]) if inc["status"] == "escalated" and inc["actions"] else now)
        ax.plot([opened, end], [row, row], color="lightsteelblue", lw=8, solid_capstyle="butt")
        if inc["contained_at"]:
            ax.plot(pd.Timestamp(inc["contained_at"]), row, "|", color="k", ms=18)
        for act in inc["actions"]:
            label = act["outcome"] if act["outcome"] not in seen else None
            seen.add(act["outcome"])
            ax.plot(pd.Timestamp(act["at"]), row, "o", color=OUTCOME_COLORS.get(act["outcome"], "k"), label=label)
            ax.annotate(act["name"], (pd.Timestamp(act["at"]), row), xytext=(0, 8),
                        textcoords="offset points", fontsize=7, rotation=20)
        if not alerts.empty:
            same = alerts[alerts["target"] == inc["target"]]
            for t in pd.to_datetime(same["received_at"], utc=True):
                ax.plot(t, row - 0.25, "v", color="tab:red", label=None if "alert" in seen else "alert")
                seen.add("alert")
    ax.set_yticks(range(len(incidents)), [f"{i['target']} / {i['kind']}\n{i['status']}" for i in incidents])
    ax.set_ylim(-0.8, len(incidents) - 0.2)
    ax.invert_yaxis()
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Incidents: alerts, actions and verification")
    ax.tick_params(axis="x", rotation=20)
    plt.tight_layout()
    plt.show()

    actions = pd.DataFrame([
        {"incident": inc["id"], "target": inc["target"], "at": a["at"], "action": a["name"], "outcome": a["outcome"]}
        for inc in incidents for a in inc["actions"]
    ])
    if actions.empty:
        print("No action taken yet on any incident (they are waiting for the healing sensor).")
    else:
        display(actions)
        to_resolve = [
            (pd.Timestamp(i["resolved_at"]) - pd.Timestamp(i["opened_at"])).total_seconds()
            for i in incidents if i["resolved_at"]
        ]
        if to_resolve:
            print(f"{len(to_resolve)} resolved; time to resolve: median {pd.Series(to_resolve).median():.1f} s")
        else:
            print("No incident resolved yet.")

# %% [markdown]
# ## Alerts
#
# Every alert the inbox holds, per name and target (an alert Aegis does not act on is kept too,
# marked unknown).

# %%
if alerts.empty:
    print("No alert received yet.")
else:
    counts = alerts.groupby(["name", "status"]).size().unstack(fill_value=0)
    ax = counts.plot.barh(stacked=True, figsize=(8, 0.6 + 0.4 * len(counts)))
    ax.set_xlabel("alerts (fingerprints)")
    ax.set_title("Alerts in the inbox, by name and status")
    plt.tight_layout()
    plt.show()
    display(alerts.sort_values("received_at"))
