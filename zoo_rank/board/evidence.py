"""What a board concludes: the rank correlations of each score with the check, the recommendation, and
the notes a reader needs to weigh them (shared notes of the runs, sample-size biases, VCI = H-score).

Functions of a `Leaderboard` (the board's methods of the same names call them); they read the board's
ranking and results and return plain values (dicts, lines) that the JSON and the markdown both show.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from zoo_rank.board import regime
from zoo_rank.board.result import RunResult, is_finite, tied
from zoo_rank.board.table import arrow, format_value, metric_title
from zoo_rank.stats import rank_correlations

if TYPE_CHECKING:  # model.py imports this module: the type only
    from zoo_rank.board.model import Leaderboard


def correlations(board: Leaderboard, *, include_controls: bool = True) -> dict[str, Any]:
    """Per metric: stats.rank_correlations of the oriented score (sign * value) with the target.

    Returns {"target", "n_models", "include_controls", "metrics": {name: {statistic: value} | {"absent": reason}}},
    or {"absent": reason} when the board has no target. Orientation makes +1 mean "the arrow's direction
    orders the models exactly as the check does" in either mode, and makes the top-1 regret refer to the
    model the board would recommend.
    """
    target = board.target
    if target is None:
        return {"absent": "no probe or MLOG result to check the scores against (run with --probe)"}
    # Board order, not input order: the same numbers in the same order give bit-identical statistics.
    rows = [r for r in board.ranked() if r.error is None and (include_controls or not r.control)]
    out: dict[str, Any] = {"target": target, "include_controls": include_controls, "metrics": {}}
    out["n_models"] = sum(is_finite(r.probe_value(target)) for r in rows)
    for m in board.metrics:
        pairs = [
            (float(r.metrics[m]), r.probe_value(target))
            for r in rows
            if is_finite(r.metrics.get(m, math.nan)) and is_finite(r.probe_value(target))
        ]
        if len(pairs) < 3:
            out["metrics"][m] = {
                "absent": f"only {len(pairs)} model(s) with both {m} and {board.target_title()}; "
                "a rank correlation needs at least 3"
            }
            continue
        # The bootstrap costs ~0.1 s per metric; boards render the same numbers several times.
        key = json.dumps([m, board.mode, board.n_boot, pairs])
        if key not in board.correlation_cache:
            board.correlation_cache[key] = _correlate(
                [p[0] for p in pairs], [p[1] for p in pairs], board.sign(m), board.n_boot
            )
        out["metrics"][m] = board.correlation_cache[key]
    return out


def _correlate(scores: Sequence[float], targets: Sequence[float], sign: int, n_boot: int) -> dict[str, Any]:
    """stats.rank_correlations of sign * scores with targets, as a JSON-ready dict (with bootstrap CIs)."""
    return rank_correlations(list(scores), list(targets), sign=sign, n_boot=n_boot, seed=0).to_dict()


def recommendation(board: Leaderboard) -> str:
    """One line: the model to pick, and whether the check agrees."""
    primary = board.primary
    ranked = [r for r in board.ranked() if r.error is None and is_finite(r.metrics.get(primary, math.nan))]
    candidates = [r for r in ranked if not r.control]
    if not candidates:
        if ranked:
            return (
                "No recommendation: every scored model is a control (random init); add candidate backbones."
            )
        return "No recommendation: no candidate model has a score (see the errors above)."
    best = candidates[0]
    ties = [r for r in candidates if tied(r.metrics[primary], best.metrics[primary])]
    title = f"{metric_title(primary)} {arrow(board.sign(primary))}"
    if len(ties) > 1:
        line = (
            f"Recommendation: none by {title} alone: {', '.join(r.label for r in ties)} tie at "
            f"{format_value(best.metrics[primary])} (see the notes; break the tie with another column)"
        )
    else:
        verb = "fine-tune" if board.mode == "target" else "transfer from"
        line = f"Recommendation: {verb} **{best.label}**, first by {title} in {board.mode} mode"
    line += _check_clause(board, candidates, best, is_tie=len(ties) > 1)
    controls = [r for r in ranked if r.control]
    if (
        controls
        and ranked.index(controls[0]) < ranked.index(best)
        and not tied(controls[0].metrics[primary], best.metrics[primary])
    ):
        line += f"; warning: the control {controls[0].label} ranks above it, so {metric_title(primary)} is not informative here"
    return line + "."


def _check_clause(board: Leaderboard, candidates: list[RunResult], best: RunResult, *, is_tie: bool) -> str:
    """'; the check agrees (...)' / '; the check prefers X (...)', or '' without a check value."""
    target = board.target
    checked = [r for r in candidates if is_finite(r.probe_value(target))] if target is not None else []
    if not checked:
        return ""
    top = max(checked, key=lambda r: r.probe_value(target))
    name = board.target_title()
    if is_tie:
        return f"; the check prefers {top.label} ({name} {format_value(top.probe_value(target))})"
    if top is best:
        return f"; the check agrees ({name} {format_value(best.probe_value(target))} is the best)"
    return (
        f"; the check prefers {top.label} ({name} {format_value(top.probe_value(target))} vs "
        f"{format_value(best.probe_value(target))})"
    )


def notes(board: Leaderboard) -> list[str]:
    """Every run's notes (data fallback, sample-size warnings), once each; a note that only some runs
    carry names them. Then what biases a comparison (regime) and the VCI = H-score note."""
    holders: dict[str, list[str]] = {}
    for r in board.ranked():
        run_notes = r.conditions.get("notes") or []
        for n in [run_notes] if isinstance(run_notes, str) else run_notes:
            holders.setdefault(str(n), []).append(r.label)
    n_runs = len(board.results)
    shared = [n if len(who) == n_runs else f"{n} ({', '.join(who)})" for n, who in holders.items()]
    return shared + regime.comparison_notes(board.ranked(), board.metrics) + equivalence_notes(board)


def equivalence_notes(board: Leaderboard) -> list[str]:
    """Columns that are one piece of evidence, not two: with min(p, K-1) = K-1 for every model,
    VCI = 1 - H-score / (K-1) (both are Tr[pinv(Sigma_T) Sigma_B], eq. 3 of the paper), so the two
    order the models identically (in opposite directions)."""
    if not {"vci", "h_score"} <= set(board.metrics):
        return []
    scored = [r for r in board.results if r.error is None]
    classes = {r.conditions.get("classes") for r in scored}
    if not scored or len(classes) != 1 or not isinstance(next(iter(classes)), int):
        return []
    k = next(iter(classes))
    if not all(isinstance(r.feature_dim, int) and r.feature_dim >= k - 1 for r in scored):
        return []
    # The identity as computed, not only as defined (a metric left undefined, NaN, is no exception).
    pairs = [(r.metrics.get("vci"), r.metrics.get("h_score")) for r in scored]
    if not all(
        math.isclose(v, 1 - h / (k - 1), abs_tol=1e-6) for v, h in pairs if is_finite(v) and is_finite(h)
    ):
        return []
    return [
        f"VCI = 1 − H-score/(K − 1) on this board: every model has at least K − 1 = {k - 1} feature "
        f"dimensions, so rank(Σ_B) = K − 1 for all and VCI and H-score order the models identically; they "
        "are one piece of evidence, not two."
    ]
