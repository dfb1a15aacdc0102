"""How well does a transferability score predict real transfer? MLOG, rank correlations, regret.

- `mlog`: the paper's transfer measure, eq. (6) of Xu & Liu (ICML 2023): the mean over downstream sets
  of the log-odds of downstream accuracy minus the log-odds of pretraining accuracy.
- `rank_correlations`: Pearson, Spearman, Kendall and weighted Kendall tau (exactly
  `scipy.stats.weightedtau` with its defaults, the call LogME, SFDA and most of the transferability
  literature report), top-1 selection regret, and how sure they are: exact permutation p-values below
  10 models, BCa bootstrap intervals over models from 10 on (zoo_rank.stats.significance).

Sign convention: every function correlates `sign * scores` with `targets`, where a higher target is
better transfer. Pass `sign=-1` for a score where lower predicts better transfer (e.g. VCI scored on
the target data), or take it from the metric registry: `metric_sign(name, mode)`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import special
from scipy import stats as sps

from zoo_rank._validation import ZooRankError
from zoo_rank.stats.significance import (
    PERMUTATION_BELOW,
    bootstrap_intervals,
    permutation_p_values,
    top1_regret,
)

STATISTICS = ("pearson", "spearman", "kendall", "weighted_tau")


# ---- MLOG --------------------------------------------------------------------------------------


def _as_fraction_array(acc: Any, name: str, clip: float | None) -> np.ndarray:
    arr = np.asarray(list(acc.values()) if isinstance(acc, dict) else acc, dtype=np.float64)
    if arr.size == 0:
        raise ZooRankError(f"{name} is empty; pass at least one accuracy.")
    if not np.all(np.isfinite(arr)):
        raise ZooRankError(f"{name} contains NaN or Inf ({arr.ravel()[:5]}...); pass finite accuracies.")
    if np.any(arr < 0) or np.any(arr > 1):
        hint = " (they look like percentages: divide by 100)" if np.all((arr >= 0) & (arr <= 100)) else ""
        raise ZooRankError(
            f"{name} must be fractions in (0, 1), got values in [{arr.min()}, {arr.max()}]{hint}."
        )
    if clip is not None:
        if not 0 < clip < 0.5:
            raise ZooRankError(
                f"clip={clip} must lie in (0, 0.5); e.g. clip=1/(2 * n_test) is the usual choice."
            )
        return np.clip(arr, clip, 1.0 - clip)
    if np.any((arr == 0) | (arr == 1)):
        raise ZooRankError(
            f"{name} contains accuracies of exactly 0 or 1, whose log-odds are infinite; "
            "pass clip=eps (e.g. 1/(2 * n_test)) to clip them into [eps, 1 - eps]."
        )
    return arr


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), elementwise (scipy.special.logit)."""
    return special.logit(p)


def mlog(downstream_acc: Any, pretrain_acc: Any, *, clip: float | None = None) -> Any:
    """MLOG, eq. (6) of Xu & Liu (2023): mean_d [logit(acc_d) - logit(pretrain_acc)].

    downstream_acc: (D,) accuracies of one model on D downstream sets (array or {dataset: acc}), or
    (M, D) for M models; pretrain_acc: scalar, or (M,). Accuracies are fractions in (0, 1). Exactly 0 or 1
    raise, unless `clip` = eps is given: then every accuracy is clipped into [eps, 1 - eps] first.
    Returns a float, or (M,) array.
    """
    down = _as_fraction_array(downstream_acc, "downstream_acc", clip)
    pre = _as_fraction_array(pretrain_acc, "pretrain_acc", clip)
    if down.ndim == 1:
        if pre.size != 1:
            raise ZooRankError(f"one model's downstream_acc (D,) needs one pretrain_acc, got {pre.size}.")
        return float(np.mean(logit(down)) - logit(pre.reshape(())))
    if down.ndim != 2 or pre.shape != (down.shape[0],):
        raise ZooRankError(
            f"expected downstream_acc (M, D) with pretrain_acc (M,), got {down.shape} and {pre.shape}; "
            "one row of downstream accuracies per model."
        )
    return logit(down).mean(axis=1) - logit(pre)


# ---- rank correlations -------------------------------------------------------------------------


