"""The metrics core against naive references, the paper's theorems and its counterexample."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.covariance import LedoitWolf

from zoo_rank import ZooRankError
from zoo_rank.metrics import (
    METRICS,
    ClassStats,
    SampleSizeWarning,
    UndefinedMetricError,
    class_separation,
    compute_metrics,
    cosine_distance,
    fuzziness,
    h_score,
    knn_accuracy,
    logme,
    resolve_metric_names,
    squared_distance,
    vci,
)


def blobs(n=600, p=12, k=6, spread=1.0, seed=0, offset=0.0, imbalance=False):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=3.0, size=(k, p))
    probs = rng.dirichlet(np.ones(k) * 2) if imbalance else np.full(k, 1 / k)
    y = rng.choice(k, size=n, p=probs)
    y[:k] = np.arange(k)  # every class present
    x = means[y] + spread * rng.normal(size=(n, p)) @ rng.normal(size=(p, p)) / math.sqrt(p) + offset
    return x, y


# ---- naive references: straight from the definitions, covariances + numpy.linalg.pinv --------------


def naive_covs(x, y):
    classes = np.unique(y)
    mu_g = x.mean(0)
    sigma_t = (x - mu_g).T @ (x - mu_g) / len(x)
    sigma_b = sum(
        (y == c).mean() * np.outer(x[y == c].mean(0) - mu_g, x[y == c].mean(0) - mu_g) for c in classes
    )
    sigma_w = sum((x[y == c] - x[y == c].mean(0)).T @ (x[y == c] - x[y == c].mean(0)) for c in classes) / len(
        x
    )
    return sigma_t, sigma_b, sigma_w


def naive_vci(x, y):
    sigma_t, sigma_b, _ = naive_covs(x, y)
    k = len(np.unique(y))
    return 1 - np.trace(np.linalg.pinv(sigma_t, hermitian=True) @ sigma_b) / min(x.shape[1], k - 1)


def all_pairs_cosine(x, y):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    classes = np.unique(y)
    d_within = np.mean([np.mean(1 - xn[y == c] @ xn[y == c].T) for c in classes])
    d_total = np.mean([np.mean(1 - xn[y == a] @ xn[y == b].T) for a in classes for b in classes])
    return d_within, 1 - d_within / d_total


def published_logme(f, y):
    """A direct port of the published fixed-point LogME (You et al. 2022), f (N, D), y (N,) in [0, C)."""
    f = f.astype(np.float64)
    n, d = f.shape
    if n > d:
        _, s, vh = np.linalg.svd(f.T @ f)
        s = np.sqrt(s)
        u_times_sigma = f @ vh.T
        k = np.sum(s > 1e-10)
        s, vh = s[:k].reshape(-1, 1), vh[:k]
        u = u_times_sigma[:, :k] / s.reshape(1, -1)
    else:
        u, s, vh = np.linalg.svd(f, full_matrices=False)
        s = s.reshape(-1, 1)
    sigma = s**2
    evidences = []
    for i in range(int(y.max() + 1)):
        y_ = (y == i).astype(np.float64).reshape(-1, 1)
        x = u.T @ y_
        x2 = x**2
        res_x2 = (y_**2).sum() - x2.sum()
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t = alpha / beta
            gamma = (sigma / (sigma + t)).sum()
            m2 = (sigma * x2 / ((t + sigma) ** 2)).sum()
            res2 = (x2 / ((1 + sigma / t) ** 2)).sum() + res_x2
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (res2 + 1e-5)
            t_ = alpha / beta
            if abs(t_ - t) / t <= 1e-3:
                break
        evidence = (
            d / 2.0 * np.log(alpha)
            + n / 2.0 * np.log(beta)
            - 0.5 * np.sum(np.log(alpha + beta * sigma))
            - beta / 2.0 * res2
            - alpha / 2.0 * m2
            - n / 2.0 * np.log(2 * np.pi)
        )
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def random_map(p, cond, rng):
    """An invertible p x p map with condition number `cond`."""
    q1, _ = np.linalg.qr(rng.normal(size=(p, p)))
    q2, _ = np.linalg.qr(rng.normal(size=(p, p)))
    return q1 @ np.diag(np.geomspace(1.0, cond, p)) @ q2


# ---- VCI -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cond", [1.0, 1e2, 1e4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vci_invariant_under_invertible_linear_maps(cond, seed):
    x, y = blobs(seed=seed, imbalance=bool(seed % 2))
    m = random_map(x.shape[1], cond, np.random.default_rng(100 + seed))
    assert vci(x @ m, y) == pytest.approx(vci(x, y), abs=1e-6)
    # and with a translation on top
    assert vci(x @ m + 1e3, y) == pytest.approx(vci(x, y), abs=1e-6)


def test_vci_matches_naive_pinv_definition():
    for seed, imbalance in [(0, False), (1, True)]:
        x, y = blobs(seed=seed, imbalance=imbalance)
        assert vci(x, y) == pytest.approx(naive_vci(x, y), abs=1e-10)


def test_fully_collapsed_features_give_zero():
    x, y = blobs(spread=0.0)
    assert vci(x, y) == pytest.approx(0.0, abs=1e-9)
    assert h_score(x, y) == pytest.approx(min(x.shape[1], 5), rel=1e-9)
    # p < K - 1: rank is p
    x2, y2 = blobs(p=3, k=8, spread=0.0)
    assert vci(x2, y2) == pytest.approx(0.0, abs=1e-9)


def test_vci_near_one_without_class_structure():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20000, 5)), rng.integers(0, 4, 20000)
    assert 0.99 < vci(x, y) <= 1.0


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(8, 120),
    p=st.integers(1, 10),
    k=st.integers(2, 7),
    spread=st.floats(0.0, 5.0),
    seed=st.integers(0, 10_000),
)
@example(n=8, p=8, k=2, spread=0.0, seed=6)  # Ledoit-Wolf picks a = 0 there (found by hypothesis)
def test_vci_in_unit_interval(n, p, k, spread, seed):
    x, y = blobs(n=max(n, k), p=p, k=k, spread=spread, seed=seed)
    # At N <= p + 1 only the shrunk VCI has a value (the plain one raises: test_shrinkage.py).
    shrinkage = None if len(x) > p + 1 else "ledoit-wolf"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        try:
            value = vci(x, y, shrinkage=shrinkage)
        except UndefinedMetricError:
            # Ledoit-Wolf may choose no shrinkage at all (sklearn's intensity ~1e-17 on some spread-0 draws,
            # e.g. N = p = 8, K = 2): Sigma_a is then the singular sample covariance, rightly refused.
            assert shrinkage is not None and LedoitWolf().fit(x).shrinkage_ < 1e-12
            return
    assert 0.0 <= value <= 1.0


def test_theorem_5_1_least_squares_probe_loss():
    # balanced classes: exactly n per class
    rng = np.random.default_rng(3)
    k, p, per = 5, 9, 80
    y = np.repeat(np.arange(k), per)
    x = rng.normal(scale=2.0, size=(k, p))[y] + rng.normal(size=(k * per, p)) @ rng.normal(size=(p, p))
    onehot = np.eye(k)[y]
    design = np.hstack([x, np.ones((len(x), 1))])
    w, *_ = np.linalg.lstsq(design, onehot, rcond=None)
    loss = np.sum((design @ w - onehot) ** 2) / (2 * len(x))
    trace = h_score(x, y)
    assert loss == pytest.approx(-trace / (2 * k) + 0.5 - 1 / (2 * k), rel=1e-10)


# ---- baselines -------------------------------------------------------------------------------------


def test_observation_4_2_fuzziness_not_invariant():
    # Two balanced classes with means -e1, +e1 and within-class points at +-sqrt(2) e1, +-sqrt(2) e2
    # (Sigma_W = I, Sigma_B = e1 e1^T): Fuzziness = 1. U = [[1, 1], [0, 1]] keeps the means and Sigma_B
    # but shears Sigma_W into U U^T, whose e1 entry is 2: Fuzziness doubles; VCI does not move.
    offsets = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]]) * math.sqrt(2)
    e1 = np.array([1.0, 0.0])
    x = np.vstack([offsets - e1, offsets + e1])
    y = np.repeat([0, 1], 4)
    u = np.array([[1.0, 1.0], [0.0, 1.0]])
    assert fuzziness(x, y) == pytest.approx(1.0, rel=1e-12)
    assert fuzziness(x @ u.T, y) == pytest.approx(2.0, rel=1e-12)
    assert vci(x @ u.T, y) == pytest.approx(vci(x, y), abs=1e-12)


def test_fuzziness_matches_naive_top_eigendirections():
    for k, p in [(6, 12), (15, 4)]:  # K <= p (Gram path) and K > p (p x p path)
        x, y = blobs(p=p, k=k, imbalance=True, n=900)
        _, sigma_b, sigma_w = naive_covs(x, y)
        evals, evecs = np.linalg.eigh(sigma_b)
        top = min(p, k - 1)
        v, lam = evecs[:, ::-1][:, :top], evals[::-1][:top]
        expected = np.trace(v @ np.diag(1 / lam) @ v.T @ sigma_w)
        assert fuzziness(x, y) == pytest.approx(expected, rel=1e-8)


def naive_squared_distance_balanced(x, y):
    """The paper's eq. 4 as printed: sum_{k,i} ||h_ki - mu_k||^2 / (N sum_k ||mu_k - mu_G||^2), N per class."""
    classes = np.unique(y)
    n_per_class = len(x) // len(classes)
    means = {c: x[y == c].mean(0) for c in classes}
    num = sum(np.sum((x[i] - means[y[i]]) ** 2) for i in range(len(x)))
    den = n_per_class * sum(np.sum((means[c] - x.mean(0)) ** 2) for c in classes)
    return num / den


