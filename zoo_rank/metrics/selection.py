"""Feature-based transferability scores from the model-selection literature: N-LEEP, GBC, TransRate.

Each scores a labelled target feature set (N, p) with labels (N,); higher predicts better fine-tuning.
All three need the raw features (a PCA, a mixture fit, per-class spreads), not only `ClassStats`.

    N-LEEP (Li et al., CVPR 2021): PCA keeping 80% of the variance, a Gaussian mixture with
        as many components as target classes (times `components_per_class`), then LEEP with the
        mixture's posteriors P(v | x_i) in place of a source head's softmax.
    GBC (Pandey et al., CVPR 2022): per-class diagonal Gaussians N(mu_c, diag(s_c)) on
        64-d PCA features; Bhattacharyya distance D_B(c_i, c_j) = 1/8 (mu_i - mu_j)^T S^-1 (mu_i - mu_j)
        + 1/2 ln(det S / sqrt(det S_i det S_j)), S = (S_i + S_j) / 2; BC = exp(-D_B);
        GBC = -sum_{i != j} BC(c_i, c_j), in [-K(K - 1), 0] (0: no class overlaps any other).
    TransRate (Huang et al., ICML 2022): on globally centred features Z,
        TrR = R(Z, eps) - 1/K sum_k R(Z_k, eps),  R(Z, eps) = 1/2 log det(I + Z^T Z / (n eps)),
        with Z_k the n_k rows of class k and eps = 1e-4 (the authors' released code).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo_rank._validation import ZooRankError, check_features_labels
from zoo_rank.metrics.source import leep


def pca_features(x: np.ndarray, n_components: int | float, seed: int) -> np.ndarray:
    """Features (N, p) projected on their top principal directions (sklearn PCA, seeded).

    An int keeps that many directions (capped at min(N, p)); a float in (0, 1) keeps the fewest
    that explain that fraction of the variance. With N >= p the p x p covariance route is both exact
    and far cheaper than an SVD of the N x p matrix.
    """
    from sklearn.decomposition import PCA

    n, p = x.shape
    if isinstance(n_components, int):
        n_components = min(n_components, n, p)
    solver = "covariance_eigh" if n >= p else "full"
    return PCA(n_components=n_components, svd_solver=solver, random_state=seed).fit_transform(x)


def nleep(
    features: Any,
    labels: Any,
    *,
    variance: float = 0.8,
    components_per_class: int = 1,
    covariance_type: str = "full",
    max_iter: int = 100,
    seed: int = 0,
) -> float:
    """N-LEEP (Li et al. 2021): LEEP on the posteriors of a GMM fit to PCA-reduced features.

    features (N, p), labels (N,). `variance` of the PCA (0.8 in the paper); the mixture has
    K * components_per_class components (at most N), `covariance_type` as sklearn's GaussianMixture,
    fit in float64 from k-means initialisation seeded by `seed`, reg_covar 1e-6 of the mean variance.
    In (-inf, 0]; 0 when each component holds one class. Invariant to the scale of the features.
    """
    from sklearn.mixture import GaussianMixture

    x, codes, classes = check_features_labels(features, labels)
    if not 0 < variance <= 1:
        raise ZooRankError(f"variance must be in (0, 1], got {variance}; the paper keeps 0.8.")
    if components_per_class < 1:
        raise ZooRankError(f"components_per_class must be >= 1, got {components_per_class}.")
    x = np.asarray(x, dtype=np.float64)  # float32 covariances of few-sample components fail Cholesky
    reduced = pca_features(x, variance, seed) if variance < 1 else x
    n_components = min(len(classes) * components_per_class, x.shape[0])
    # sklearn's reg_covar (1e-6) taken relative to the features' mean variance, so that the score does
    # not depend on their scale and components with fewer samples than dimensions stay invertible.
    reg = 1e-6 * max(float(reduced.var(axis=0).mean()), 1e-300)
    gmm = GaussianMixture(
        n_components=n_components,
        covariance_type=covariance_type,
        max_iter=max_iter,
        reg_covar=reg,
        random_state=seed,
    )
    posteriors = gmm.fit(reduced).predict_proba(reduced)
    return leep(posteriors, codes)


def gbc(features: Any, labels: Any, *, n_components: int = 64, seed: int = 0) -> float:
    """GBC (Pandey et al. 2022): minus the summed Bhattacharyya coefficients of every ordered pair of
    per-class diagonal Gaussians, after PCA to `n_components` (64 in the paper). features (N, p), labels (N,).

    Variances are the per-class maximum-likelihood ones; a class with no spread along a direction gets
    a floor of 1e-12 of the mean variance there, so a point mass stays finite (and far from the others).
    """
    x, codes, classes = check_features_labels(features, labels)
    z = pca_features(x, n_components, seed) if n_components < x.shape[1] else np.asarray(x, np.float64)
    k = len(classes)
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    means = np.zeros((k, z.shape[1]))
    np.add.at(means, codes, z)
    means /= counts[:, None]
    variances = np.zeros_like(means)
    np.add.at(variances, codes, (z - means[codes]) ** 2)
    variances /= counts[:, None]
    floor = 1e-12 * max(float(z.var(axis=0).mean()), np.finfo(np.float64).tiny)
    variances = np.maximum(variances, floor)
    log_var = np.log(variances)
    total = 0.0
    for i in range(k):
        avg = (variances[i] + variances) / 2  # (K, d): S of the pair (i, j) for every j
        mahalanobis = ((means[i] - means) ** 2 / avg).sum(axis=1)
        log_det_ratio = np.log(avg).sum(axis=1) - 0.5 * (log_var[i].sum() + log_var.sum(axis=1))
        distance = mahalanobis / 8 + log_det_ratio / 2
        coefficient = np.exp(-distance)
        coefficient[i] = 0.0  # a class against itself is not a pair
        total += coefficient.sum()
    return float(-total)


def _coding_rate(z: np.ndarray, eps: float) -> float:
    """R(Z, eps) = 1/2 log det(I_d + Z^T Z / (n eps)) for z (n, d), via the smaller of the two Grams
    (det(I + A^T A) = det(I + A A^T))."""
    n = z.shape[0]
    gram = z.T @ z if z.shape[1] <= n else z @ z.T
    _sign, logdet = np.linalg.slogdet(np.eye(gram.shape[0]) + gram / (n * eps))
    return 0.5 * logdet


def transrate(features: Any, labels: Any, *, eps: float = 1e-4) -> float:
    """TransRate (Huang et al. 2022): R(Z, eps) - (1/K) sum_k R(Z_k, eps) on centred features.

    features (N, p), labels (N,). All in float64: with eps = 1e-4 a rounding error of 1e-7 relative in
    Z^T Z (a float32 product) would move a zero eigenvalue's log(1 + s / eps) term by O(1). The class
    terms use the n_k x n_k Gram when n_k < p. Depends on the scale of the features through eps, as published.
    """
    x, codes, classes = check_features_labels(features, labels)
    if eps <= 0:
        raise ZooRankError(f"eps must be positive, got {eps}; the paper uses 1e-4.")
    z = np.asarray(x, dtype=np.float64)
    z = z - z.mean(axis=0)
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(classes)))[:-1]
    class_rates = [_coding_rate(z[rows], eps) for rows in np.split(order, bounds)]
    return float(_coding_rate(z, eps) - np.mean(class_rates))
