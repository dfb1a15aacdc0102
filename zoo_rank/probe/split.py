"""Probe inputs checked once at the boundary: features and labels in, a fit / validation / test split out.

Labels of any hashable type become integer codes into `classes` (the sorted training classes); a
validation set is either given or a stratified, seeded fraction of train (`_prepare`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from zoo_rank._validation import ZooRankError, check_features, encode_labels, to_numpy

#: The paper's grid: 97 log-spaced L2 strengths in [1e-6, 1e6] (8 per decade).
DEFAULT_L2_GRID = np.logspace(-6, 6, 97)


@dataclass
class Split:
    """Labelled features ready for a probe: codes index into `classes`."""

    fit_x: np.ndarray
    fit_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: np.ndarray
    val_source: str


def _as_matrix(x: Any, name: str) -> np.ndarray:
    check_features(x, name=name)
    arr = to_numpy(x)
    return arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float64)


def _codes_in(classes: np.ndarray, labels: np.ndarray, name: str) -> np.ndarray:
    """Map labels onto the training classes; labels unseen in training are an error."""
    pos = np.searchsorted(classes, labels) if classes.dtype != object else None
    if pos is not None:
        pos = np.clip(pos, 0, len(classes) - 1)
        ok = classes[pos] == labels
    else:
        lookup = {c: i for i, c in enumerate(classes)}
        pos = np.array([lookup.get(v, -1) for v in labels], dtype=np.int64)
        ok = pos >= 0
    if not ok.all():
        unseen = sorted({str(v) for v in np.asarray(labels)[~ok]})[:5]
        raise ZooRankError(
            f"{name} contain {int((~ok).sum())} rows whose class never occurs in train (e.g. {unseen}); "
            "a probe can only predict training classes, so drop those rows or use a split that covers every class."
        )
    return pos.astype(np.int64)


def prepare(train_x, train_y, test_x, test_y, val_x, val_y, val_fraction: float, seed: int) -> Split:
    """Check and encode the probe's inputs: train (N, p), test (M, p), optional validation (V, p)."""
    tx = _as_matrix(train_x, "train_x")
    sx = _as_matrix(test_x, "test_x")
    if sx.shape[1] != tx.shape[1]:
        raise ZooRankError(
            f"test_x has {sx.shape[1]} features but train_x has {tx.shape[1]}; extract both splits with the same model."
        )
    ty_codes, classes = encode_labels(train_y, tx.shape[0])
    if len(classes) < 2:
        raise ZooRankError(
            f"train labels hold {len(classes)} class, need at least 2; a probe separates classes."
        )
    test_codes = _codes_in(classes, _labels(test_y, sx, "test"), "test labels")
    if (val_x is None) != (val_y is None):
        raise ZooRankError(
            "got only one of val_x / val_y; pass both for a given validation set, or neither to split train."
        )
    if val_x is not None:
        vx = _as_matrix(val_x, "val_x")
        if vx.shape[1] != tx.shape[1]:
            raise ZooRankError(
                f"val_x has {vx.shape[1]} features but train_x has {tx.shape[1]}; use the same model."
            )
        val_codes = _codes_in(classes, _labels(val_y, vx, "val"), "val labels")
        return Split(tx, ty_codes, vx, val_codes, sx, test_codes, classes, "given")
    fit_idx, val_idx = _split_rows(ty_codes, len(classes), val_fraction, seed)
    return Split(
        tx[fit_idx], ty_codes[fit_idx], tx[val_idx], ty_codes[val_idx], sx, test_codes, classes,
        f"split(fraction={val_fraction}, seed={seed})",
    )  # fmt: skip


def _labels(y: Any, x: np.ndarray, name: str) -> np.ndarray:
    labels = to_numpy(y).reshape(-1)
    if len(labels) != x.shape[0]:
        raise ZooRankError(
            f"{name}_x has {x.shape[0]} rows but {name}_y has {len(labels)}; pass one label per row."
        )
    return labels


def _split_rows(codes: np.ndarray, n_classes: int, val_fraction: float, seed: int):
    """Sorted (fit rows, validation rows) of a stratified, seeded split of train."""
    if not 0.0 < val_fraction < 1.0:
        raise ZooRankError(f"val_fraction={val_fraction} is outside (0, 1); use e.g. 0.2 (the default).")
    counts = np.bincount(codes, minlength=n_classes)
    # Stratify so every class keeps the same share in both parts; impossible with singleton classes.
    stratify = codes if counts.min() >= 2 else None
    test_size: float | int = val_fraction
    if stratify is not None and math.ceil(val_fraction * len(codes)) < n_classes <= len(codes) - n_classes:
        # Few images per class (Flowers-102: 4): the fraction would leave classes out of validation, which
        # a stratified split refuses; one validation image per class is the smallest split that works.
        test_size = n_classes
    try:
        fit_idx, val_idx = train_test_split(
            np.arange(len(codes)), test_size=test_size, random_state=seed, stratify=stratify
        )
    except ValueError as err:  # too few rows for a stratified split of this size
        raise ZooRankError(
            f"cannot split {len(codes)} training rows of {n_classes} classes into fit/validation "
            f"with val_fraction={val_fraction} ({err}); pass a larger train set or an explicit val_x/val_y."
        ) from None
    return np.sort(fit_idx), np.sort(val_idx)


def strongest_first(l2_grid: Any = None) -> np.ndarray:
    """The L2 strengths (A,) to try, unique and strongest first; None: `DEFAULT_L2_GRID`."""
    grid = np.asarray(DEFAULT_L2_GRID if l2_grid is None else l2_grid, dtype=np.float64).reshape(-1)
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ZooRankError(
            f"l2_grid must hold positive finite values, got {grid[:5]}...; use e.g. np.logspace(-6, 6, 97)."
        )
    return np.unique(grid)[::-1]  # strongest first: warm starts go from the simple model to the complex
