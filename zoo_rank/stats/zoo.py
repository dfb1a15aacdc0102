"""How well a score ranks a zoo: the transferability literature's statistics over models x targets.

For one score and one target set, with s (M,) the score of every model times its direction (higher =
predicted better) and a (M,) the ground-truth accuracy (fine-tuned or linear probe):

- weighted Kendall tau, ``scipy.stats.weightedtau(s, a)`` (hyperbolic weights on the rank: agreement at
  the top of the ranking counts most; LogME, SFDA, NCTI, ETran report it);
- Pearson and Spearman correlations;
- top-1 regret: max(a) - a[argmax(s)], in accuracy (0 = the score's first pick is the best model), and
  whether that pick is within the tie band of the best (the seed spread: picks inside it are ties);
- a permutation p-value for the weighted tau (``scipy.stats.permutation_test``, one-sided "greater",
  pairings permuted; exact, over all M! pairings, when M! <= n_resamples, else 1999 random pairings).

``seed_spread`` turns repeated fine-tunings of the same cell with different seeds into one pooled
standard deviation; ``tie_band`` = 2 x that SD: two models closer than this are not told apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import scipy.stats

N_RESAMPLES = 1999  # ~0.2 s per (score, target): exact up to 6 models (720 pairings)


@dataclass(frozen=True)
class RankAgreement:
    n_models: int
    weighted_tau: float
    pearson: float
    spearman: float
    regret: float  # max(acc) - acc of the score's first pick
    pick_is_best: bool
    pick_within_ties: bool  # regret <= tie band
    p_value: float  # of the weighted tau, permutation test, one-sided
    exact: bool  # p-value over every permutation

    def to_dict(self) -> dict:
        return asdict(self)


def _wtau(s: np.ndarray, a: np.ndarray) -> float:
    return float(scipy.stats.weightedtau(s, a).statistic)


def rank_agreement(scores: np.ndarray, accuracy: np.ndarray, *, sign: int = 1, tie_band: float = 0.0,
                   seed: int = 0, n_resamples: int = N_RESAMPLES) -> RankAgreement:  # fmt: skip
    """Agreement of `scores` (M,) (times `sign`) with `accuracy` (M,); non-finite pairs are dropped."""
    s = sign * np.asarray(scores, dtype=np.float64)
    a = np.asarray(accuracy, dtype=np.float64)
    keep = np.isfinite(s) & np.isfinite(a)
    s, a = s[keep], a[keep]
    m = len(s)
    if m < 3 or np.ptp(a) == 0:
        nan = math.nan
        return RankAgreement(m, nan, nan, nan, nan, False, False, nan, False)
    constant = np.ptp(s) == 0
    regret = float(a.max() - a[np.argmax(s)])
    with np.errstate(invalid="ignore", divide="ignore"):
        pearson = math.nan if constant else float(scipy.stats.pearsonr(s, a).statistic)
        spearman = math.nan if constant else float(scipy.stats.spearmanr(s, a).statistic)
    tau = _wtau(s, a)
    if constant:
        p, exact = math.nan, False
    else:
        # One sample permuted (the accuracies): M! pairings, all of them when M! <= n_resamples.
        res = scipy.stats.permutation_test(
            (a,), lambda perm: _wtau(s, perm), permutation_type="pairings", n_resamples=n_resamples,
            alternative="greater", vectorized=False, rng=np.random.default_rng(seed),
        )  # fmt: skip
        p, exact = float(res.pvalue), math.factorial(m) <= n_resamples
    return RankAgreement(m, tau, pearson, spearman, regret, regret == 0.0, regret <= tie_band, p, exact)


def seed_spread(repeats: dict[tuple[str, str], list[float]]) -> dict[str, float]:
    """Pooled SD of repeated accuracies: {(model, target): [acc per seed]} -> sd, range, cells, runs.

    sd = sqrt(sum_c sum_r (a_cr - mean_c)^2 / sum_c (R_c - 1)), the within-cell SD pooled over cells.
    """
    sq, dof, ranges, runs = 0.0, 0, [], 0
    for values in repeats.values():
        v = np.asarray(values, dtype=np.float64)
        if len(v) < 2:
            continue
        sq += float(((v - v.mean()) ** 2).sum())
        dof += len(v) - 1
        ranges.append(float(np.ptp(v)))
        runs += len(v)
    if dof == 0:
        return {"sd": math.nan, "max_range": math.nan, "mean_range": math.nan, "cells": 0, "runs": 0}
    return {
        "sd": math.sqrt(sq / dof),
        "max_range": max(ranges),
        "mean_range": float(np.mean(ranges)),
        "cells": len(ranges),
        "runs": runs,
    }


def tie_band(spread: dict[str, float]) -> float:
    """Accuracy differences below 2 x the pooled seed SD count as ties (0 when unmeasured)."""
    sd = spread.get("sd", math.nan)
    return 0.0 if not math.isfinite(sd) else 2.0 * sd


def same_order(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b (M,) order the M models identically (strictly monotone increasing map)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    order = np.argsort(a, kind="stable")
    return bool(np.all(np.diff(b[order]) > 0) and np.all(np.diff(a[order]) > 0))
