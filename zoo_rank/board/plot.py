"""A board as a PNG (NAME.png) in the paper's Figure 7 layout: each metric (x) against the check (y),
the rank correlations in each panel's legend, one colour per model across panels.

matplotlib's Agg backend: no display needed. matplotlib is imported when a board is drawn (it costs
about a second at startup, and most commands that import the board never draw one).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

from zoo_rank import __version__
from zoo_rank._paths import write_bytes_atomic
from zoo_rank.board.model import Leaderboard
from zoo_rank.board.result import RunResult, is_finite
from zoo_rank.board.table import CORRELATION_KEYS, arrow, metric_title


def plot_board(board: Leaderboard, path: str | Path) -> Path:
    """PNG in the paper's Figure 7 layout: one panel per metric, the metric (x) against the check (y).

    Each panel's legend gives the rank correlations of that metric. Without a check, one bar panel per
    metric instead.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in board.ranked() if r.error is None]
    metrics = [
        m for m in board.metrics if any(is_finite(r.metrics.get(m, math.nan)) for r in rows)
    ] or board.metrics
    ncols = min(4, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows + 0.9), squeeze=False)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # One colour per model across all panels, named once in the figure legend.
    color = {r.label: palette[i % len(palette)] for i, r in enumerate(rows)}
    corr = board.correlations() if board.target else {}
    for ax, m in zip(axes.flat, metrics, strict=False):
        if board.target is None:
            _bar_panel(ax, board, rows, m, color)
        else:
            _scatter_panel(ax, board, rows, m, color, corr.get("metrics", {}).get(m, {}))
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    handles = [
        plt.Line2D([], [], color=color[r.label], marker="x" if r.control else "o", linestyle="", markersize=6)
        for r in rows
    ]
    labels = [r.label + (" (control)" if r.control else "") for r in rows]
    fig.legend(handles, labels, loc="upper center", ncol=min(4, len(rows)) or 1, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1.0 - 0.35 / fig.get_figheight()))  # fmt: skip
    fig.suptitle(f"{board.name}: {board.mode} mode on {board.dataset}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.65 / fig.get_figheight()))
    return _save_png(fig, board, rows, Path(path))


def _points(rows: list[RunResult], metric: str) -> list[tuple[RunResult, float]]:
    return [(r, float(r.metrics[metric])) for r in rows if is_finite(r.metrics.get(metric, math.nan))]


def _bar_panel(ax: Any, board: Leaderboard, rows: list[RunResult], m: str, color: dict[str, str]) -> None:
    """Without a check: the metric's values as bars, one per model."""
    pts = _points(rows, m)
    ax.bar(range(len(pts)), [v for _, v in pts], color=[color[r.label] for r, _ in pts])
    ax.set_xticks(range(len(pts)), [r.label for r, _ in pts], rotation=30, ha="right", fontsize=7)
    ax.set_title(f"{metric_title(m)} {arrow(board.sign(m))}", fontsize=10)


def _scatter_panel(
    ax: Any, board: Leaderboard, rows: list[RunResult], m: str, color: dict[str, str], stats: dict[str, Any]
) -> None:
    """The metric (x) against the check (y), its correlations with the check in the legend."""
    for r, v in _points(rows, m):
        y = r.probe_value(board.target)
        if is_finite(y):
            ax.scatter([v], [y], color=color[r.label], marker="x" if r.control else "o", s=45, zorder=3)
    if "absent" in stats or not stats:
        label = "correlation absent (< 3 models)"
    else:
        label = (
            ", ".join(f"{sym}={stats[k]:+.2f}" for k, sym in CORRELATION_KEYS[:3] if is_finite(stats.get(k)))
            or "ties"
        )
    ax.plot([], [], " ", label=label)
    ax.legend(loc="best", fontsize=7, handlelength=0, frameon=False)
    ax.set_xlabel(f"{metric_title(m)} {arrow(board.sign(m))}", fontsize=9)
    ax.set_ylabel(board.target_title(), fontsize=8)
    ax.grid(alpha=0.3)


def _save_png(fig: Any, board: Leaderboard, rows: list[RunResult], path: Path) -> Path:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    # The models in the PNG's own text chunks: the tool's mark, and a check that it shows the board's rows.
    meta = {
        "Software": f"zoo_rank {__version__}",
        "Title": board.name,
        "Description": json.dumps([r.label for r in rows]),
    }
    fig.savefig(buffer, format="png", dpi=110, metadata=meta)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return path