def test_squared_distance_is_paper_eq4_on_balanced_data():
    rng = np.random.default_rng(3)
    k, n, p = 7, 40, 9
    y = np.repeat(np.arange(k), n)
    x = rng.normal(scale=2.0, size=(k, p))[y] + rng.normal(size=(k * n, p)) + 50.0  # large common offset
    expected = naive_squared_distance_balanced(x, y)
    _, sigma_b, sigma_w = naive_covs(x, y)
    assert expected == pytest.approx(np.trace(sigma_w) / np.trace(sigma_b), rel=1e-12)
    assert squared_distance(x, y) == pytest.approx(expected, rel=1e-9)
    assert squared_distance(x.astype(np.float32), y) == pytest.approx(expected, rel=1e-4)
    # Not 1/K of it (the old total-N normalisation).
    assert squared_distance(x, y) > 2 * expected / k


def test_squared_distance_imbalanced_weights_classes_as_vci():
    x, y = blobs(imbalance=True)
    classes = np.unique(y)
    mu_g = x.mean(0)
    w = {c: np.mean(y == c) for c in classes}
    within = sum(np.sum((x[y == c] - x[y == c].mean(0)) ** 2) for c in classes) / len(x)
    between = sum(w[c] * np.sum((x[y == c].mean(0) - mu_g) ** 2) for c in classes)
    assert len({int(np.sum(y == c)) for c in classes}) > 1
    assert squared_distance(x, y) == pytest.approx(within / between, rel=1e-9)
    _, sigma_b, sigma_w = naive_covs(x, y)
    assert squared_distance(x, y) == pytest.approx(np.trace(sigma_w) / np.trace(sigma_b), rel=1e-9)


