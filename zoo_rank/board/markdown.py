"""A board as a markdown page (NAME.md): mode, conditions, notes, the ranked table, per-model conditions,
the column legend, the correlations with the check and the recommendation, one section renderer each.

Every table goes through `table.markdown_table`; cells are formatted by `table.format_value` & co.
"""

from __future__ import annotations

import math
from typing import Any

from zoo_rank.board import regime
from zoo_rank.board.model import MODE_TEXT, Leaderboard
from zoo_rank.board.result import RunResult, is_finite
from zoo_rank.board.table import (
    CORRELATION_KEYS,
    arrow,
    format_condition,
    format_p,
    format_params,
    format_value,
    markdown_table,
    metric_title,
)
from zoo_rank.metrics import METRICS
from zoo_rank.stats import PERMUTATION_BELOW

_PROBE_TEXT = {
    "logistic": "multinomial logistic regression with L-BFGS, the paper's protocol",
    "ridge": "closed-form ridge regression on one-hot targets, a quick stand-in for the paper's logistic probe",
}
#: Conditions never shown in the conditions table (notes have their own lines) or never per model.
_NOT_PER_MODEL = {"notes", "versions"}


def render_markdown(board: Leaderboard) -> str:
    """The board as a markdown page: mode, conditions, ranked table, column legend, correlations, recommendation."""
    cond = board.conditions()
    per_model = [k for k, v in cond.items() if isinstance(v, dict) and k not in _NOT_PER_MODEL]
    lines = [
        *_head(board),
        *_conditions(board, cond, per_model),
        *_notes(board),
        *_ranking(board),
        *_per_model(board, cond, per_model),
        *_legend(board),
        *_correlations(board),
        "",
        board.recommendation(),
        "",
    ]
    return "\n".join(lines)


def _head(board: Leaderboard) -> list[str]:
    s = board.sign(board.primary)
    return [
        f"# zoo_rank leaderboard: {board.name}",
        "",
        f"**Mode: {board.mode}** — {MODE_TEXT[board.mode]}.",
        f"Sorted by **{metric_title(board.primary)}** ({'higher' if s > 0 else 'lower'} first, {arrow(s)})"
        + (f": {board.sort_note}." if board.sort_note else "."),
    ]


def _conditions(board: Leaderboard, cond: dict[str, Any], per_model: list[str]) -> list[str]:
    """The conditions table; conditions that differ between models point to the per-model table."""
    rows = [["mode", board.mode]]
    for k, v in cond.items():
        if k != "notes":
            text = "per model, see below the ranking" if k in per_model else format_condition(v)
            rows.append([k.replace("_", " "), text])
    if board.command:
        rows.append(["command", f"`{board.command}`"])
    rows.append(["built", board.created])
    return ["", *markdown_table(["condition", "value"], rows)]


def _notes(board: Leaderboard) -> list[str]:
    notes = board.notes()
    return [""] + [f"> **Note:** {n}  " for n in notes] if notes else []


def _probe_columns(board: Leaderboard) -> list[tuple[str, str]]:
    """(column, title) of the check columns: top-1 and mean per class of each probe dataset, MLOG."""
    cols = []
    for d in board.probe_datasets:
        cols += [
            (f"probe_top1:{d}", f"probe top-1 {d} ↑"),
            (f"probe_mean_per_class:{d}", f"probe mean/class {d} ↑"),
        ]
    if "mlog" in board.columns():
        cols.append(("mlog", "MLOG ↑"))
    return cols


