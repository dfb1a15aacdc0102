"""Variability-collapse metrics: VCI and the paper's baselines, pure functions of `ClassStats`.

Notation (Xu & Liu, ICML 2023, Sec. 3): features h_i in R^p of N samples in K classes, class means
mu_k, global mean mu_G, class frequencies w_k = n_k / N and

    Sigma_T = (1/N) sum_i (h_i - mu_G)(h_i - mu_G)^T
    Sigma_B = sum_k w_k (mu_k - mu_G)(mu_k - mu_G)^T          (the paper's (1/K) sum_k when balanced)
    Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T  so that Sigma_T = Sigma_B + Sigma_W
                                                              holds on imbalanced data too.

Each metric takes `(features, labels)` -- features (N, p), labels (N,) of any hashable values -- or a
`ClassStats` already accumulated, and returns a Python float.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np

from zoo_rank.metrics.shrinkage import (
    Shrinkage,
    UndefinedMetricError,
    describe,
    intensity,
    require_samples,
    require_spread,
    shrunk_trace,
)
from zoo_rank.metrics.stats import ClassStats, stats_of


class SampleSizeWarning(UserWarning):
    """VCI and H-score are biased towards full collapse when N is not much larger than p."""


# Below this many samples per feature dimension the bias of Tr[pinv(Sigma_T) Sigma_B] is visible.
MIN_SAMPLES_PER_DIM = 5


def _check_sample_size(stats: ClassStats, metric: str) -> None:
    n, p = stats.n_samples, stats.dim
    if n < MIN_SAMPLES_PER_DIM * p:
        warnings.warn(
            f"{metric} with N={n} samples of p={p} features is biased towards 0, the more the larger p/N is "
            f"(at N <= p+1 it has no value at all): models of different width p, or scored on different N, "
            f"differ by that bias alone. Use at least {MIN_SAMPLES_PER_DIM * p} samples "
            f"(~{math.ceil(MIN_SAMPLES_PER_DIM * p / max(stats.n_classes, 1))} per class), compare only models "
            "of equal width on equal N, or use shrinkage (vci_lw / h_score_lw).",
            SampleSizeWarning,
            stacklevel=3,
        )


def regularized_trace(
    stats: ClassStats, metric: str, shrinkage: Shrinkage, rcond: float | None
) -> tuple[float, float]:
    """(H, a): the trace (1 - a) Tr[Sigma_a^-1 Sigma_B] shared by VCI and H-score, and its intensity a.

    Warns below N = 5p without shrinkage (SampleSizeWarning), then refuses what has no value (constant
    features; no shrinkage at N <= p + 1) with UndefinedMetricError. a = 0 is the plain pinv trace.
    """
    stats._require()
    require_spread(stats, metric)
    if shrinkage is None:
        _check_sample_size(stats, metric)
    a = intensity(stats, shrinkage)
    require_samples(stats, metric, "vci_lw" if metric == "VCI" else "h_score_lw", a)
    rcond = stats.default_rcond() if rcond is None else rcond
    return shrunk_trace(stats, a, rcond), a


def probe_trace(stats: ClassStats, rcond: float | None = None) -> float:
    """Tr[pinv(Sigma_T) Sigma_B], the paper's linear-probe quantity (Thm 5.1), in float64.

    pinv through the symmetric eigendecomposition Sigma_T = V diag(l) V^T, keeping l > rcond * max(l).
    With A the (K, p) rows sqrt(w_k)(mu_k - mu_G), Sigma_B = A^T A and the trace is
    || A V_r diag(l_r)^(-1/2) ||_F^2: no p x p inverse is formed.
    """
    return shrunk_trace(stats, 0.0, stats.default_rcond() if rcond is None else rcond)


def between_rank(
    stats: ClassStats, rank: Literal["min", "numerical"] = "min", rcond: float | None = None
) -> int:
    """rank(Sigma_B): min(p, K - 1) by default, or its numerical rank (eigenvalues > rcond * max)."""
    if rank == "min":
        return min(stats.dim, stats.n_classes - 1)
    if rank == "numerical":
        rcond = stats.default_rcond() if rcond is None else rcond
        a = stats.mean_deviations()
        s = np.linalg.svd(a, compute_uv=False) ** 2
        return int(np.sum(s > rcond * s.max())) if s.size and s.max() > 0 else 0
    raise ValueError(f"rank must be 'min' or 'numerical', got {rank!r}")


def vci(
    features: Any,
    labels: Any | None = None,
    *,
    rank: Literal["min", "numerical"] = "min",
    rcond: float | None = None,
    shrinkage: Shrinkage = None,
) -> float:
    """Variability Collapse Index (paper eq. 5): 1 - Tr[pinv(Sigma_T) Sigma_B] / rank(Sigma_B).

    In [0, 1]; 0 is full collapse (every sample sits on its class mean). Invariant to any invertible
    linear map of the features. `rank` is min(p, K - 1) by default ("numerical" uses the numerical
    rank of Sigma_B); `rcond` is the relative eigenvalue cut-off of pinv(Sigma_T), by default 1e-10
    for float64 features and 1e-5 for float32 ones (see `ClassStats.default_rcond`).

    `shrinkage` ("ledoit-wolf", "oas" or a in [0, 1]) replaces Sigma_T by Sigma_a = (1 - a) Sigma_T +
    a (Tr Sigma_T / p) I: VCI_a = 1 - (1 - a) Tr[Sigma_a^-1 Sigma_B] / rank(Sigma_B), the regularized
    H-score of Ibrahim, Ponomareva & Dong (ECML-PKDD 2022) on the VCI scale (metrics/shrinkage.py).
    It has a value below N = p + 1, where the plain VCI raises UndefinedMetricError (a ValueError);
    the price: VCI_a stays invariant to rotations, shifts and isotropic scaling of the features, no
    longer to every invertible linear map (a map that is not a scaled rotation moves Sigma_T relative to
    the identity it is shrunk towards). VCI_a >= VCI.
    Constant features (no spread at all) raise UndefinedMetricError too.
    """
    stats = stats_of(features, labels)
    trace, _ = regularized_trace(stats, "VCI", shrinkage, rcond)
    r = between_rank(stats, rank, rcond)
    if r == 0:
        return 0.0
    value = 1.0 - trace / r
    # Rounding can push a fully collapsed or fully uncollapsed set a hair outside the range.
    return float(min(max(value, 0.0), 1.0))


def vci_lw(features: Any, labels: Any | None = None) -> float:
    """`vci(..., shrinkage="ledoit-wolf")`: VCI with Sigma_T shrunk by the Ledoit-Wolf intensity, for N < 5p."""
    return vci(features, labels, shrinkage="ledoit-wolf")


def estimator_text(stats: ClassStats, shrinkage: Shrinkage) -> str:
    """How VCI / H-score estimate Sigma_T on these statistics, for a board's column legend."""
    return describe(shrinkage, intensity(stats, shrinkage))


