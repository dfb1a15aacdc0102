"""Shrinkage estimators of the total covariance for VCI and H-score below N = 5p.

Below N = p + 1 the sample covariance Sigma_T is singular, every feature set separates its classes inside
its own span and Tr[pinv(Sigma_T) Sigma_B] = min(p, K - 1) for any features: VCI = 0, H-score = K - 1.
Shrinking towards a scaled identity (Ledoit & Wolf 2004; Chen et al. 2010, "OAS"),

    Sigma_a = (1 - a) Sigma_T + a (Tr Sigma_T / p) I,

gives the regularized H-score of Ibrahim, Ponomareva & Dong ("Newer is not always better: Rethinking
transferability metrics, their peculiarities, stability and performance", ECML-PKDD 2022),

    H_a = Tr[Sigma_a^-1 (1 - a) Sigma_B],       VCI_a = 1 - H_a / min(p, K - 1).

The intensity a follows scikit-learn's `ledoit_wolf_shrinkage` and `OAS` exactly. Both need only
Tr Sigma_T and ||Sigma_T||_F^2 (from `ClassStats.second`), and Ledoit-Wolf also sum_i ||h_i - mu_G||^4,
which `ClassStats` streams as the fourth moment about its shift (`covariances.fourth_moments`): the intensity
of a feature set streamed in batches or shards equals the library's on all of it at once.
"""

from __future__ import annotations

import math

import numpy as np

from zoo_rank._validation import ZooRankError
from zoo_rank.metrics.covariances import fourth_moments
from zoo_rank.metrics.stats import ClassStats

#: Named intensities; a float in [0, 1] is also accepted wherever `shrinkage=` is.
METHODS = {"ledoit-wolf": "Ledoit-Wolf", "oas": "OAS"}
Shrinkage = str | float | None


class UndefinedMetricError(ZooRankError):
    """The metric has no value on these features (too few samples, no variance); the message says why."""


def _spectrum_moments(stats: ClassStats) -> tuple[float, float]:
    """(Tr Sigma_T, ||Sigma_T||_F^2) of the biased total covariance."""

    def make() -> tuple[float, float]:
        cov = stats.total_cov()
        return float(np.trace(cov)), float(np.einsum("ij,ij->", cov, cov))

    return stats._cached("spectrum_moments", make)


def ledoit_wolf_intensity(stats: ClassStats) -> float:
    """scikit-learn's `ledoit_wolf_shrinkage(X)` from the streamed moments (Ledoit & Wolf 2004, Lemma 3.2).

    With S = Sigma_T, m = Tr S / p and the centred fourth moment Q = sum_i ||h_i - mu_G||^4:
        beta  = (Q / N - ||S||_F^2) / (p N),   delta = ||S - m I||_F^2 / p,   a = min(beta, delta) / delta.
    """
    n, p = stats.n_samples, stats.dim
    if p == 1:
        return 0.0  # as the library: one feature has nothing to shrink towards
    trace, frob2 = _spectrum_moments(stats)
    centre = stats.sums.sum(dim=0) / n  # the global mean in shifted coordinates
    quartic = float(fourth_moments(stats, centre)[0])
    beta = (quartic / n - frob2) / (p * n)
    delta = (frob2 - trace**2 / p) / p
    if delta <= 0:
        return 1.0  # Sigma_T is already a multiple of I: shrinking changes nothing
    beta = min(beta, delta)
    return 0.0 if beta <= 0 else beta / delta


def oas_intensity(stats: ClassStats) -> float:
    """scikit-learn's `OAS().shrinkage_` (Chen et al. 2010, eq. 23 as implemented by the library):
    a = min(1, (alpha + m^2) / ((N + 1)(alpha - m^2 / p))), alpha = ||S||_F^2 / p^2, m = Tr S / p."""
    n, p = stats.n_samples, stats.dim
    if p == 1:
        return 0.0
    trace, frob2 = _spectrum_moments(stats)
    alpha, mu2 = frob2 / p**2, (trace / p) ** 2
    den = (n + 1) * (alpha - mu2 / p)
    return 1.0 if den == 0 else min((alpha + mu2) / den, 1.0)


