"""What a board says about the sample-size regime of its covariance-based scores (VCI, H-score).

With N scored samples of p-dimensional features, the plain estimators (pinv of Sigma_T) have no value at
N <= p + 1 (metrics/shrinkage.py: every feature set scores the same) and are biased towards full collapse
up to about N = 5p, the more the larger p / N. So a board

* shows an undefined cell as N/A with its reason (never a rank from rounding noise),
* marks plain cells between p + 1 and 5p,
* says per column which estimator was used, and N / p per model,
* names what biases a comparison: models of different width p, or scored on different N,
* sorts by a score that is defined: in target mode the Ledoit-Wolf variant when N < 5p, and never by a
  column that is undefined for every model (it falls back, and says so).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from zoo_rank.board.result import RunResult
from zoo_rank.metrics import METRICS
from zoo_rank.metrics.collapse import MIN_SAMPLES_PER_DIM

#: Marks a plain VCI / H-score cell scored at p + 1 < N < 5p.
BIASED_MARK = "*"
#: The shrinkage variant that stands in for each plain covariance-based score.
SHRUNK = {"vci": "vci_lw", "h_score": "h_score_lw"}


def samples_and_width(result: RunResult) -> tuple[int | None, int | None]:
    """(N, p): the scored images and the feature width of one run (None where the run did not get there)."""
    n = result.conditions.get("images")
    return (int(n) if isinstance(n, (int, float)) else None), result.feature_dim


def _is_plain_covariance(metric: str) -> bool:
    info = METRICS.get(metric)
    return bool(info and info.estimates_covariance and info.shrinkage is None)


def below_5p(result: RunResult) -> bool:
    n, p = samples_and_width(result)
    return n is not None and p is not None and n < MIN_SAMPLES_PER_DIM * p


def cell_mark(result: RunResult, metric: str) -> str:
    """BIASED_MARK for a defined plain VCI / H-score value scored at p + 1 < N < 5p, else ''."""
    n, p = samples_and_width(result)
    value = result.metrics.get(metric, math.nan)
    if not (_is_plain_covariance(metric) and n is not None and p is not None and math.isfinite(value)):
        return ""
    return BIASED_MARK if p + 1 < n < MIN_SAMPLES_PER_DIM * p else ""


def choose_primary(
    results: Sequence[RunResult], metrics: Sequence[str], mode: str, requested: str | None, default: str
) -> tuple[str, str]:
    """(sort metric, a sentence on why, '' when it is simply the requested or default one).

    Target mode sorts by the Ledoit-Wolf variant of the default score when any model was scored below
    N = 5p; a sort metric that is undefined for every model falls back to its shrinkage variant, else to
    the first metric with a value.
    """
    ok = [r for r in results if r.error is None]
    primary = requested or (default if default in metrics else metrics[0])
    note = ""
    shrunk = SHRUNK.get(primary)
    if requested is None and mode == "target" and shrunk in metrics and any(below_5p(r) for r in ok):
        n_p = sorted({f"{n / p:.2g}" for r in ok if below_5p(r) for n, p in [samples_and_width(r)]})
        note = (
            f"sorted by {shrunk}, not {primary}: target mode uses the Ledoit-Wolf shrinkage estimator when "
            f"N < {MIN_SAMPLES_PER_DIM}p (N / p = {', '.join(n_p)})"
        )
        primary = shrunk

    def defined(m: str) -> bool:
        return any(math.isfinite(r.metrics.get(m, math.nan)) for r in ok)

    if ok and not defined(primary):
        fallback = next(
            (m for m in [SHRUNK.get(primary), *metrics] if m in metrics and m != primary and defined(m)), None
        )
        reason = next((r.undefined[primary] for r in ok if primary in r.undefined), "no model has a value")
        if fallback is not None:
            note = (
                f"not sorted by {primary}, undefined for every model ({reason}); sorted by {fallback} instead"
            )
            primary = fallback
    return primary, note


def comparison_notes(results: Sequence[RunResult], metrics: Sequence[str]) -> list[str]:
    """What biases a comparison of plain VCI / H-score between the models of this board, if anything."""
    plain = [m for m in metrics if _is_plain_covariance(m)]
    rows = [r for r in results if r.error is None and any(cell_mark(r, m) for m in plain)]
    if not plain or not rows:
        return []
    widths = sorted({samples_and_width(r)[1] for r in rows})
    sizes = sorted({samples_and_width(r)[0] for r in rows})
    what = []
    if len(widths) > 1:
        what.append(f"different width p ({', '.join(map(str, widths))})")
    if len(sizes) > 1:
        what.append(f"different N ({', '.join(map(str, sizes))})")
    if not what:
        return []
    return [
        f"{', '.join(plain)} compare models of {' and of '.join(what)} below N = {MIN_SAMPLES_PER_DIM}p: their "
        "bias towards 0 grows with p / N, so part of the differences between these models is that bias; "
        f"read {', '.join(SHRUNK[m] for m in plain if m in SHRUNK)} (shrinkage) or score equal N on models of equal p"
    ]


def _estimator_text(results: Sequence[RunResult], metric: str) -> str | None:
    texts = {r.label: r.estimators[metric] for r in results if metric in r.estimators}
    if not texts:
        return None
    distinct = set(texts.values())
    if len(distinct) == 1:
        return distinct.pop()
    heads = {t.partition(", a = ")[0] for t in distinct}
    if len(heads) == 1 and all(", a = " in t for t in distinct):
        values = sorted(float(t.partition(", a = ")[2]) for t in distinct)
        return f"{heads.pop()}, a from {values[0]:.3g} to {values[-1]:.3g} across models"
    return "; ".join(f"{label}: {text}" for label, text in texts.items())


def legend_lines(results: Sequence[RunResult], metrics: Sequence[str]) -> list[str]:
    """Markdown bullets: the estimator of each covariance-based column, N / p per model, the marks."""
    lines = []
    for m in metrics:
        text = _estimator_text(results, m)
        if text:
            lines.append(f"- estimator of `{m}`: {text}.")
    ok = [r for r in results if r.error is None and None not in samples_and_width(r)]
    if ok and any(METRICS.get(m) and METRICS[m].estimates_covariance for m in metrics):
        per = {f"{n / p:.3g} (N = {n}, p = {p})" for r in ok for n, p in [samples_and_width(r)]}
        text = (
            per.pop()
            if len(per) == 1
            else "; ".join(
                f"`{r.label}` {n / p:.3g} (N = {n}, p = {p})" for r in ok for n, p in [samples_and_width(r)]
            )
        )
        lines.append(
            f"- **N / p** (scored samples per feature dimension): {text}. At N <= p + 1 the plain VCI and "
            f"H-score are N/A (every feature set would score the same); {BIASED_MARK} marks a plain value "
            f"scored at p + 1 < N < {MIN_SAMPLES_PER_DIM}p, biased towards 0 the more the larger p / N."
        )
    return lines


def cell(result: RunResult, metric: str, fmt: Any) -> str:
    """A metric cell: the value (fmt), with BIASED_MARK where it applies, or 'N/A' when undefined."""
    if metric in result.undefined:
        return "N/A"
    return fmt(result.metrics.get(metric)) + cell_mark(result, metric)


def undefined_notes(result: RunResult, title: Any) -> list[str]:
    """Note-column entries: why each N/A cell of this row has no value, one entry per distinct reason
    ('VCI, H-score N/A: undefined: the features are constant ...' for a dead backbone)."""
    grouped: dict[str, list[str]] = {}
    for m, reason in result.undefined.items():
        _, sep, rest = reason.partition(" is undefined")
        grouped.setdefault(f"undefined{rest}" if sep else reason, []).append(title(m))
    return [f"{', '.join(titles)} N/A: {reason}" for reason, titles in grouped.items()]
