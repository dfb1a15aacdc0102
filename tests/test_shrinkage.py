"""Shrinkage VCI / H-score (metrics/shrinkage.py) against scikit-learn's estimators, and the regimes where
the plain scores have no value (N <= p + 1, constant features, overflow)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import special_ortho_group
from sklearn.covariance import OAS, LedoitWolf, ledoit_wolf_shrinkage
from test_metrics import blobs, naive_covs

from zoo_rank._validation import ZooRankError
from zoo_rank.metrics import (
    METRICS,
    ClassStats,
    SampleSizeWarning,
    UndefinedMetricError,
    compute_metrics,
    fuzziness,
    h_score,
    pooled,
    vci,
)
from zoo_rank.metrics.shrinkage import ledoit_wolf_intensity, oas_intensity
from zoo_rank.train.tracking import measure

N, P, K = 300, 512, 10


@pytest.fixture(scope="module")
def small_n():
    """N = 300 < p = 512: correlated float64 features with a common offset and class structure."""
    rng = np.random.default_rng(0)
    y = np.arange(N) % K
    mix = rng.normal(size=(P, P)) / math.sqrt(P)
    x = 0.6 * rng.normal(size=(K, P))[y] + rng.normal(size=(N, P)) @ mix + 4.0
    return x, y


def direct_shrunk(x, y, cov, a):
    """(H_a, VCI_a) = ((1 - a) Tr[cov^-1 Sigma_B], 1 - H_a / min(p, K - 1)) with the library's shrunk covariance."""
    _, sigma_b, _ = naive_covs(x, y)
    h = (1 - a) * np.trace(np.linalg.solve(cov, sigma_b))
    return h, 1 - h / min(x.shape[1], len(np.unique(y)) - 1)


def test_streamed_intensities_equal_sklearn(small_n):
    x, y = small_n
    whole = ClassStats.from_arrays(x, y)
    # Shards of uneven length, each with its own shift, merged: the fourth moment is re-shifted exactly.
    shards = pooled([ClassStats.from_arrays(x[i : i + 110], y[i : i + 110]) for i in range(0, N, 110)])
    batched = ClassStats(dim=P)
    for i in range(0, N, 160):
        batched.update(torch.from_numpy(x[i : i + 160]), y[i : i + 160])
    want_lw, want_oas = ledoit_wolf_shrinkage(x), OAS().fit(x).shrinkage_
    assert 0.05 < want_lw < 0.95 and 0.05 < want_oas < 0.95  # not a clipped value
    for stats in (whole, shards, batched):
        assert ledoit_wolf_intensity(stats) == pytest.approx(want_lw, rel=1e-10)
        assert oas_intensity(stats) == pytest.approx(want_oas, rel=1e-10)


def test_streamed_intensity_of_float32_features_with_offset_sorted_by_class():
    # The float32 fast path, a shift far from the global mean (the first chunk is one class) and a large
    # common offset: the moments re-centred from the shift still match the library on the float64 copy.
    rng = np.random.default_rng(0)
    n, p, k = 6000, 128, 10
    y = np.sort(np.arange(n) % k)
    x = (3 * rng.normal(size=(k, p))[y] + rng.normal(size=(n, p)) + 1e3).astype(np.float32)
    stats = ClassStats.from_arrays(x, y)
    x64 = x.astype(np.float64)
    assert ledoit_wolf_intensity(stats) == pytest.approx(ledoit_wolf_shrinkage(x64), rel=1e-5)
    assert oas_intensity(stats) == pytest.approx(OAS().fit(x64).shrinkage_, rel=1e-5)


@pytest.mark.parametrize("method", ["ledoit-wolf", "oas"])
def test_shrunk_scores_equal_the_formula_with_sklearn_covariance(small_n, method):
    x, y = small_n
    est = (LedoitWolf() if method == "ledoit-wolf" else OAS()).fit(x)
    h_ref, vci_ref = direct_shrunk(x, y, est.covariance_, est.shrinkage_)
    assert vci(x, y, shrinkage=method) == pytest.approx(vci_ref, abs=1e-9)
    assert h_score(x, y, shrinkage=method) == pytest.approx(h_ref, abs=1e-9 * (K - 1))
    assert 0.01 < vci_ref < 0.99  # informative, unlike the plain VCI here (0 for any features)


def test_fixed_intensity_and_zero_is_plain():
    x, y = blobs(n=600, p=12)
    sigma_t, _, _ = naive_covs(x, y)
    cov = 0.7 * sigma_t + 0.3 * np.trace(sigma_t) / 12 * np.eye(12)
    assert vci(x, y, shrinkage=0.3) == pytest.approx(direct_shrunk(x, y, cov, 0.3)[1], abs=1e-12)
    assert vci(x, y, shrinkage=0.0) == pytest.approx(vci(x, y), abs=1e-14)
    assert vci(x, y, shrinkage=1.0) == pytest.approx(1.0, abs=1e-14)  # (1 - a) = 0: no trace left
    with pytest.raises(ZooRankError, match=r"shrinkage must be in \[0, 1\], got 1.5"):
        vci(x, y, shrinkage=1.5)
    with pytest.raises(ZooRankError, match=r"shrinkage 'lw' is not known.*'ledoit-wolf'"):
        h_score(x, y, shrinkage="lw")


