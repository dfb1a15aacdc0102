"""Checks at the boundary: what was found, what was expected, how to fix it.

Every public entry point validates its inputs here, once, and the math behind it trusts them.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ZooRankError(ValueError):
    """A user-facing error whose message is one line: the problem and the fix."""


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def to_numpy(x: Any) -> np.ndarray:
    """Any array-like (numpy, torch on any device, list) as a numpy array, without copying when possible."""
    if _is_torch(x):
        import torch

        x = x.detach()
        if x.dtype in (torch.bfloat16, torch.float16):
            # numpy has no bfloat16; float32 holds both exactly.
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def check_features(features: Any, *, name: str = "features") -> None:
    """Raise if `features` is not a non-empty, finite (N, p) matrix. Works on numpy and torch."""
    shape = tuple(features.shape) if hasattr(features, "shape") else np.shape(features)
    if len(shape) != 2:
        hint = (
            "reshape your data either using array.reshape(-1, 1) if it has a single feature "
            "or array.reshape(1, -1) if it contains a single sample"
            if len(shape) == 1
            else "flatten each sample to one feature vector, e.g. x.reshape(len(x), -1)"
        )
        raise ZooRankError(
            f"Expected 2D {name} of shape (n_samples, n_features), got {len(shape)}D shape {shape}; {hint}."
        )
    n, p = shape
    if n == 0 or p == 0:
        raise ZooRankError(
            f"Expected non-empty {name}, got shape {shape}; pass at least one sample with at least one feature."
        )
    if _is_torch(features):
        import torch

        if not features.dtype.is_floating_point:
            features = features.double()
        bad_rows = (~torch.isfinite(features)).any(dim=1)
        n_bad = int(bad_rows.sum())
        first = int(bad_rows.nonzero()[0, 0]) if n_bad else -1
    else:
        arr = np.asarray(features)
        if not np.issubdtype(arr.dtype, np.number):
            raise ZooRankError(
                f"Expected numeric {name}, got dtype {arr.dtype}; convert with np.asarray(x, dtype=np.float32)."
            )
        bad_rows = ~np.isfinite(arr).all(axis=1)
        n_bad = int(bad_rows.sum())
        first = int(np.argmax(bad_rows)) if n_bad else -1
    if n_bad:
        raise ZooRankError(
            f"{name} contain NaN or Inf in {n_bad} of {n} rows (first at row {first}); "
            "drop those rows, or re-extract in fp32 if they come from a bf16 overflow."
        )


def label_vector(labels: Any, n_samples: int) -> np.ndarray:
    """Labels as a 1D numpy array of length n_samples, or a one-line error saying what is wrong."""
    y = to_numpy(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ZooRankError(
            f"Expected 1D labels of shape ({n_samples},), got shape {y.shape}; pass one class label per row "
            "(not one-hot: use labels.argmax(1))."
        )
    if len(y) != n_samples:
        raise ZooRankError(
            f"features have {n_samples} rows but labels have {len(y)}; pass exactly one label per feature row."
        )
    check_missing_labels(y)
    return y


def check_missing_labels(y: np.ndarray) -> None:
    """Raise, naming the rows, when labels hold None or NaN: a missing label is not one more class."""
    if np.issubdtype(y.dtype, np.floating):
        missing = np.isnan(y)
    elif y.dtype == object:
        missing = np.fromiter((v is None or v != v for v in y), dtype=bool, count=len(y))
    else:
        return
    rows = np.flatnonzero(missing)
    if len(rows):
        shown = ", ".join(map(str, rows[:10].tolist())) + (", ..." if len(rows) > 10 else "")
        raise ZooRankError(
            f"labels are null or NaN in {len(rows)} of {len(y)} rows (rows {shown}); "
            "drop those rows or give them a class: a missing label is not a class."
        )


def encode_labels(labels: Any, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels of any hashable values as contiguous codes.

    Returns `(codes, classes)`: codes (N,) int64 in [0, K), classes (K,) the sorted original values,
    so `classes[codes]` gives the labels back.
    """
    y = label_vector(labels, n_samples)
    if y.dtype == object:
        # Mixed or non-sortable hashables: order classes by first appearance.
        classes_list: dict[Any, int] = {}
        codes = np.fromiter(
            (classes_list.setdefault(v, len(classes_list)) for v in y), dtype=np.int64, count=len(y)
        )
        classes = np.empty(len(classes_list), dtype=object)
        classes[:] = list(classes_list)
        return codes, classes
    classes, codes = np.unique(y, return_inverse=True)
    return codes.astype(np.int64).reshape(-1), classes


def check_features_labels(
    features: Any, labels: Any, *, min_classes: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a labelled feature matrix for scoring.

    Returns `(X, codes, classes)` with X (N, p) numpy in its own float dtype (ints become float64),
    codes (N,) int64 in [0, K) and classes (K,).
    """
    check_features(features)
    X = to_numpy(features)
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    codes, classes = encode_labels(labels, X.shape[0])
    check_n_classes(len(classes), min_classes)
    return X, codes, classes


def check_n_classes(n_classes: int, min_classes: int = 2) -> None:
    if n_classes < min_classes:
        raise ZooRankError(
            f"found {n_classes} class(es) in the labels, need at least {min_classes}; "
            "collapse metrics compare classes, so pass features of two or more classes."
        )