def fuzziness(features: Any, labels: Any | None = None, *, rcond: float | None = None) -> float:
    """Fuzziness Tr[pinv(Sigma_B) Sigma_W] (Papyan 2020, the NC1 metric).

    pinv(Sigma_B) keeps the top min(p, K - 1) eigen-directions of Sigma_B (paper Sec. 4.3), dropping
    any below rcond * max. Through the K x K Gram A A^T when K <= p (Sigma_B = A^T A), so only one
    small eigendecomposition is needed; not invariant to linear maps (paper Obs. 4.2).
    """
    stats = stats_of(features, labels)
    stats._require()
    require_spread(stats, "Fuzziness")
    rcond = stats.default_rcond() if rcond is None else rcond
    a = stats.mean_deviations()
    top = min(stats.dim, stats.n_classes - 1)
    if a.shape[0] <= a.shape[1]:
        s, u = np.linalg.eigh(a @ a.T)
        s, u = s[::-1][:top], u[:, ::-1][:, :top]
        keep = s > rcond * max(s[0], 0.0)
        s, directions = s[keep], (a.T @ u[:, keep]) / np.sqrt(s[keep])
    else:
        s, v = np.linalg.eigh(a.T @ a)
        s, v = s[::-1][:top], v[:, ::-1][:, :top]
        keep = s > rcond * max(s[0], 0.0)
        s, directions = s[keep], v[:, keep]
    if s.size == 0:
        raise UndefinedMetricError(
            "Fuzziness is undefined: the class means coincide (Sigma_B = 0), so there is no between-class "
            "spread to divide by; every class has the same mean feature vector."
        )
    # Each unit direction d_j has d_j^T Sigma_B d_j = s_j, so d_j^T Sigma_W d_j = d_j^T Sigma_T d_j - s_j:
    # Sigma_W itself (one more p x p x K product) is never formed.
    total = np.sum((stats.total_cov() @ directions) * directions, axis=0)
    return float(np.sum((total - s) / s))