@dataclass
class Correlations:
    """Agreement between oriented scores (sign * scores) and targets over n_models models.

    Below `PERMUTATION_BELOW` models, `p_value[stat]` is the exact one-sided permutation p-value of
    pearson, spearman and kendall, and there are no intervals (a bootstrap over a handful of models
    only repeats them). From `PERMUTATION_BELOW` models on, `ci[stat]` is the BCa bootstrap interval at
    level `ci_level` (scipy.stats.bootstrap, resampling models; NaN where a resample is undefined).
    `uncertainty` says which of the two the numbers carry. `regret` is in the units of the targets.
    """

    pearson: float
    spearman: float
    kendall: float
    weighted_tau: float
    regret: float
    n_models: int
    sign: int
    ci_level: float
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    p_value: dict[str, float] = field(default_factory=dict)
    uncertainty: str = ""  # "exact permutation p-values (one-sided)" | "BCa bootstrap intervals" | ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = {k: [float(v[0]), float(v[1])] for k, v in self.ci.items()}
        return out


def _check_scores_targets(scores: Any, targets: Any, min_models: int) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    t = np.asarray(targets, dtype=np.float64).reshape(-1)
    if s.shape != t.shape:
        raise ZooRankError(
            f"got {s.size} scores but {t.size} targets; pass one score and one target per model."
        )
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(t))):
        raise ZooRankError("scores or targets contain NaN or Inf; drop those models or fix the inputs.")
    if s.size < min_models:
        raise ZooRankError(
            f"got {s.size} model(s); rank correlations need at least {min_models} "
            "(with two models every statistic is +1 or -1 and says nothing): add more models."
        )
    return s, t


def selection_regret(scores: Any, targets: Any, *, sign: int = 1) -> float:
    """Target of the best model minus target of the model that `sign * scores` ranks first.

    Ties among the top scores are broken pessimistically (the worst target among them): a score that
    cannot tell models apart gets no credit for a lucky order.
    """
    s, t = _check_scores_targets(scores, targets, 1)
    return float(top1_regret(sign * s, t))


def _statistics(s: np.ndarray, t: np.ndarray) -> dict[str, float]:
    if np.all(s == s[0]) or np.all(t == t[0]):
        return dict.fromkeys(STATISTICS, math.nan)
    return {
        "pearson": float(sps.pearsonr(s, t)[0]),
        "spearman": float(sps.spearmanr(s, t)[0]),
        "kendall": float(sps.kendalltau(s, t)[0]),
        # Exactly the literature's call: defaults (rank=True, hyperbolic weigher, additive).
        "weighted_tau": float(sps.weightedtau(s, t)[0]),
    }


def rank_correlations(
    scores: Any,
    targets: Any,
    *,
    sign: int = 1,
    n_boot: int = 1000,
    ci_level: float = 0.95,
    seed: int = 0,
) -> Correlations:
    """Correlate `sign * scores` (M,) with `targets` (M,) over M >= 3 models.

    sign: +1 when a higher score should predict a higher target, -1 when lower should. Below
    PERMUTATION_BELOW models: exact permutation p-values, no intervals (zoo_rank.stats.significance). From there
    on: BCa bootstrap intervals from `n_boot` resamples of the models (seeded by `seed`; n_boot=0 skips).
    """
    if sign not in (1, -1):
        raise ZooRankError(f"sign must be +1 or -1, got {sign!r}; use -1 for a score where lower is better.")
    if not 0 < ci_level < 1:
        raise ZooRankError(f"ci_level={ci_level} must lie in (0, 1), e.g. 0.95.")
    s, t = _check_scores_targets(scores, targets, 3)
    oriented = sign * s
    point = _statistics(oriented, t)
    ci: dict[str, tuple[float, float]] = {}
    p_value: dict[str, float] = {}
    uncertainty = ""
    if len(s) < PERMUTATION_BELOW:
        if math.isfinite(point["spearman"]):
            p_value = permutation_p_values(oriented, t)
            uncertainty = "exact permutation p-values (one-sided)"
    elif n_boot > 0:
        ci = bootstrap_intervals(oriented, t, n_boot=n_boot, ci_level=ci_level, seed=seed)
        uncertainty = "BCa bootstrap intervals"
    return Correlations(
        **point,
        regret=selection_regret(oriented, t),
        n_models=len(s),
        sign=sign,
        ci_level=ci_level,
        ci=ci,
        p_value=p_value,
        uncertainty=uncertainty,
    )