def _ranking(board: Leaderboard) -> list[str]:
    """The ranked table: rank, model, size, one column per metric (the sort metric in bold), the checks, notes."""
    probe_cols = _probe_columns(board)
    any_note = any(r.control or r.error or r.probe_errors() or r.undefined for r in board.results)
    metric_heads = [f"{metric_title(m)} {arrow(board.sign(m))}" for m in board.metrics]
    metric_heads = [
        f"**{h}**" if m == board.primary else h for m, h in zip(board.metrics, metric_heads, strict=True)
    ]
    header = ["rank", "model", "params", "dim", *metric_heads, *(t for _, t in probe_cols)] + [
        "note"
    ] * any_note
    align = "ll" + "r" * (len(header) - 2 - any_note) + "l" * any_note
    ranks = board.ranks()
    rows = []
    for r in board.ranked():
        rank = ranks[id(r)]
        cells = [
            format_value(rank) if rank is not None else "✗" if r.error else "—",
            f"`{r.label}`",
            format_params(r.n_params),
            format_value(r.feature_dim),
            *(regime.cell(r, m, format_value) for m in board.metrics),
            *(format_value(r.probe_value(c)) for c, _ in probe_cols),
        ]
        rows.append(cells + [_row_note(r)] * any_note)
    return ["", *markdown_table(header, rows, align)]


def _row_note(r: RunResult) -> str:
    """The note cell of a row: control, error, failed probes, why a cell is N/A (pipes escaped)."""
    note = ["control (random init)"] if r.control else []
    if r.error:
        note.append("error: " + r.error)
    note += [f"probe on {d} failed: {e}" for d, e in r.probe_errors().items()]
    note += regime.undefined_notes(r, metric_title)
    return "; ".join(n.replace("|", "\\|").replace("\n", " ") for n in note)


def _per_model(board: Leaderboard, cond: dict[str, Any], per_model: list[str]) -> list[str]:
    """The conditions that differ between models, one row per model."""
    if not per_model:
        return []
    header = ["model", *(k.replace("_", " ") for k in per_model)]
    rows = [
        [f"`{r.label}`", *(format_condition(cond[k].get(r.label, "—")) for k in per_model)]
        for r in board.ranked()
    ]
    return ["", "Per-model conditions:", "", *markdown_table(header, rows)]


def _legend(board: Leaderboard) -> list[str]:
    """'Columns:': what each column of the ranked table is."""
    lines = ["", "Columns:", ""]
    lines.append("- **rank**: position by the sort metric in this mode (✗: the run failed, see note).")
    lines.append(
        "- **params**: parameters of the backbone; **dim**: width of the penultimate (pre-logits) features that are scored."
    )
    for m in board.metrics:
        info, sign = METRICS[m], board.sign(m)
        lines.append(
            f"- **{metric_title(m)} {arrow(sign)}** (`{m}`): {info.description.rstrip('.')}. Higher means {info.higher_means}; "
            f"in {board.mode} mode a {'higher' if sign > 0 else 'lower'} value predicts better transfer. "
            f"{info.citation.rstrip('.')}."
        )
    lines += regime.legend_lines(board.ranked(), board.metrics)
    lines += [_probe_legend(board, d) for d in board.probe_datasets]
    if "mlog" in board.columns():
        lines.append(
            "- **MLOG**: mean log-odds of downstream accuracy relative to pretraining accuracy (paper eq. 6)."
        )
    return lines


def _probe_legend(board: Leaderboard, d: str) -> str:
    """The legend bullet of probe dataset `d`: which probe, trained and tested on what."""
    p = next((p for r in board.results for p in r.probes if p.get("dataset") == d and not p.get("error")), {})
    return (
        f"- **probe top-1 / mean/class {d}**: top-1 and mean per-class accuracy of a linear probe on the frozen "
        f"features ({_PROBE_TEXT.get(p.get('method', 'logistic'), p.get('method'))}; L2 strength chosen from 97 "
        f"values on a validation split of train), trained on {d} {p.get('train_split', 'train')} "
        f"({format_value(p.get('n_train'))} images), tested on {d} {p.get('split', 'test')} ({format_value(p.get('n_test'))} images). "
        "This is the check the scores are judged against."
    )


def _correlations(board: Leaderboard) -> list[str]:
    """Spearman lines, then (with a check) the statistics paragraph and one table per view (with and
    without the random-init controls)."""
    views = [board.correlations()]
    if any(r.control for r in board.results):
        views.append(board.correlations(include_controls=False))
    lines = [""] + [correlation_line(board, c) + "  " for c in views]
    if "absent" not in views[0]:
        lines += ["", statistics_text(board, views[0]["n_models"])]
        for c in views:
            title = "All models" if c["include_controls"] else "Controls left out"
            lines += ["", f"{title} (n = {c['n_models']}):", "", *correlation_table(board, c)]
    return lines