def squared_distance(features: Any, labels: Any | None = None) -> float:
    """Squared Distance (Hui et al. 2022; the paper's eq. 4): Tr(Sigma_W) / Tr(Sigma_B).

    The paper writes sum_{k,i} ||h_{k,i} - mu_k||^2 / (N sum_k ||mu_k - mu_G||^2) with N the number of
    samples *per class*; on balanced data (n_k = N for every k) numerator and denominator are K N Tr(Sigma_W)
    and K N Tr(Sigma_B), so the ratio is exactly Tr(Sigma_W) / Tr(Sigma_B). On imbalanced data the same
    ratio is kept with this module's definitions: Sigma_W = (1/N_total) sum_i (h_i - mu_{y_i})(...)^T and
    Sigma_B weighted by class frequency w_k = n_k / N_total, as in VCI. Scale- and shift-invariant;
    lower means more collapsed; inf when every class mean coincides.
    """
    stats = stats_of(features, labels)
    stats._require()
    s = stats.numpy()
    # N_total Tr(Sigma_W) from the per-class sums of squared norms (shift-invariant, float64).
    within = np.sum(s["sq_norms"] - np.einsum("kp,kp->k", s["sums"], s["sums"]) / s["counts"])
    between = np.sum(stats.mean_deviations() ** 2)  # Tr(Sigma_B) = sum_k w_k ||mu_k - mu_G||^2
    return float(max(within, 0.0) / stats.n_samples / between) if between > 0 else math.inf


def _unit_class_means(stats: ClassStats) -> np.ndarray:
    """(K, p) per-class means of L2-normalised features, (1/n_k) sum_{i in k} h_i / ||h_i||."""
    s = stats.numpy()
    return s["unit_sums"] / s["counts"][:, None]


def cosine_distance(features: Any, labels: Any | None = None) -> float:
    """Kornblith et al. 2021's mean within-class cosine distance d_within (the paper's "Cosine Similarity").

        d_within = (1/K) sum_k (1/n_k^2) sum_{m, n in class k} (1 - cos(h_m, h_n))
                 = 1 - (1/K) sum_k ||u_k||^2,   u_k the class mean of h / ||h||,

    so the sum over all ordered pairs of a class (m = n included, as published) costs O(Np).
    Lower means more collapsed; 1 - d_within is the mean within-class cosine similarity, the quantity
    the paper's Table 2 column "COS SIM" behaves as. Cosine is not shift-invariant: raw features are used.
    """
    stats = stats_of(features, labels)
    stats._require()
    u = _unit_class_means(stats)
    return float(1.0 - np.mean(np.einsum("kp,kp->k", u, u)))


def class_separation(features: Any, labels: Any | None = None) -> float:
    """Kornblith et al. 2021's class separation R^2 = 1 - d_within / d_total.

    d_total = (1/K^2) sum_{j,k} (1/(n_j n_k)) sum_{m in j, n in k} (1 - cos) = 1 - ||(1/K) sum_k u_k||^2.
    Higher means classes are more separated (more collapsed relative to the spread between classes).
    """
    stats = stats_of(features, labels)
    stats._require()
    u = _unit_class_means(stats)
    d_within = 1.0 - np.mean(np.einsum("kp,kp->k", u, u))
    centre = u.mean(axis=0)
    d_total = 1.0 - centre @ centre
    return float(1.0 - d_within / d_total) if d_total > 0 else 0.0