def test_cosine_paths_equal_all_pairs_definition():
    x, y = blobs(imbalance=True, offset=0.5)
    d_within, separation = all_pairs_cosine(x, y)
    assert cosine_distance(x, y) == pytest.approx(d_within, rel=1e-10)
    assert class_separation(x, y) == pytest.approx(separation, rel=1e-10)


def test_cosine_similarity_name_is_deprecated_not_broken():
    x, y = blobs()
    assert "cosine_distance" in METRICS and "cosine_similarity" not in METRICS
    assert "Cosine Similarity" in METRICS["cosine_distance"].description
    with pytest.warns(FutureWarning, match="cosine_distance"):
        from zoo_rank.metrics import cosine_similarity
    assert cosine_similarity(x, y) == cosine_distance(x, y)
    with pytest.warns(FutureWarning, match="now called 'cosine_distance'"):
        assert resolve_metric_names(["vci", "cosine_similarity"]) == ["vci", "cosine_distance"]
    with pytest.warns(FutureWarning):
        scores = compute_metrics(x, y, ["cosine_similarity"])
    assert scores == {"cosine_distance": pytest.approx(cosine_distance(x, y))}
    with pytest.raises(ImportError):
        from zoo_rank.metrics import cosine_sim  # noqa: F401


def test_h_score_matches_reference():
    x, y = blobs(imbalance=True)
    cov_f = np.cov(x, rowvar=False, bias=True)
    g = np.zeros_like(x)
    for c in np.unique(y):
        g[y == c] = x[y == c].mean(0)
    cov_g = np.cov(g, rowvar=False, bias=True)
    assert h_score(x, y) == pytest.approx(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ cov_g), rel=1e-8)


