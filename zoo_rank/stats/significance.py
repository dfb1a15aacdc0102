"""How sure is a correlation over a handful of models? Exact permutation p-values or bootstrap intervals.

A board ranks a few models. A percentile bootstrap over 4 models resamples at most 4^4 = 256 boards,
most of them with repeated models, and prints "+1.00 [+1.00, +1.00]" for any monotone board: an interval
that claims certainty from four numbers. So:

- below `PERMUTATION_BELOW` models: exact one-sided permutation p-values
  (`scipy.stats.permutation_test` over all M! pairings of scores with targets), no interval. The
  alternative is "greater": the oriented score (sign * value) was fixed before looking, so the question is
  whether it orders the models as the check does better than a random order would. The smallest possible
  p-value is 1/M! (4 models: 0.042; 3 models: 0.17);
- from `PERMUTATION_BELOW` models on: BCa intervals of `scipy.stats.bootstrap`, resampling models.

The statistics are the ones of `zoo_rank.stats.rank_correlations`: Pearson r, Spearman rho (Pearson of
average ranks) and Kendall tau-b (sum_ij sign(ds) sign(dt) / sqrt(sum sign(ds)^2 sum sign(dt)^2) over
pairs i < j), written here for a batch of resamples at once.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

#: Boards with fewer models get exact permutation p-values and no interval (9! = 362,880 orders, ~1 s).
PERMUTATION_BELOW = 10
#: Statistics with a permutation p-value (weighted tau and regret have no cheap batched form).
TESTED = ("pearson", "spearman", "kendall")
_BATCH = 40_320  # 8!: permutations per statistic call, bounding memory at 9 models
# The statistics handed to scipy's permutation_test / bootstrap are batched here because scipy's own are
# per call: kendalltau has no axis, and one call costs 0.73 ms, so 9! permutations would take ~270 s
# against 1.8 s for all three statistics batched (scipy 1.17, 2 CPU cores). pearsonr(axis=-1) is 50x slower
# on 8! permutations (0.78 s vs 0.015 s) and differs by 4e-16, which could move an exact p-value's ties.


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis of a, b (..., M); NaN where either is constant."""
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(-1) / den
    return np.where(den > 0, np.clip(r, -1.0, 1.0), math.nan)


def _kendall(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall tau-b along the last axis (ties counted as scipy.stats.kendalltau does); NaN if constant."""
    i, j = np.triu_indices(a.shape[-1], k=1)
    da = np.sign(a[..., j] - a[..., i])
    db = np.sign(b[..., j] - b[..., i])
    den = np.sqrt((da * da).sum(-1) * (db * db).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (da * db).sum(-1) / den
    return np.where(den > 0, tau, math.nan)


def permutation_p_values(scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Exact one-sided p-values P(stat(permuted scores, targets) >= observed) of each TESTED statistic.

    scores, targets: (M,) with M < PERMUTATION_BELOW (M! orders are enumerated). NaN for a statistic that
    is undefined (constant scores or targets).
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    if len(s) >= PERMUTATION_BELOW:
        raise ValueError(f"exact permutation tests enumerate M! orders; got M = {len(s)}")
    if np.ptp(s) == 0 or np.ptp(t) == 0:
        return dict.fromkeys(TESTED, math.nan)
    s_ranks, t_ranks = stats.rankdata(s), stats.rankdata(t)

    def statistics(order: np.ndarray, axis: int = -1) -> np.ndarray:
        """(..., 3) pearson, spearman, kendall of the scores taken in `order` (..., M) against the targets."""
        order = np.moveaxis(order, axis, -1).astype(np.intp)
        a = s[order]  # ranks of a permuted sample are the permuted ranks: no re-ranking per permutation
        return np.stack([_pearson(a, t), _pearson(s_ranks[order], t_ranks), _kendall(a, t)], axis=-1)

    # One sample (the model indices), permuted against fixed targets: M! pairings. Two samples would be
    # permuted both ways ((M!)^2 resamples).
    result = stats.permutation_test(
        (np.arange(len(s)),),
        statistics,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=np.inf,
        alternative="greater",
        batch=_BATCH,
    )
    return {k: float(p) for k, p in zip(TESTED, np.atleast_1d(result.pvalue), strict=True)}


def top1_regret(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Top-1 regret along the last axis of s, t (..., M): best target minus the worst target among the top
    scores (ties broken pessimistically); (...,)."""
    top = s == s.max(-1, keepdims=True)
    return t.max(-1) - np.where(top, t, np.inf).min(-1)


def _weighted_tau(s: np.ndarray, t: np.ndarray) -> float:
    if np.ptp(s) == 0 or np.ptp(t) == 0:
        return math.nan
    return float(stats.weightedtau(s, t)[0])


def bootstrap_intervals(
    scores: np.ndarray, targets: np.ndarray, *, n_boot: int, ci_level: float, seed: int
) -> dict[str, tuple[float, float]]:
    """BCa intervals (scipy.stats.bootstrap, models resampled in pairs) of every statistic and the regret.

    An interval is (NaN, NaN) when the statistic is undefined on some resample (heavy ties).
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    batched = {
        "pearson": lambda a, b: _pearson(a, b),
        "spearman": lambda a, b: _pearson(stats.rankdata(a, axis=-1), stats.rankdata(b, axis=-1)),
        "kendall": _kendall,
        "regret": top1_regret,
    }
    out: dict[str, tuple[float, float]] = {}
    for name in ("pearson", "spearman", "kendall", "weighted_tau", "regret"):
        vectorized = name in batched
        fn = batched.get(name, _weighted_tau)
        with warnings.catch_warnings():
            # DegenerateDataWarning: NaN resamples or a constant bootstrap distribution; said as NaN below.
            warnings.simplefilter("ignore")
            res = stats.bootstrap(
                (s, t),
                (lambda a, b, axis=-1, fn=fn: fn(np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1)))
                if vectorized
                else fn,
                paired=True,
                vectorized=vectorized,
                n_resamples=n_boot,
                confidence_level=ci_level,
                method="BCa",
                rng=np.random.default_rng(seed),
            )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        out[name] = (low, high) if math.isfinite(low) and math.isfinite(high) else (math.nan, math.nan)
    return out
