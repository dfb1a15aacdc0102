"""N-LEEP, GBC, TransRate, SFDA and NCTI on cases whose answer is known by hand, against naive
float64 references, and in the direction their papers state."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import linalg

from zoo_rank import ZooRankError
from zoo_rank.metrics import (
    METRICS,
    NCTITerms,
    gbc,
    ncti_combine,
    ncti_terms,
    nleep,
    sfda,
    transrate,
)


def blobs(n_per_class=40, p=6, k=4, spread=1.0, separation=4.0, seed=0):
    rng = np.random.default_rng(seed)
    means = separation * rng.normal(size=(k, p))
    y = np.repeat(np.arange(k), n_per_class)
    x = means[y] + spread * rng.normal(size=(len(y), p))
    return x, y


def twin_classes(n=30, p=4, k=2, seed=0):
    """k classes with exactly the same points: no feature can tell them apart."""
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, p)) * 2 + rng.normal(size=(3, p))[rng.integers(0, 3, size=n)] * 5
    return np.tile(points, (k, 1)), np.repeat(np.arange(k), n)


# ---- N-LEEP ---------------------------------------------------------------------------------------


def test_nleep_hand_cases():
    # Far, tight clusters: one GMM component per class, P(y | v) = 1 -> N-LEEP = log 1 = 0.
    x, y = blobs(k=3, spread=0.05, separation=50.0)
    assert nleep(x, y) == pytest.approx(0.0, abs=1e-9)
    # Twin classes: every component holds both labels equally, P(y | v) = 1/2 -> N-LEEP = log(1/2).
    x, y = twin_classes()
    assert nleep(x, y) == pytest.approx(math.log(0.5), abs=1e-9)
    with pytest.raises(ZooRankError, match="variance"):
        nleep(x, y, variance=1.5)


def test_nleep_few_samples_per_component_and_scale():
    """5 samples per class in 300 dims (float32, dead ReLU units) fits; the score ignores the scale."""
    rng = np.random.default_rng(1)
    y = np.arange(50) % 10
    x = np.maximum(rng.normal(size=(10, 300))[y] + rng.standard_normal((50, 300)), 0)
    x[:, :20] = 0
    value = nleep(x.astype(np.float32), y)
    assert -math.log(10) < value <= 1e-12
    assert nleep(x * 1e3, y) == pytest.approx(nleep(x, y), rel=1e-9, abs=1e-12)


def test_nleep_is_seeded():
    x, y = blobs(spread=2.0)
    assert nleep(x, y, seed=3) == nleep(x, y, seed=3)


# ---- GBC --------------------------------------------------------------------------------------------


def test_gbc_hand_cases():
    # 1-d, class A = {-1, 1} (mean 0, var 1), class B = {2, 4} (mean 3, var 1):
    # D_B = 1/8 * 3^2 / 1 + 1/2 ln(1 / 1) = 9/8, both ordered pairs -> GBC = -2 exp(-9/8).
    x = np.array([[-1.0], [1.0], [2.0], [4.0]])
    assert gbc(x, np.array([0, 0, 1, 1])) == pytest.approx(-2 * math.exp(-9 / 8), rel=1e-12)
    # Unequal variances: A = {-1, 1} (var 1), B = {1, 5} (mean 3, var 4): S = 5/2,
    # D_B = 9 / (8 * 5/2) + 1/2 ln(5/2 / sqrt(4)) = 9/20 + ln(5/4) / 2.
    x = np.array([[-1.0], [1.0], [1.0], [5.0]])
    want = -2 * math.exp(-(9 / 20 + math.log(5 / 4) / 2))
    assert gbc(x, np.array([0, 0, 1, 1])) == pytest.approx(want, rel=1e-12)
    # Identical classes overlap completely: BC = 1 for each of the K (K - 1) ordered pairs.
    x, y = twin_classes(k=3)
    assert gbc(x, y) == pytest.approx(-6.0, rel=1e-9)
    # Far apart: no overlap at all.
    x, y = blobs(spread=0.01, separation=100.0)
    assert gbc(x, y) == pytest.approx(0.0, abs=1e-12)


def test_gbc_pca_keeps_64_directions():
    """With p > 64 the score is that of the 64-d PCA features (p = 64 features are used as they are)."""
    from sklearn.decomposition import PCA

    x, y = blobs(n_per_class=50, p=80, k=3)
    reduced = PCA(n_components=64, svd_solver="covariance_eigh").fit_transform(x)
    assert gbc(x, y) == pytest.approx(gbc(reduced, y), rel=1e-8)


# ---- TransRate --------------------------------------------------------------------------------------


def naive_transrate(x, y, eps=1e-4):
    """Huang et al. 2022, with the d x d matrix for every term."""
    z = x - x.mean(axis=0)

    def rate(a):
        n, d = a.shape
        return 0.5 * np.linalg.slogdet(np.eye(d) + a.T @ a / (n * eps))[1]

    return rate(z) - np.mean([rate(z[y == c]) for c in np.unique(y)])


def test_transrate_hand_case():
    # 1-d, class 0 = {a, -a}, class 1 = {b, -b}: the global mean is 0 and
    # TrR = 1/2 ln(1 + (a^2 + b^2) / (2 eps)) - 1/4 [ln(1 + a^2 / eps) + ln(1 + b^2 / eps)].
    a, b, eps = 0.3, 2.0, 1e-2
    x = np.array([[a], [-a], [b], [-b]])
    want = 0.5 * math.log(1 + (a * a + b * b) / (2 * eps)) - 0.25 * (
        math.log(1 + a * a / eps) + math.log(1 + b * b / eps)
    )
    assert transrate(x, np.array([0, 0, 1, 1]), eps=eps) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("p", [5, 60])  # n_k = 20: the class Grams are d x d, then n_k x n_k
def test_transrate_equals_naive(p):
    x, y = blobs(n_per_class=20, p=p, k=3, seed=p)
    assert transrate(x, y) == pytest.approx(naive_transrate(x, y), rel=1e-9)
    assert transrate(x.astype(np.float32), y) == pytest.approx(
        naive_transrate(x.astype(np.float32).astype(np.float64), y), rel=1e-9
    )


# ---- SFDA -------------------------------------------------------------------------------------------


def naive_sfda(x, y, a=5.0):
    """Shao et al. 2022, written out: per-class covariances, S~_W^-1 by a solve (no eigenbasis)."""
    classes = np.unique(y)
    k, (n, p) = len(classes), x.shape

    def shrink(s, lam):
        return (1 - lam) * s + lam * np.trace(s) / p * np.eye(p)

    def posteriors(data, lam=None):
        priors = np.array([(y == c).mean() for c in classes])
        means = np.array([data[y == c].mean(axis=0) for c in classes])
        within = sum(pi * np.cov(data[y == c].T, bias=True) for pi, c in zip(priors, classes, strict=True))
        if lam is None:
            lam = max(math.exp(-a * np.linalg.eigvalsh(within)[-1]), 1e-10)
        coef = np.linalg.solve(shrink(within, lam), means.T).T  # (K, p) = mu_c S~_W^-1
        logits = data @ coef.T - 0.5 * np.sum(coef * means, axis=1) + np.log(priors)
        logits -= logits.max(axis=1, keepdims=True)
        prob = np.exp(logits)
        return prob / prob.sum(axis=1, keepdims=True), lam, means

    prob, lam, means = posteriors(x)
    soft = np.exp(prob) / np.exp(prob).sum(axis=1, keepdims=True)
    q = soft[np.arange(n), y][:, None]
    others = np.array([(means.sum(axis=0) - means[c]) / (k - 1) for c in range(k)])
    prob, _, _ = posteriors(q * x + (1 - q) * others[y], lam)
    return prob[np.arange(n), y].mean()


@pytest.mark.parametrize("seed", [0, 1])
def test_sfda_equals_naive(seed):
    # A small spread keeps sigma_max(S_W) small, so the shrinkage exp(-5 sigma) is far from its floor.
    x, y = blobs(n_per_class=30, p=5, k=4, spread=0.3, separation=0.4, seed=seed)
    assert sfda(x, y) == pytest.approx(naive_sfda(x, y), rel=1e-9)


def test_sfda_hand_cases():
    # Identical classes: every posterior is 1/K, ConfMix keeps them identical -> SFDA = 1/K.
    x, y = twin_classes(k=3)
    assert sfda(x, y) == pytest.approx(1 / 3, rel=1e-9)
    x, y = blobs(spread=0.01, separation=20.0)
    assert sfda(x, y) == pytest.approx(1.0, abs=1e-9)
    # The classical K - 1 Fisher space loses nothing when the classes differ only in their means.
    assert sfda(x, y, n_components=3) == pytest.approx(1.0, abs=1e-6)


# ---- NCTI -------------------------------------------------------------------------------------------


def test_ncti_terms_separated_classes():
    """Collapsed classes: posteriors one-hot, so each P_c is n_c rows e_c (nuclear norm sqrt(n_c)):
    S_ncc = 1 and S_vc = log(K sqrt(n)); S_seli is the nuclear norm of the centred LDA projection."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, y = blobs(n_per_class=25, p=6, k=4, spread=0.01, separation=10.0)
    terms = ncti_terms(x, y)
    assert terms.ncc == pytest.approx(1.0, abs=1e-9)
    assert terms.vc == pytest.approx(math.log(4 * math.sqrt(25)), abs=1e-9)
    # p = 6 < 64: no reduction beyond a rotation, and the top-32 variances make the shrinkage tiny.
    z = x - x.mean(axis=0)
    proj = LinearDiscriminantAnalysis(solver="svd").fit(z, y).transform(z)
    assert terms.seli == pytest.approx(linalg.svdvals(proj - proj.mean(axis=0)).sum(), rel=1e-4)