@pytest.mark.parametrize("n,p", [(400, 16), (40, 64)])  # N > p and the N < p branch of the published code
def test_logme_equals_published_algorithm(n, p):
    x, y = blobs(n=n, p=p, k=5, spread=2.0, seed=7, offset=0.3)
    assert logme(x, y) == pytest.approx(published_logme(x, y), rel=1e-7, abs=1e-9)


def test_knn_matches_sklearn_leave_one_out():
    from sklearn.neighbors import KNeighborsClassifier

    x, y = blobs(n=500, spread=4.0, seed=5)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    knn = KNeighborsClassifier(n_neighbors=11, metric="cosine").fit(xn, y)
    neighbours = knn.kneighbors(xn, return_distance=False)[:, 1:]  # drop self
    votes = np.array([np.bincount(y[row], minlength=6) for row in neighbours])
    expected_correct = votes.argmax(1) == y
    ties = np.sort(votes, 1)[:, -1] == np.sort(votes, 1)[:, -2]
    got = knn_accuracy(x, y, k=10)
    # majority votes agree wherever there is no tie
    assert abs(got - expected_correct.mean()) <= ties.mean() + 1e-12
    assert 0.3 < got < 1.0


# ---- ClassStats: batching, merging, precision, devices -------------------------------------------


SCALAR_METRICS = [m for m in METRICS if not METRICS[m].needs_raw]


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_batched_update_equals_one_shot(data):
    seed = data.draw(st.integers(0, 10_000))
    x, y = blobs(n=300, p=6, k=4, seed=seed)
    cuts = sorted(data.draw(st.lists(st.integers(1, 299), max_size=6, unique=True)))
    stats = ClassStats(dim=6)
    for a, b in zip([0, *cuts], [*cuts, 300], strict=True):
        stats.update(x[a:b], y[a:b])
    one = ClassStats.from_arrays(x, y)
    for name in SCALAR_METRICS:
        assert METRICS[name].fn(stats) == pytest.approx(METRICS[name].fn(one), rel=1e-9, abs=1e-12), name


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), split=st.integers(1, 299))
def test_merge_equals_union(seed, split):
    x, y = blobs(n=300, p=6, k=4, seed=seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(300)
    a, b = order[:split], order[split:]
    # second part shifted differently and with labels the first part may not have seen
    merged = ClassStats.from_arrays(x[a], y[a]) + ClassStats.from_arrays(x[b], y[b])
    union = ClassStats.from_arrays(x, y)
    for name in SCALAR_METRICS:
        assert METRICS[name].fn(merged) == pytest.approx(METRICS[name].fn(union), rel=1e-9, abs=1e-12), name


def test_float32_with_large_offset_loses_no_precision():
    x, y = blobs(n=4000, p=16, k=5, seed=1)
    shifted = (x + 1e4).astype(np.float32)
    exact = vci(shifted.astype(np.float64), y)
    assert vci(shifted, y) == pytest.approx(exact, abs=1e-5)
    # without the shift, float32 second moments of features near 1e4 lose everything
    assert vci(x, y) == pytest.approx(exact, abs=1e-3)


def test_torch_input_equals_numpy_and_any_labels():
    x, y = blobs(seed=4)
    names = np.array(["cat", "dog", "emu", "fox", "gnu", "yak"])[y]
    want = compute_metrics(x, y, SCALAR_METRICS)
    got = compute_metrics(torch.from_numpy(x), names, SCALAR_METRICS)
    sparse = compute_metrics(x, y * 1000 - 7, SCALAR_METRICS)  # non-contiguous labels
    for name in SCALAR_METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-9)
        assert sparse[name] == pytest.approx(want[name], rel=1e-9)