def correlation_line(board: Leaderboard, corr: dict[str, Any] | None = None) -> str:
    """One markdown line: per metric, Spearman's ρ with the check, or why it is absent."""
    corr = board.correlations() if corr is None else corr
    if "absent" in corr:
        return f"**Rank correlation with the check:** absent — {corr['absent']}."
    who = "all models" if corr["include_controls"] else "controls left out"
    parts = []
    for m in board.metrics:
        stats = corr["metrics"][m]
        v = stats.get("spearman")
        p = (stats.get("p_value") or {}).get("spearman")
        parts.append(
            f"{metric_title(m)} {arrow(board.sign(m))} "
            + ("absent" if "absent" in stats else f"{v:+.2f}" if is_finite(v) else "undefined (ties)")
            + (f" (p = {format_p(p)})" if is_finite(p) else "")
        )
    return f"**Spearman ρ with {board.target_title()}** ({who}, n = {corr['n_models']}): " + " · ".join(parts)


def correlation_table(board: Leaderboard, corr: dict[str, Any]) -> list[str]:
    """Markdown table: per metric, every statistic of stats.rank_correlations (or why it is absent).

    Small boards (exact permutation p-values) show "ρ (p = ...)" for the tested statistics; larger ones
    the 95% bootstrap interval beside Spearman's ρ.
    """
    if "absent" in corr:
        return []
    tested = corr["n_models"] < PERMUTATION_BELOW
    p_head = " (p)" if tested else ""
    header = [
        "score",
        "Spearman ρ (one-sided exact p)" if tested else "Spearman ρ [95% BCa CI]",
        f"Kendall τ{p_head}",
        "weighted τ",
        f"Pearson r{p_head}",
        "top-1 regret",
    ]
    same = bool(board.equivalence_notes())
    rows = []
    for m in board.metrics:
        stats = corr["metrics"][m]
        head = f"{metric_title(m)} {arrow(board.sign(m))}" + (
            " (= VCI, see the note)" if same and m == "h_score" else ""
        )
        if "absent" in stats:
            rows.append([head, f"absent: {stats['absent']}", "", "", "", ""])
        else:
            rows.append([head, *(_statistic_cell(stats, k) for k, _ in CORRELATION_KEYS)])
    return markdown_table(header, rows, "lrrrrr")


def _statistic_cell(stats: dict[str, Any], key: str) -> str:
    """One statistic: '+0.80', with its interval (Spearman) and p-value where the board has them."""
    v = stats.get(key)
    if key == "regret":
        return f"{v:.3f}" if is_finite(v) else "—"
    text = f"{v:+.2f}" if is_finite(v) else "undefined (ties)"
    ci = (stats.get("ci") or {}).get(key)
    p = (stats.get("p_value") or {}).get(key)
    if key == "spearman" and ci and all(map(is_finite, ci)):
        text += f" [{ci[0]:+.2f}, {ci[1]:+.2f}]"
    if is_finite(p):
        text += f" (p = {format_p(p)})"
    return text


def statistics_text(board: Leaderboard, n_models: int) -> str:
    """The paragraph under the correlation tables: what the numbers are and how sure they can be."""
    head = (
        "Rank correlation of each score with the check, by stats.rank_correlations on the oriented score "
        "(sign × value, so +1 means the arrow orders the models exactly as the check does); top-1 regret is the "
        "check of the best model minus that of the model the score ranks first. "
    )
    if n_models < PERMUTATION_BELOW:
        smallest = 1 / math.factorial(n_models)
        return head + (
            f"With {n_models} models there are no intervals (a bootstrap over so few models only repeats them); p is "
            f"the exact one-sided permutation p-value (scipy.stats.permutation_test over all {math.factorial(n_models)} "
            f"orders): how often a random order of the models agrees with the check at least as well. The smallest "
            f"possible p here is {format_p(smallest)}, even for a perfect order."
        )
    return head + (
        f"The interval is a 95% BCa bootstrap over models (scipy.stats.bootstrap, {board.n_boot} resamples)."
    )
