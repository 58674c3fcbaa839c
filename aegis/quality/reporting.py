"""Charts and tables of the marts for the Dagster UI (no Dagster here).

Why images as data URIs in markdown: the Dagster UI renders MetadataValue.md,
and an embedded PNG needs no file server; the PNG is also written under
``AEGIS_HOME/reports/`` so a person can open it outside the UI. Images are kept
small (about 30-60 KB) so asset metadata stays light.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd

CHART_DPI = 80
MAX_TABLE_ROWS = 20


def _figure_png(fig: object) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=CHART_DPI, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return buf.getvalue()


def funnel_chart(funnel: pd.DataFrame) -> bytes:
    """Attempts entering each quest stage, with completions and abandonments, over all quests.

    ``funnel``: columns stage, starts, completions, abandonments (any extra grain is summed).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if funnel.empty:
        raise ValueError("the funnel is empty: no quest events in the warehouse")
    by_stage = funnel.groupby("stage")[["starts", "completions", "abandonments"]].sum().sort_index()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(len(by_stage))
    ax.bar(x - 0.27, by_stage["starts"], width=0.27, label="entered")
    ax.bar(x, by_stage["completions"], width=0.27, label="finished")
    ax.bar(x + 0.27, by_stage["abandonments"], width=0.27, label="abandoned")
    ax.set_xticks(x, [f"stage {s}" for s in by_stage.index])
    ax.set_ylabel("attempts")
    ax.set_title("Quest progression funnel (all quests, all regions)")
    ax.legend(frameon=False, fontsize=8)
    return _figure_png(fig)


def death_heatmap(deaths: pd.DataFrame, cells: int = 32) -> bytes:
    """Deaths per grid cell over the world, all zones and causes summed.

    ``deaths``: columns cell_x, cell_y, deaths.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if deaths.empty:
        raise ValueError("the death heatmap is empty: no combat_death events in the warehouse")
    grid = np.zeros((cells, cells))
    summed = deaths.groupby(["cell_y", "cell_x"])["deaths"].sum()
    for (cy, cx), n in summed.items():
        if 0 <= cy < cells and 0 <= cx < cells:
            grid[int(cy), int(cx)] += n
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    image = ax.imshow(grid, origin="lower", cmap="inferno", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="deaths")
    ax.set_title("Deaths per cell (32 x 32 over the world)")
    ax.set_xlabel("cell x")
    ax.set_ylabel("cell y")
    return _figure_png(fig)


def png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def save_png(png: bytes, directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(png)
    tmp.replace(path)
    return path


def frame_markdown(df: pd.DataFrame, max_rows: int = MAX_TABLE_ROWS) -> str:
    """A small frame as a markdown table (floats to 4 significant digits)."""
    if df.empty:
        return "_empty_"
    shown = df.head(max_rows)
    cols = [str(c) for c in shown.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in shown.itertuples(index=False):
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    if len(df) > max_rows:
        lines.append(f"\n_{len(df) - max_rows} more rows_")
    return "\n".join(lines)
