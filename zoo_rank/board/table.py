"""Cells, titles and the one markdown table renderer of every human view (boards, index, zoo benchmark,
the merged result tables of `zoo-rank probe` / `validate`).

`markdown_table(header, rows, align)` is the only code that lays out a markdown table: GitHub pipe
tables, unpadded (`| a | b |`, `|---|---:|`). Not polars' own MARKDOWN formatting: it pads every column
to its widest cell and cannot mark a column right-aligned, so the committed boards would change bytes
(and a board of 17 columns would grow by its padding). DataFrames go through `frame_table`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from rich.table import Table

from zoo_rank._console import console
from zoo_rank._paths import write_text_atomic

#: Alignment codes of `markdown_table`: left, right.
_RULES = {"l": "---", "r": "---:"}

# Column titles for the human views; the machine views use the registry names.
_TITLES = {
    "vci": "VCI",
    "fuzziness": "Fuzziness",
    "squared_distance": "Sq. distance",
    "cosine_distance": "Cosine dist.",
    "cosine_similarity": "Cosine dist.",  # the old registry name, in result files written before the rename
    "class_separation": "Class sep.",
    "h_score": "H-score",
    "vci_lw": "VCI-LW",
    "h_score_lw": "H-score-LW",
    "logme": "LogME",
    "knn_accuracy": "kNN acc.",
}

#: Keys of the statistics returned by stats.rank_correlations, in display order with short titles.
CORRELATION_KEYS = (
    ("spearman", "ρ"),
    ("kendall", "τ"),
    ("weighted_tau", "τw"),
    ("pearson", "r"),
    ("regret", "regret"),
)


# ---- the renderer --------------------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> list[str]:
    """Lines of a GitHub pipe table. `align`: one code per column, 'l' (default for missing codes) or 'r'.

    Cells are written as given (the caller formats and escapes them): ["a", "b"] -> "| a | b |".
    """
    codes = align.ljust(len(header), "l")
    lines = [_row(header), "|" + "|".join(_RULES[c] for c in codes) + "|"]
    return lines + [_row(cells) for cells in rows]


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def frame_table(df: pl.DataFrame, cell: Callable[[Any], str], align: str = "") -> list[str]:
    """A DataFrame through `markdown_table`: its column names as header, `cell(value)` per value."""
    return markdown_table(df.columns, ([cell(v) for v in row] for row in df.iter_rows()), align)


def _result_cell(v: Any) -> str:
    """A merged result table's cell, as polars shows it with float_precision=4 (0.5000, null, true, NaN)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        return f"{v:.4f}" if math.isinf(v) or abs(v) < 1e9 else f"{v:.4e}"
    return str(v)


def to_markdown(df: pl.DataFrame) -> str:
    """A polars DataFrame as a GitHub markdown table (all rows and columns, floats to 4 decimals)."""
    return "\n".join(frame_table(df, _result_cell))


def write_table(df: pl.DataFrame, stem: str | Path) -> tuple[Path, Path]:
    """Write `df` as STEM.csv and STEM.md; returns both paths."""
    stem = Path(stem)
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    write_text_atomic(csv, df.write_csv())
    write_text_atomic(md, to_markdown(df) + "\n")
    return csv, md


def print_table(df: pl.DataFrame, title: str) -> None:
    """Show a merged table on stdout (rich), floats to 4 digits."""
    table = Table(title=title)
    for col in df.columns:
        table.add_column(col)
    for row in df.iter_rows():
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else "" if v is None else str(v) for v in row))
    console().print(table)


# ---- cells and titles ----------------------------------------------------------------------------


def format_value(v: Any, digits: int = 4) -> str:
    """A table cell: floats to `digits` significant digits (0.09368, 11.22), so close scores stay apart."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:#.{digits}g}".rstrip(".")
        return f"{v:.{digits - 1}e}"
    return str(v)


def format_params(n: int | None) -> str:
    """Parameter count: 4_652_008 -> '4.65 M', 52_000 -> '52.0 k', None -> '—'."""
    if not n:
        return "—"
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def format_condition(value: Any) -> str:
    """A condition's value: dicts as 'k: v; ...', lists as 'a, b', scalars by format_value."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {format_condition(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(format_condition(v) for v in value)
    return format_value(value)


def format_p(p: float) -> str:
    """A p-value to two significant digits (0.042, 0.0014): small boards have few possible values."""
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def metric_title(metric: str) -> str:
    """'h_score' -> 'H-score': a metric's column title (unknown names as they are)."""
    return _TITLES.get(metric, metric)


def target_title(target: str | None) -> str:
    """'probe_top1:cifar10' -> 'probe top-1 (cifar10)'; 'mlog' -> 'MLOG'; None -> ''."""
    if target is None:
        return ""
    if target == "mlog":
        return "MLOG"
    return f"probe top-1 ({target.partition(':')[2]})"


def arrow(sign: int) -> str:
    """↑ when higher is better for the ranking, ↓ when lower is."""
    return "↑" if sign > 0 else "↓"
