"""Discriminant-analysis scores: SFDA (Shao et al., ECCV 2022) and NCTI (Wang et al., ICCV 2023).

Both fit a regularised linear discriminant to the labelled target features (N, p), labels (N,), and
read how well its posteriors P(y | x) recover the labels; both need the raw features.

SFDA, the paper's algorithm with the conventions of the authors' released code:
    1. Regularised Fisher discriminant: shrink both scatters, S~ = (1 - lam) S + lam (tr S / p) I, with
       lam = exp(-a sigma_max(S_W)), a = 5, floored at 1e-10; the Fisher basis U solves
       S~_B u = gamma S~_W u with U^T S~_W U = I, where S~_B = S~_T - S~_W.
    2. In the Fisher space the classes are unit-covariance Gaussians: logits
       x^T U U^T mu_c - 1/2 mu_c^T U U^T mu_c + log pi_c, P(y | x) = softmax. With all p
       directions (the default, as the released code) U U^T = S~_W^-1: a shrinkage LDA.
    3. ConfMix: each sample moves towards the mean of the other classes' means by its
       confidence, x' = q x + (1 - q) mean_{c != y} mu_c, q = softmax_c(P(c | x))_y (the code's
       softened posterior), and step 1-2 are refit on x' with the same lam.
    SFDA = 1/N sum_i P'(y_i | x'_i), the mean posterior of the true class (the code omits the log).

NCTI, with the three neural-collapse terms of the paper as the authors compute them:
    PCA to 64 dimensions; sklearn LDA with shrinkage exp(-sum of the top 32 PCA variances) (plain
    LDA when that is below 1e-10); H the LDA projection (K - 1 dims), centred; P the LDA posteriors.
        S_seli = ||H||_*                          nuclear norm: closeness to the SELI / simplex geometry
        S_ncc  = 1/N sum_i P(y_i | h_i)           nearest-centre (Gaussian) classifier fit
        S_vc   = log sum_c ||P_c||_*              within-class variability of the class-c posterior rows
    NCTI = norm(S_seli) + norm(S_ncc) - norm(S_vc), each min-max normalised over the models compared
    (`ncti_combine`): it ranks a zoo, it does not score one model alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy import linalg, special

from zoo_rank._validation import ZooRankError, check_features_labels
from zoo_rank.metrics.selection import pca_features
from zoo_rank.metrics.stats import ClassStats

_SFDA_A = 5.0
_MIN_SHRINK = 1e-10


def _shrunk(scatter: np.ndarray, lam: float) -> np.ndarray:
    p = scatter.shape[0]
    return (1.0 - lam) * scatter + lam * np.trace(scatter) / p * np.eye(p)


def _fisher_posteriors(
    x: np.ndarray, codes: np.ndarray, lam: float | None, n_components: int | None
) -> tuple[np.ndarray, float, np.ndarray]:
    """SFDA steps 1-2. Returns (P (N, K) posteriors in code order, lam, class means (K, p))."""
    stats = ClassStats.from_arrays(x, codes)
    row_of_code = np.empty(stats.n_classes, dtype=np.int64)
    row_of_code[np.asarray(stats.classes, dtype=np.int64)] = np.arange(stats.n_classes)
    means = stats.class_means()[row_of_code]
    priors = stats.class_weights()[row_of_code]
    within = stats.within_cov()
    within = (within + within.T) / 2
    if lam is None:
        p = within.shape[0]
        top = linalg.eigh(within, eigvals_only=True, subset_by_index=[p - 1, p - 1])[0]
        lam = max(float(np.exp(-_SFDA_A * top)), _MIN_SHRINK)
    within_s = _shrunk(within, lam)
    between_s = _shrunk(stats.total_cov(), lam) - within_s
    gammas, basis = linalg.eigh(between_s, within_s)
    basis = basis[:, np.argsort(gammas)[::-1][:n_components]]
    proj_means = means @ basis
    coef = basis @ proj_means.T  # (p, K): x^T U U^T mu_c without projecting all N samples first
    logits = x @ coef - 0.5 * (proj_means**2).sum(axis=1) + np.log(priors)
    return special.softmax(logits, axis=1), lam, means


def sfda(features: Any, labels: Any, *, n_components: int | None = None) -> float:
    """SFDA (Shao et al. 2022): mean true-class posterior of the regularised Fisher classifier after
    ConfMix, in (0, 1]. features (N, p), labels (N,). `n_components` Fisher directions (None: all p, as
    the authors' code; K - 1 gives the classical Fisher space).
    """
    x, codes, classes = check_features_labels(features, labels)
    x = np.asarray(x, dtype=np.float64)
    k = len(classes)
    if n_components is not None and not 1 <= n_components <= x.shape[1]:
        raise ZooRankError(f"n_components must be in [1, {x.shape[1]}] or None, got {n_components}.")
    posteriors, lam, means = _fisher_posteriors(x, codes, None, n_components)
    rows = np.arange(len(codes))
    confidence = special.softmax(posteriors, axis=1)[rows, codes][:, None]
    others = (means.sum(axis=0) - means) / (k - 1)  # (K, p): mean of the other classes' means
    mixed = confidence * x + (1.0 - confidence) * others[codes]
    posteriors, _, _ = _fisher_posteriors(mixed, codes, lam, n_components)
    return float(posteriors[rows, codes].mean())


class NCTITerms(NamedTuple):
    """The three per-model terms of NCTI (Wang et al. 2023): higher seli / ncc and lower vc are better."""

    seli: float
    ncc: float
    vc: float


def ncti_terms(features: Any, labels: Any, *, n_components: int = 64, seed: int = 0) -> NCTITerms:
    """S_seli, S_ncc and S_vc of one model's target features (N, p) with labels (N,)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, codes, classes = check_features_labels(features, labels)
    pca_dims = min(n_components, *x.shape)
    reduced = pca_features(np.asarray(x, dtype=np.float64), pca_dims, seed)
    variances = reduced.var(axis=0, ddof=1)
    shrinkage = max(float(np.exp(-np.sort(variances)[::-1][:32].sum())), _MIN_SHRINK)
    lda = (
        LinearDiscriminantAnalysis(solver="svd")
        if shrinkage == _MIN_SHRINK
        else LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrinkage)
    )
    projected = lda.fit(reduced, codes).transform(reduced)
    projected = projected - projected.mean(axis=0)
    posteriors = lda.predict_proba(reduced)  # columns in code order (lda.classes_ = 0..K-1)
    seli = float(np.linalg.norm(projected, ord="nuc"))
    ncc = float(posteriors[np.arange(len(codes)), codes].mean())
    vc = float(np.log(sum(np.linalg.norm(posteriors[codes == c], ord="nuc") for c in range(len(classes)))))
    return NCTITerms(seli, ncc, vc)


