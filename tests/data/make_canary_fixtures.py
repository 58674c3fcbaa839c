"""Regenerate the canary judge's fixture from a real world run (run from the repository root).

    .venv/bin/python tests/data/make_canary_fixtures.py

One world (seed 11, the default 9 shards of 5,000 players) runs with
exploration OFF, so no shard's parameters move on their own: the first
``PRE_HOURS`` game hours are A/A data for every shard. Then three shards get a
real parameter change (``CHANGES``), put in force through the simulator's own
``set_params`` as a canary's changeset is, and the world runs ``POST_HOURS``
more. The telemetry goes through the real pipeline (``aegis materialize
telemetry``: landing -> bronze -> dbt) and the ``fct_shard_kpis`` mart is
written to ``kpis_world.parquet`` (key columns and every KPI of the contract,
floats as float32), with ``kpis_world.json`` describing the run and the
changes. About 3 minutes on 2 cores; ~0.5 MB.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aegis.canary.scenarios import world_kpis

HERE = Path(__file__).resolve().parent
SEED = 11
PRE_HOURS = 60.0
POST_HOURS = 12.0
# shard -> parameter changes and what is expected of them; one shard per region.
CHANGES: dict[str, dict[str, Any]] = {
    "eu-west-1": {"params": {"npc_aggression": 1.6}, "expect": "harmful: deaths up"},
    "us-east-2": {
        "params": {"quest_difficulty": [0.8, 0.8, 0.8, 0.8, 0.8]},
        "expect": "good for abandon_rate (target)",
    },
    "ap-southeast-3": {
        "params": {"source_multiplier": 1.6},
        "expect": "harmful: currency inflow per player up",
    },
}


def main() -> int:
    meta = world_kpis(SEED, PRE_HOURS, POST_HOURS, CHANGES, HERE / "kpis_world.parquet")
    meta["command"] = "python tests/data/make_canary_fixtures.py"
    (HERE / "kpis_world.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
