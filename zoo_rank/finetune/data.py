"""A fine-tuning cell's images: rows drawn once, split into fit / validation, decoded once, transformed.

The train split's rows (capped per class) are split class-stratified and seeded into fit and validation
rows; the test split's rows are capped per class. Each row is decoded once per cell (not once per epoch
and learning rate); the transforms are the model's own, its input side capped, with light augmentation
for training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import timm.data
import torch

from zoo_rank._validation import ZooRankError
from zoo_rank.data import balanced_indices
from zoo_rank.finetune.options import FinetuneOptions
from zoo_rank.models import Backbone, RGBTransform


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit positions, validation positions) into `labels` (N,): per class ceil(fraction * n_k) rows to
    validation (at least one, none for a class with one row), drawn with PCG64 from SeedSequence([seed, k])."""
    fit, val = [], []
    for k in np.unique(labels):
        rows = np.flatnonzero(labels == k)
        order = rows[
            np.argsort(np.random.PCG64(np.random.SeedSequence([seed, int(k)])).random_raw(len(rows)))
        ]
        n_val = 0 if len(rows) < 2 else max(1, int(np.ceil(val_fraction * len(rows))))
        n_val = min(n_val, len(rows) - 1)
        val.append(order[:n_val])
        fit.append(order[n_val:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(val))


def transforms(backbone: Backbone, options: FinetuneOptions) -> tuple[Any, Any, dict[str, Any]]:
    """(train transform, eval transform, data config): the model's own preprocessing, its input side capped
    at options.img_size, with light augmentation for training (timm's create_transform)."""
    cfg = dict(backbone.data_config)
    side = int(cfg["input_size"][-1])
    if options.img_size is not None and options.img_size < side:
        cfg["input_size"] = (3, options.img_size, options.img_size)
    common = {k: cfg[k] for k in ("input_size", "interpolation", "mean", "std")}
    train = timm.data.create_transform(
        **common, is_training=True, scale=options.crop_scale, hflip=0.0, color_jitter=None
    )
    evaluate = timm.data.create_transform(**cfg, is_training=False)
    return RGBTransform(train), RGBTransform(evaluate), cfg


def decode_rows(images: Any, rows: np.ndarray, side: int) -> list:
    """RGB PIL images of `rows` of an ImageSet, shrunk so that the shorter side is at most 2 x the input
    side: the transforms then resample far fewer pixels of large photos."""
    out = []
    for r in rows:
        im = images.dataset[int(r)]["image"].convert("RGB")
        if min(im.size) > 2 * side:
            scale = 2 * side / min(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), 3)
        out.append(im)
    return out


class DecodedRows(torch.utils.data.Dataset):
    """Decoded RGB images (N) with their labels (N,) as (transformed image (3, H, W), label) pairs."""

    def __init__(self, images: list, labels: np.ndarray, transform: Any) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])


@dataclass
class CellData:
    """One cell's image sets: fit rows (train transform; fit_eval: the same rows, eval transform for the
    LP-FT probe), validation rows (pick lr and epoch), test rows (touched once), all with eval transforms."""

    fit: DecodedRows
    fit_eval: DecodedRows
    val: DecodedRows
    test: DecodedRows
    n_classes: int
    side: int  # the input side after the img_size cap


def cell_data(backbone: Backbone, train_images: Any, test_images: Any, options: FinetuneOptions,
              dataset: str) -> CellData:  # fmt: skip
    """Draw, split and decode the cell's rows (train_images, test_images: ImageSets)."""
    train_labels, test_labels = train_images.labels, test_images.labels
    train_rows = np.arange(len(train_labels))
    if options.n_per_class is not None:
        train_rows, _ = balanced_indices(train_labels, options.n_per_class, options.seed)
    test_rows = np.arange(len(test_labels))
    if options.test_per_class is not None:
        test_rows, _ = balanced_indices(test_labels, options.test_per_class, options.seed)
    fit_pos, val_pos = stratified_split(train_labels[train_rows], options.val_fraction, options.seed)
    if len(val_pos) == 0:
        raise ZooRankError(
            f"{dataset}: no class has 2 train images, so no validation rows to pick the learning "
            "rate on; raise n_per_class or use a larger train split."
        )
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    train_tf, eval_tf, cfg = transforms(backbone, options)
    side = int(cfg["input_size"][-1])
    fit_rows, val_rows = train_rows[fit_pos], train_rows[val_pos]
    fit_images = decode_rows(train_images, fit_rows, side)
    return CellData(
        fit=DecodedRows(fit_images, train_labels[fit_rows], train_tf),
        fit_eval=DecodedRows(fit_images, train_labels[fit_rows], eval_tf),
        val=DecodedRows(decode_rows(train_images, val_rows, side), train_labels[val_rows], eval_tf),
        test=DecodedRows(decode_rows(test_images, test_rows, side), test_labels[test_rows], eval_tf),
        n_classes=n_classes,
        side=side,
    )
