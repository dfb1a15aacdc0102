"""LEEP and NCE against direct float64 evaluations of their definitions and hand-worked cases;
the registry's `needs` field and the N/A path of compute_metrics."""

from __future__ import annotations

import math
import warnings
from collections import Counter

import numpy as np
import pytest
import torch

from zoo_rank import ZooRankError
from zoo_rank.metrics import (
    METRICS,
    NEEDS,
    ClassStats,
    MetricInfo,
    MissingInputWarning,
    compute_metrics,
    leep,
    nce,
)


def random_probs(n=300, z=9, k=5, seed=0, concentration=0.3):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(z, concentration), size=n)
    y = rng.integers(0, k, size=n)
    y[:k] = np.arange(k)
    return probs, y


# ---- direct float64 evaluations, one sum at a time, straight from the papers -----------------------


def direct_leep(probs, labels):
    """Nguyen et al. 2020, with Python loops over i, y, z."""
    n, n_source = probs.shape
    targets = sorted(set(labels.tolist()))
    joint = {(y, z): 0.0 for y in targets for z in range(n_source)}
    for i in range(n):
        for z in range(n_source):
            joint[labels[i], z] += float(probs[i, z]) / n
    marginal = [sum(joint[y, z] for y in targets) for z in range(n_source)]
    total = 0.0
    for i in range(n):
        total += math.log(
            sum(joint[labels[i], z] / marginal[z] * float(probs[i, z]) for z in range(n_source))
        )
    return total / n


def direct_nce(probs, labels):
    """Tran et al. 2019: -H(Y | Z) = sum_{y,z} P(y, z) log P(y | z), Z = argmax of the head."""
    n = len(labels)
    z = [int(np.argmax(row)) for row in probs]
    pair_counts = Counter(zip(labels.tolist(), z, strict=True))
    source_counts = Counter(z)
    return sum(c / n * math.log(c / source_counts[zz]) for (_, zz), c in pair_counts.items())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leep_equals_direct_definition(seed):
    probs, y = random_probs(seed=seed)
    assert leep(probs, y) == pytest.approx(direct_leep(probs, y), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nce_equals_direct_definition(seed):
    probs, y = random_probs(seed=seed)
    assert nce(probs, y) == pytest.approx(direct_nce(probs, y), rel=1e-9, abs=1e-9)


def test_leep_blocks_and_inputs_agree(monkeypatch):
    """Row blocks, float32 / torch inputs and string labels give the same number."""
    import zoo_rank.metrics.source as source

    probs, y = random_probs(n=500, z=13, k=4, seed=3)
    want = direct_leep(probs, y)
    monkeypatch.setattr(source, "_BLOCK_ROWS", 64)
    assert leep(probs, y) == pytest.approx(want, rel=1e-9, abs=1e-9)
    names = np.array(["cat", "dog", "eel", "fox"])[y]
    assert leep(torch.from_numpy(probs), names) == pytest.approx(want, rel=1e-9, abs=1e-9)
    p32 = probs.astype(np.float32)
    assert leep(p32, y) == pytest.approx(direct_leep(p32.astype(np.float64), y), rel=1e-9, abs=1e-9)


def test_leep_2x2_worked_example():
    """theta = [[.8, .2], [.4, .6]], y = [0, 1]: P(y, z) = [[.4, .1], [.2, .3]], P(z) = [.6, .4],
    P(y | z) = [[2/3, 1/4], [1/3, 3/4]]; both images expect .8*2/3 + .2/4 = .4/3 + .6*3/4 = 7/12."""
    probs = np.array([[0.8, 0.2], [0.4, 0.6]])
    assert leep(probs, np.array([0, 1])) == pytest.approx(math.log(7 / 12), rel=1e-12)
    assert nce(probs, np.array([0, 1])) == 0.0  # each source argmax names one target class


def test_leep_nce_limits():
    y = np.array([0, 1, 1, 1, 2, 2])
    onehot = np.eye(3)[y]
    assert leep(onehot, y) == pytest.approx(0.0, abs=1e-15)  # source head already is the target classifier
    assert nce(onehot, y) == 0.0
    # A head that says nothing: P(y | z) = P(y), LEEP = NCE = sum_y P(y) log P(y) = -H(Y).
    neg_entropy = (1 / 6) * math.log(1 / 6) + 0.5 * math.log(0.5) + (1 / 3) * math.log(1 / 3)
    uniform = np.full((6, 4), 0.25)
    assert leep(uniform, y) == pytest.approx(neg_entropy, rel=1e-12)
    assert nce(uniform, y) == pytest.approx(neg_entropy, rel=1e-12)
    # z = (0, 0, 1, 1), y = (0, 1, 1, 1): NCE = 1/4 log 1/2 + 1/4 log 1/2 + 1/2 log 1 = -log(2) / 2.
    hard = np.eye(2)[[0, 0, 1, 1]]
    assert nce(hard, np.array([0, 1, 1, 1])) == pytest.approx(-math.log(2) / 2, rel=1e-12)


def test_source_probs_validation():
    probs, y = random_probs(n=20, k=3)
    with pytest.raises(ZooRankError, match="logits"):
        leep(np.log(probs), y)
    with pytest.raises(ZooRankError, match="sums to"):
        nce(probs * 2, y)
    with pytest.raises(ZooRankError, match="one label per feature row"):
        leep(probs, y[:-1])
    with pytest.raises(ZooRankError, match="NaN or Inf"):
        bad = probs.copy()
        bad[3, 0] = np.nan
        leep(bad, y)


# ---- the registry -----------------------------------------------------------------------------------


def test_registry_needs_field():
    for info in METRICS.values():
        assert info.needs in NEEDS
        assert info.needs_raw == (info.needs != "stats"), info.name
    assert METRICS["leep"].needs == METRICS["nce"].needs == "source_probs"
    assert METRICS["vci"].needs == "stats" and METRICS["knn_accuracy"].needs == "raw"
    for name in ("leep", "nce", "nleep", "gbc", "transrate", "sfda", "ncti_seli", "ncti_ncc"):
        assert (METRICS[name].target_sign, METRICS[name].source_sign) == (+1, -1), name
        assert METRICS[name].source_sign == METRICS["logme"].source_sign
    assert (METRICS["ncti_vc"].target_sign, METRICS["ncti_vc"].source_sign) == (-1, +1)
    with pytest.raises(ZooRankError, match="needs_raw"):
        MetricInfo("bad", leep, "", "", "", False, -1, +1, "source_probs")


def test_compute_metrics_source_probs_and_na():
    rng = np.random.default_rng(0)
    probs, y = random_probs(n=120, z=6, k=3, seed=4)
    x = rng.normal(size=(120, 5)) + np.eye(3, 5)[y] * 3
    got = compute_metrics(x, y, ["vci", "leep", "nce"], source_probs=probs)
    assert got["leep"] == pytest.approx(direct_leep(probs, y), rel=1e-9)
    assert got["nce"] == pytest.approx(direct_nce(probs, y), rel=1e-9)
    with pytest.warns(MissingInputWarning, match="leep: N/A"):
        na = compute_metrics(x, y, ["vci", "leep"])
    assert math.isnan(na["leep"]) and na["vci"] == pytest.approx(got["vci"], rel=1e-12)
    stats = ClassStats.from_arrays(x, y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from_stats = compute_metrics(stats, None, ["vci", "nce"], source_probs=probs)
    assert math.isnan(from_stats["nce"]) and any("labels" in str(w.message) for w in caught)
    with pytest.raises(ZooRankError, match="gbc, sfda need"):
        compute_metrics(stats, None, ["vci", "gbc", "sfda"])