def test_bf16_torch_features_accepted():
    x, y = blobs(seed=2)
    got = vci(torch.from_numpy(x).to(torch.bfloat16), torch.from_numpy(y))
    assert got == pytest.approx(vci(x, y), abs=0.02)


def test_class_with_one_sample_works():
    x, y = blobs(n=200, k=4)
    x = np.vstack([x, np.ones((1, x.shape[1]))])
    y = np.append(y, 99)
    scores = compute_metrics(x, y)
    assert all(np.isfinite(v) for v in scores.values())


# ---- bad input -----------------------------------------------------------------------------------


def test_nan_rows_rejected_with_row_count():
    x, y = blobs()
    x[[3, 10]] = np.nan
    with pytest.raises(ZooRankError, match=r"NaN or Inf in 2 of 600 rows \(first at row 3\)"):
        vci(x, y)
    x[[3, 10]] = np.inf
    with pytest.raises(ZooRankError, match="NaN or Inf"):
        ClassStats(dim=12).update(torch.from_numpy(x), y)


def test_single_class_rejected():
    x, _ = blobs()
    with pytest.raises(ZooRankError, match="1 class"):
        vci(x, np.zeros(len(x)))


def test_mismatched_lengths_rejected():
    x, y = blobs()
    with pytest.raises(ZooRankError, match="600 rows but labels have 599"):
        fuzziness(x, y[:-1])


def test_empty_and_wrong_dimensionality_rejected():
    with pytest.raises(ZooRankError, match="non-empty"):
        vci(np.zeros((0, 4)), np.zeros(0))
    with pytest.raises(ZooRankError, match=r"Expected 2D .* got 1D"):
        vci(np.zeros(10), np.zeros(10))
    with pytest.raises(ZooRankError, match="got 3D"):
        vci(np.zeros((10, 3, 2)), np.zeros(10))
    with pytest.raises(ZooRankError, match="1D labels"):
        vci(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(ZooRankError, match="dim=12"):
        ClassStats(dim=12).update(np.zeros((4, 5)), np.arange(4))
    with pytest.raises(ZooRankError, match="empty"):
        vci(ClassStats(dim=3))


def test_unknown_metric_lists_known():
    x, y = blobs()
    with pytest.raises(ZooRankError, match=r"unknown metric.*choose from vci"):
        compute_metrics(x, y, ["vci", "nope"])


def test_small_sample_warns_with_needed_count():
    x, y = blobs(n=40, p=30, k=4)
    with pytest.warns(SampleSizeWarning, match="at least 150 samples"):
        value = vci(x, y)
    assert value >= 0


def test_vci_refuses_n_le_p_plus_one():
    # There Tr[pinv(S_T) S_B] = min(p, K - 1) for any features (VCI = 0): a value without information.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 40)), rng.integers(0, 3, 20)
    y[:3] = [0, 1, 2]
    with pytest.warns(SampleSizeWarning), pytest.raises(ValueError, match=r"N=20 samples of p=40.*shrinkage"):
        vci(x, y)