def test_ncti_combine_by_hand():
    terms = {"a": NCTITerms(1.0, 0.5, 2.0), "b": NCTITerms(3.0, 0.5, 1.0), "c": NCTITerms(2.0, 0.5, 1.5)}
    # seli -> (0, 1, .5); ncc equal for all -> 0; vc -> (1, 0, .5), subtracted.
    assert ncti_combine(terms) == pytest.approx({"a": -1.0, "b": 1.0, "c": 0.0})
    with pytest.raises(ZooRankError, match="at least one model"):
        ncti_combine({})


# ---- directions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nleep", "gbc", "transrate", "sfda", "ncti_ncc"])
def test_better_separated_features_score_better(name):
    """Target mode: the same classes, further apart, must score better (target_sign * value higher)."""
    sign = METRICS[name].target_sign
    x_far, y = blobs(n_per_class=40, p=6, k=4, spread=1.0, separation=3.0, seed=5)
    means = np.array([x_far[y == c].mean(0) for c in range(4)])
    x_near = x_far - 0.8 * means[y]  # same within-class scatter, means pulled together
    assert sign * METRICS[name].fn(x_far, y) > sign * METRICS[name].fn(x_near, y)


def test_compute_metrics_shares_the_ncti_terms():
    from zoo_rank.metrics import compute_metrics

    x, y = blobs(spread=2.0)
    terms = ncti_terms(x, y)
    got = compute_metrics(x, y, ["ncti_vc", "ncti_seli", "ncti_ncc", "vci"])
    assert (got["ncti_seli"], got["ncti_ncc"], got["ncti_vc"]) == pytest.approx(tuple(terms), rel=1e-12)
    assert METRICS["ncti_ncc"].fn(x, y) == pytest.approx(terms.ncc, rel=1e-12)
