"""Transferability estimators from the model-selection literature: H-score, LogME, k-NN.

These score how well the features already fit the labels at hand, so on a target set higher is
better. H-score and LogME need only `ClassStats`; k-NN needs the raw (N, p) features.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from zoo_rank._validation import ZooRankError, check_features_labels
from zoo_rank.metrics.collapse import regularized_trace
from zoo_rank.metrics.shrinkage import Shrinkage
from zoo_rank.metrics.stats import ClassStats, stats_of


def h_score(
    features: Any, labels: Any | None = None, *, rcond: float | None = None, shrinkage: Shrinkage = None
) -> float:
    """H-score (Bao et al. 2019): tr(cov(f)^+ cov(E[f | y])) = Tr[pinv(Sigma_T) Sigma_B].

    The same trace as VCI's (VCI = 1 - H / rank(Sigma_B)), so the two share one eigendecomposition.
    In [0, min(p, K - 1)].

    `shrinkage` ("ledoit-wolf", "oas" or a in [0, 1]) gives the regularized H-score of Ibrahim,
    Ponomareva & Dong (ECML-PKDD 2022), H_a = Tr[Sigma_a^-1 (1 - a) Sigma_B] with Sigma_a = (1 - a)
    Sigma_T + a (Tr Sigma_T / p) I (metrics/shrinkage.py): defined below N = p + 1, where the plain
    H-score is K - 1 for every feature set and raises UndefinedMetricError (a ValueError) instead;
    invariant to rotations, shifts and isotropic scaling, no longer to every invertible linear map.
    """
    stats = stats_of(features, labels)
    return regularized_trace(stats, "H-score", shrinkage, rcond)[0]


def h_score_lw(features: Any, labels: Any | None = None) -> float:
    """`h_score(..., shrinkage="ledoit-wolf")`: the regularized H-score with the Ledoit-Wolf intensity."""
    return h_score(features, labels, shrinkage="ledoit-wolf")


def _raw_moments(stats: ClassStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uncentred F^T F (p, p), per-class F^T y_k (K, p) and n_k (K,): LogME fits without an intercept."""
    s = stats.numpy()
    c, sums, counts = s["shift"], s["sums"], s["counts"]
    total = sums.sum(axis=0)
    gram = s["second"] + np.outer(c, total) + np.outer(total, c) + counts.sum() * np.outer(c, c)
    class_sums = sums + counts[:, None] * c
    return (gram + gram.T) / 2, class_sums, counts


def logme(features: Any, labels: Any | None = None, *, max_iter: int = 11, tol: float = 1e-3) -> float:
    """LogME (You et al., ICML 2021; fixed-point form of You et al. 2022): mean over classes of the
    maximum log evidence per sample of a Bayesian linear model f -> one-hot(y)_k.

    The published algorithm needs F's singular values s_j and projections x_j = u_j^T y_k. Both follow
    from the Gram form: sigma_j = s_j^2 are the eigenvalues of F^T F (p x p) with eigenvectors v_j, and
    x_j = v_j^T (F^T y_k) / s_j where F^T y_k is the class sum. So LogME costs one p x p
    eigendecomposition plus O(K p^2), with no N x N (or N x p) work, all classes iterated at once.
    As published: no intercept, only directions with s_j > 1e-10 kept, at most `max_iter`
    alpha/beta updates per class, stopping when alpha/beta changes by less than `tol` (relative).
    """
    stats = stats_of(features, labels)
    stats._require()
    gram, class_sums, counts = _raw_moments(stats)
    n, d = float(counts.sum()), stats.dim
    evals, evecs = np.linalg.eigh(gram)
    sv = np.sqrt(np.clip(evals, 0.0, None))
    keep = sv > 1e-10
    keep[: max(0, d - int(n))] = False  # F has at most min(N, p) singular values
    sigma, s = evals[keep], sv[keep]
    x = (class_sums @ evecs[:, keep]) / s  # (K, k)
    x2 = x**2
    res_x2 = counts - x2.sum(axis=1)  # y^T y = n_k for a one-hot column

    n_classes = len(counts)
    alpha, beta = np.ones(n_classes), np.ones(n_classes)
    m2, res2 = np.zeros(n_classes), np.zeros(n_classes)
    active = np.ones(n_classes, dtype=bool)
    for _ in range(max_iter):
        t = (alpha / beta)[active, None]
        gamma = (sigma / (sigma + t)).sum(axis=1)
        m2[active] = (sigma * x2[active] / (t + sigma) ** 2).sum(axis=1)
        res2[active] = (x2[active] / (1 + sigma / t) ** 2).sum(axis=1) + res_x2[active]
        alpha[active] = gamma / (m2[active] + 1e-5)
        beta[active] = (n - gamma) / (res2[active] + 1e-5)
        converged = np.abs(alpha[active] / beta[active] - t[:, 0]) / t[:, 0] <= tol
        active[np.flatnonzero(active)[converged]] = False
        if not active.any():
            break
    log_det = np.log(alpha[:, None] + beta[:, None] * sigma).sum(axis=1)
    evidence = (
        d / 2.0 * np.log(alpha)
        + n / 2.0 * np.log(beta)
        - 0.5 * log_det
        - beta / 2.0 * res2
        - alpha / 2.0 * m2
        - n / 2.0 * math.log(2 * math.pi)
    ) / n
    return float(np.mean(evidence))


def knn_accuracy(
    features: Any, labels: Any, *, k: int = 10, batch_size: int = 4096, device: str | None = None
) -> float:
    """Leave-one-out k-NN accuracy on L2-normalised features (cosine similarity).

    Each sample is classified by a majority vote of its k nearest other samples; ties go to the class
    whose tied neighbours are most similar in total. Blocked (batch_size x N) similarity products in
    float32 on `device` (the features' own device by default), so memory stays O(batch_size * N).
    """
    if isinstance(features, ClassStats):
        raise ZooRankError("knn_accuracy needs the raw features, not ClassStats; pass (features, labels).")
    x_np, codes, classes = check_features_labels(features, labels)
    n = x_np.shape[0]
    if n < 2:
        raise ZooRankError(f"knn_accuracy needs at least 2 samples, got {n}.")
    k = min(k, n - 1)
    if device is None:
        device = str(features.device) if isinstance(features, torch.Tensor) else "cpu"
    x = torch.from_numpy(np.array(x_np, dtype=np.float32)).to(device)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    y = torch.as_tensor(codes, device=device)
    n_classes = len(classes)
    correct = 0
    for start in range(0, n, batch_size):
        query = x[start : start + batch_size]
        sims = query @ x.T
        rows = torch.arange(query.shape[0], device=device)
        sims[rows, rows + start] = -math.inf  # leave one out
        top_sims, top_idx = sims.topk(k, dim=1)
        # A vote is worth 1 plus a tie-breaking fraction of its similarity (|cos| <= 1 < 1/k * k).
        votes = torch.zeros(query.shape[0], n_classes, device=device, dtype=torch.float64)
        votes.scatter_add_(1, y[top_idx], 1.0 + top_sims.double() / (2.0 * k))
        correct += int((votes.argmax(dim=1) == y[start : start + batch_size]).sum())
    return correct / n
