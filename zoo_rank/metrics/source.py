"""Scores that need the source model's own classifier: LEEP and NCE.

Both read `source_probs` (N, Z): the pretrained head's softmax over its Z source classes, evaluated on
the N labelled target images, with `labels` (N,) the target classes. Higher is better for both: they
are (negative) log-likelihoods of the target labels under a classifier built on the source head.

    LEEP (Nguyen et al., ICML 2020, the LEEP definition):
        P(y, z) = 1/N sum_{i: y_i = y} theta(x_i)_z           empirical joint, (K, Z)
        P(y | z) = P(y, z) / P(z),  P(z) = sum_y P(y, z)       empirical conditional
        LEEP = 1/N sum_i log( sum_z P(y_i | z) theta(x_i)_z )  average log expected empirical prediction

    NCE (Tran et al., ICCV 2019, negative conditional entropy): with the hard source labels z_i = argmax_z theta(x_i)_z,
        NCE = -H(Y | Z) = sum_{y,z} P(y, z) log P(y | z)       on the empirical joint of (y_i, z_i).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo_rank._validation import ZooRankError, check_features, encode_labels, to_numpy

# Softmax rows from float16 / bfloat16 heads sum to 1 only to about 1e-3.
_ROW_SUM_TOL = 5e-3
# Rows per block of the (block, Z) products: bounds scratch memory at ~64 MiB for Z = 1,000.
_BLOCK_ROWS = 8192


def check_source_probs(source_probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate softmax outputs against their labels.

    Returns `(probs, codes, n_classes)`: probs (N, Z) float64, codes (N,) int64 in [0, K).
    """
    check_features(source_probs, name="source_probs")
    probs = np.asarray(to_numpy(source_probs), dtype=np.float64)
    codes, classes = encode_labels(labels, probs.shape[0])
    if probs.min() < 0:
        raise ZooRankError(
            f"source_probs hold a negative value ({probs.min():.3g}); pass the source head's softmax "
            "probabilities, e.g. torch.softmax(logits, dim=1), not its logits."
        )
    sums = probs.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > _ROW_SUM_TOL:
        raise ZooRankError(
            f"source_probs row {worst} sums to {sums[worst]:.6g}, expected 1 (each row a softmax over the "
            "source classes); apply torch.softmax(logits, dim=1) to the head's logits."
        )
    return probs, codes, len(classes)


def leep(source_probs: Any, labels: Any) -> float:
    """LEEP (Nguyen et al. 2020): average log expected empirical prediction, in (-inf, 0].

    source_probs (N, Z) softmax outputs of the source head on the target images; labels (N,).
    0 when every source class maps to one target class and each image's source prediction is certain.
    """
    probs, codes, n_classes = check_source_probs(source_probs, labels)
    n = probs.shape[0]
    joint = np.zeros((n_classes, probs.shape[1]))
    np.add.at(joint, codes, probs)  # sums theta(x_i)_z over the images of each target class
    joint /= n
    marginal = joint.sum(axis=0)
    # A source class no image gives any probability contributes nothing (theta_z = 0 in every row).
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    expected = np.empty(n)
    for start in range(0, n, _BLOCK_ROWS):
        rows = slice(start, start + _BLOCK_ROWS)
        expected[rows] = np.einsum("iz,iz->i", probs[rows], conditional[codes[rows]])
    return float(np.mean(np.log(expected)))


def nce(source_probs: Any, labels: Any) -> float:
    """NCE (Tran et al. 2019): -H(Y | Z) of the target labels given the source head's argmax, in
    [-log K, 0]. source_probs (N, Z) softmax outputs (only their argmax is used); labels (N,).

    0 when each source class predicts one target class only; -H(Y) when the source labels say nothing.
    """
    probs, codes, n_classes = check_source_probs(source_probs, labels)
    n = probs.shape[0]
    source_labels = probs.argmax(axis=1)
    counts = np.zeros((n_classes, probs.shape[1]))
    np.add.at(counts, (codes, source_labels), 1.0)
    per_source = counts.sum(axis=0)
    y_idx, z_idx = np.nonzero(counts)
    c = counts[y_idx, z_idx]
    return float(np.sum(c / n * np.log(c / per_source[z_idx])))