@dataclass(frozen=True)
class TermOf:
    """A metric that is one field of a shared computation: `compute_metrics` runs `terms` once for all
    the fields it is asked for; called alone it computes the terms itself."""

    terms: Callable[..., tuple]
    field: str
    doc: str

    def __call__(self, features: Any, labels: Any) -> float:
        return float(getattr(self.terms(features, labels), self.field))


ncti_seli = TermOf(ncti_terms, "seli", "NCTI's S_seli term alone (higher: closer to the collapsed geometry).")
ncti_ncc = TermOf(ncti_terms, "ncc", "NCTI's S_ncc term alone (higher: the nearest-centre classifier fits).")
ncti_vc = TermOf(ncti_terms, "vc", "NCTI's S_vc term alone (lower: less within-class posterior variability).")


def ncti_combine(terms: Mapping[str, NCTITerms]) -> dict[str, float]:
    """NCTI of each model of a zoo: norm(S_seli) + norm(S_ncc) - norm(S_vc), each term min-max
    normalised over the models given (Wang et al. 2023). A term equal across all models adds 0."""
    if not terms:
        raise ZooRankError("ncti_combine needs the terms of at least one model; got none.")
    names = list(terms)
    table = np.array([tuple(terms[m]) for m in names], dtype=np.float64)  # (M, 3)
    low, span = table.min(axis=0), np.ptp(table, axis=0)
    normed = np.divide(table - low, span, out=np.zeros_like(table), where=span > 0)
    scores = normed[:, 0] + normed[:, 1] - normed[:, 2]
    return {m: float(s) for m, s in zip(names, scores, strict=True)}