@pytest.mark.parametrize("method", ["ledoit-wolf", "oas"])
def test_shrunk_vci_invariant_to_rotation_scale_shift_not_to_every_linear_map(small_n, method):
    x, y = small_n
    q = special_ortho_group.rvs(P, random_state=1)
    base = vci(x, y, shrinkage=method)
    assert vci(3.7 * x @ q - 250.0, y, shrinkage=method) == pytest.approx(base, abs=1e-8)
    # What shrinkage gives up: an anisotropic scaling moves Sigma_T away from the identity target.
    stretch = np.geomspace(0.01, 100, P)
    assert abs(vci(x * stretch, y, shrinkage=method) - base) > 1e-3


def test_plain_and_shrunk_agree_at_20p():
    x, y = blobs(n=20 * 40, p=40, k=8, spread=2.0, seed=3)
    plain = vci(x, y)
    for method in ("ledoit-wolf", "oas"):
        shrunk = vci(x, y, shrinkage=method)
        assert shrunk >= plain  # the shrunk trace never exceeds the plain one
        assert shrunk == pytest.approx(plain, abs=0.02)


@pytest.mark.parametrize("fn", [vci, h_score])
def test_plain_refuses_n_le_p_plus_one(fn):
    rng = np.random.default_rng(2)
    p = 30
    y = np.arange(p + 1) % 3
    x = rng.normal(size=(p + 1, p))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        with pytest.raises(
            ValueError, match=r"N=31 samples of p=30 features .*shrinkage=\"ledoit-wolf\""
        ) as err:
            fn(x, y)
        assert "\n" not in str(err.value)
        assert np.isfinite(fn(x, y, shrinkage="ledoit-wolf"))
        x2, y2 = rng.normal(size=(p + 2, p)), np.arange(p + 2) % 3
        assert np.isfinite(fn(x2, y2))  # N = p + 2: defined (biased, with the warning)


def test_compute_metrics_gives_nan_with_reason_and_estimators(small_n):
    x, y = small_n
    names = ["vci", "h_score", "vci_lw", "h_score_lw", "logme"]
    with pytest.warns(SampleSizeWarning, match="different width p"):
        scores = compute_metrics(x, y, names)
    assert math.isnan(scores["vci"]) and math.isnan(scores["h_score"])
    assert set(scores.reasons) == {"vci", "h_score"}
    assert "N=300 samples of p=512" in scores.reasons["vci"] and "vci_lw" in scores.reasons["vci"]
    assert scores["vci_lw"] == pytest.approx(vci(x, y, shrinkage="ledoit-wolf"), abs=1e-12)
    assert scores.estimators["vci_lw"] == f"Ledoit-Wolf shrinkage, a = {ledoit_wolf_shrinkage(x):.3g}"
    assert "vci" not in scores.estimators and np.isfinite(scores["logme"])
    big = compute_metrics(*blobs(n=600, p=12), ["vci"])
    assert big.estimators == {"vci": "plain (pinv of Sigma_T)"} and big.reasons == {}


def test_registry_lists_shrinkage_variants_with_directions():
    for name, plain in (("vci_lw", "vci"), ("h_score_lw", "h_score")):
        info = METRICS[name]
        assert (info.source_sign, info.target_sign) == (
            METRICS[plain].source_sign,
            METRICS[plain].target_sign,
        )
        assert "Ibrahim" in info.citation and info.shrinkage == "ledoit-wolf"


@pytest.mark.parametrize("value", [0.0, 3.25])
def test_dead_backbone_is_undefined_not_perfect(value):
    x = np.full((200, 16), value, dtype=np.float32)
    y = np.arange(200) % 4
    # Every registered metric that reads the features (k-NN and the slow selection scores included).
    names = [m for m in METRICS if METRICS[m].needs != "source_probs"]
    scores = compute_metrics(x, y, names)
    assert set(scores) == set(names) and all(math.isnan(v) for v in scores.values())
    assert all("features are constant" in r for r in scores.reasons.values())
    with pytest.raises(UndefinedMetricError, match="constant"):
        fuzziness(x, y)


def test_fuzziness_without_between_class_spread_is_undefined_not_inf():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    x = np.vstack([x, x])  # two classes with identical samples: equal means
    y = np.repeat([0, 1], 40)
    with pytest.raises(UndefinedMetricError, match="class means coincide"):
        fuzziness(x, y)
    assert vci(x, y) == pytest.approx(1.0)  # no separation at all: no collapse


@pytest.mark.parametrize(("dtype", "scale"), [(np.float64, 1e160), (np.float32, 1e25)])
def test_overflowing_products_are_a_clear_error(dtype, scale):
    x, y = blobs(n=200, p=8)
    with pytest.raises(ZooRankError, match=r"overflow .*divide the features by a constant"):
        vci((x * scale).astype(dtype), y)


def test_collapse_tracking_uses_ledoit_wolf_vci_only_where_plain_has_no_value():
    x, y = blobs(n=600, p=40, k=4)
    small, big = ClassStats.from_arrays(x[:40], y[:40]), ClassStats.from_arrays(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        row_small, row_big = measure(small), measure(big)
    assert row_small["vci"] == pytest.approx(vci(small, shrinkage="ledoit-wolf"), abs=1e-12)
    assert (
        row_small["vci_shrinkage"] == pytest.approx(ledoit_wolf_intensity(small))
        and row_small["vci_shrinkage"] > 0
    )
    assert row_big["vci"] == pytest.approx(vci(big), abs=1e-12) and row_big["vci_shrinkage"] == 0.0