def intensity(stats: ClassStats, shrinkage: Shrinkage) -> float:
    """The shrinkage intensity a in [0, 1] that `shrinkage` names: None -> 0 (no shrinkage),
    "ledoit-wolf" / "oas" -> the library's formula on these statistics, a float -> itself."""
    if shrinkage is None:
        return 0.0
    if isinstance(shrinkage, str):
        if shrinkage == "ledoit-wolf":
            return stats._cached("lw_intensity", lambda: ledoit_wolf_intensity(stats))
        if shrinkage == "oas":
            return stats._cached("oas_intensity", lambda: oas_intensity(stats))
        raise ZooRankError(
            f"shrinkage {shrinkage!r} is not known; expected None, {', '.join(map(repr, METHODS))} or a float in [0, 1]."
        )
    a = float(shrinkage)
    if not 0.0 <= a <= 1.0 or math.isnan(a):
        raise ZooRankError(
            f"shrinkage must be in [0, 1], got {shrinkage!r}; 0 is no shrinkage, 1 keeps only the trace."
        )
    return a


def describe(shrinkage: Shrinkage, a: float) -> str:
    """'Ledoit-Wolf shrinkage, a = 0.213' / 'shrinkage a = 0.1' / 'plain (pinv of Sigma_T)'."""
    if shrinkage is None:
        return "plain (pinv of Sigma_T)"
    name = METHODS.get(shrinkage) if isinstance(shrinkage, str) else None
    return f"{name} shrinkage, a = {a:.3g}" if name else f"shrinkage a = {a:.3g}"


def shrunk_trace(stats: ClassStats, a: float, rcond: float) -> float:
    """H_a = (1 - a) Tr[Sigma_a^-1 Sigma_B] through Sigma_T's eigendecomposition (shared with plain VCI).

    Sigma_T = V diag(l) V^T gives Sigma_a = V diag((1 - a) l + a m) V^T, so with A the (K, p) rows
    sqrt(w_k)(mu_k - mu_G): H_a = (1 - a) ||A V diag(e)^(-1/2)||_F^2, e = (1 - a) l + a m. Eigenvalues of
    Sigma_a under rcond * max are dropped as in the plain pinv; at a = 0 this is `probe_trace`.
    """
    evals, evecs = stats.total_eigh()
    e = (1.0 - a) * evals + a * evals.sum() / stats.dim
    keep = e > rcond * max(e[-1], 0.0)
    if not keep.any():
        return 0.0
    projected = stats.mean_deviations() @ evecs[:, keep]
    return float((1.0 - a) * np.sum(projected**2 / e[keep]))


def require_spread(stats: ClassStats, metric: str) -> None:
    """Refuse constant features (a dead backbone, all-zero features): no spread, no collapse to measure.

    Constant features come out of the shifted products as exact zeros, or as a rounding of the mean
    (a few ulps of the largest feature) when the shift itself was rounded: both count as no spread.
    """
    trace, _ = _spectrum_moments(stats)
    scale = float(np.abs(stats.global_mean()).max())
    eps = float(np.finfo(np.float64 if stats.exact else np.float32).eps)
    if trace <= stats.dim * (64 * eps * scale) ** 2:
        raise UndefinedMetricError(
            f"{metric} is undefined: the features are constant across all {stats.n_samples} samples "
            f"(total variance {trace:.3g}; a dead backbone or all-zero features), so there is no spread to compare; "
            "check the model's weights and the layer the features come from."
        )


def require_samples(stats: ClassStats, metric: str, lw_name: str, a: float) -> None:
    """Refuse the unshrunk estimator where it carries no information: at N <= p + 1 Sigma_T is singular and
    Tr[pinv(Sigma_T) Sigma_B] = min(p, K - 1) for every feature set (VCI = 0, H-score = K - 1)."""
    n, p = stats.n_samples, stats.dim
    if a == 0.0 and n <= p + 1:
        raise UndefinedMetricError(
            f"{metric} is undefined at N={n} samples of p={p} features (N <= p+1: the total covariance is "
            f'singular and every feature set scores the same); use shrinkage (shrinkage="ledoit-wolf", the '
            f"{lw_name} metric) or more than {p + 1} samples."
        )
