"""What a run reads: its images (train subset, tracking subsets, final test rows) and their transforms.

Subsets come from `zoo_rank.data.balanced_subset`, drawn once per process for each (data, split, subset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from zoo_rank.data import ImageSet, balanced_indices, balanced_subset, load_images
from zoo_rank.options import Subset
from zoo_rank.train.recipes import Recipe


def data_config(recipe: Recipe) -> dict[str, Any]:
    """The eval preprocessing of a trained model, as timm's pretrained config records it."""
    return {
        "input_size": (3, recipe.img_size, recipe.img_size),
        "interpolation": recipe.interpolation,
        "mean": tuple(recipe.mean),
        "std": tuple(recipe.std),
        "crop_pct": recipe.crop_pct,
        "crop_mode": "center",
    }


def train_transform(recipe: Recipe) -> Any:
    """PIL -> (3, img_size, img_size) tensor with the recipe's augmentation."""
    import timm.data
    from torchvision import transforms as T

    if recipe.augment == "autoaugment":
        return timm.data.create_transform(
            input_size=recipe.img_size,
            is_training=True,
            auto_augment=recipe.auto_augment_policy,
            interpolation=recipe.interpolation,
            mean=recipe.mean,
            std=recipe.std,
        )
    if recipe.augment == "crop-flip":
        interpolation = T.InterpolationMode(recipe.interpolation)
        return T.Compose(
            [
                T.Resize(recipe.img_size, interpolation=interpolation),
                T.CenterCrop(recipe.img_size),
                T.RandomCrop(recipe.img_size, padding=recipe.crop_padding),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize(recipe.mean, recipe.std),
            ]
        )
    return eval_transform(recipe)


def eval_transform(recipe: Recipe) -> Any:
    """timm's eval transform of the exported pretrained config: exactly what a zoo user of the model gets."""
    import timm.data

    return timm.data.create_transform(**data_config(recipe))


@dataclass
class _Data:
    train_images: ImageSet
    test_images: ImageSet
    train_indices: np.ndarray
    train_labels: np.ndarray
    test_labels: np.ndarray
    track: dict[str, tuple[ImageSet, np.ndarray, np.ndarray]]  # split -> (images, indices, labels)
    final_test: np.ndarray  # test rows of the accuracy reported after the last epoch
    classes: list[str]


def _rows(images: ImageSet, n_per_class: int | None, seed: int) -> np.ndarray:
    """(M,) rows: a balanced subset of n_per_class per class, or every row when n_per_class is None."""
    if n_per_class is None:
        return np.arange(len(images))
    return balanced_subset(images, Subset(n_per_class=n_per_class, seed=seed)).indices


def _load_data(recipe: Recipe) -> _Data:
    train_images = load_images(recipe.train_data, recipe.train_split)
    test_images = load_images(recipe.test_data, recipe.test_split)
    train_labels, test_labels = train_images.labels, test_images.labels
    train_indices = _rows(train_images, recipe.n_per_class, recipe.seed)
    # The fixed train subset is drawn from the images actually trained on.
    picked, _ = balanced_indices(train_labels[train_indices], recipe.track_train_per_class, seed=recipe.seed)
    return _Data(
        train_images=train_images,
        test_images=test_images,
        train_indices=train_indices,
        train_labels=train_labels,
        test_labels=test_labels,
        track={
            "train": (train_images, train_indices[picked], train_labels),
            "test": (test_images, _rows(test_images, recipe.track_test_per_class, recipe.seed), test_labels),
        },
        final_test=_rows(test_images, recipe.final_test_per_class, recipe.seed),
        classes=list(train_images.classes),
    )
