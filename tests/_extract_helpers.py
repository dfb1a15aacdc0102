"""Tiny, deterministic inputs for the extraction and cache tests (also imported by their subprocess workers).

A random-weights timm `test_efficientnet` (99k parameters, 160 px) and a few dozen generated images whose
colour depends on the class, so the features differ by class and a wrong row order shows.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # subprocess workers run from a temporary folder
    sys.path.insert(0, str(ROOT))

N_CLASSES = 3
PER_CLASS = 8
MODEL = "test_efficientnet"


def tiny_images(n_classes: int = N_CLASSES, per_class: int = PER_CLASS, size: int = 40, seed: int = 0):
    """An ImageSet of n_classes * per_class RGB images (size x size), labels interleaved 0,1,2,0,1,2,..."""
    import datasets
    from PIL import Image

    from zoo_rank.data import ImageSet

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n_classes * per_class):
        label = i % n_classes
        base = np.zeros((size, size, 3), dtype=np.float64)
        base[..., label % 3] = 160.0
        pixels = np.clip(base + rng.normal(0, 40, size=base.shape), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels))
        labels.append(label)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    digest = hashlib.sha256(f"tiny:{n_classes}:{per_class}:{size}:{seed}".encode()).hexdigest()[:16]
    return ImageSet(
        dataset=ds,
        name=f"tiny-{n_classes}x{per_class}",
        split="train",
        classes=[f"c{k}" for k in range(n_classes)],
        fingerprint=f"tiny:{digest}",
    )


def tiny_backbone(delay_s: float = 0.0):
    """Random-init test_efficientnet (same weights in every process); `delay_s` sleeps per forward call."""
    from zoo_rank.models import create_backbone

    backbone = create_backbone(MODEL, pretrained=False, seed=0)
    backbone.calls = 0
    plain = backbone.features

    def features(x: torch.Tensor) -> torch.Tensor:
        backbone.calls += 1
        if delay_s:
            time.sleep(delay_s)
        return plain(x)

    backbone.features = features
    return backbone


def fail_batches_above(backbone, limit: int) -> list[int]:
    """Make `backbone.features` raise a CUDA out-of-memory error on batches over `limit` rows, as the
    caching allocator does when a batch does not fit; returns the list of batch sizes it is called with."""
    plain = backbone.features
    seen: list[int] = []

    def features(x: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        if len(x) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return plain(x)

    backbone.features = features
    return seen


def direct_features(backbone, image_set, rows) -> np.ndarray:
    """Reference: the backbone's fp32 features of the given rows, one plain forward pass, (n, p)."""
    x = torch.stack([backbone.transform(image_set.dataset[int(r)]["image"]) for r in rows])
    with torch.inference_mode():
        return backbone.model.forward_head(backbone.model.forward_features(x), pre_logits=True).numpy()


def tiny_specs(folder: Path) -> tuple[str, str]:
    """(model spec, data spec) strings for the CLI and load_features: a timm local-dir export of the tiny
    backbone and the tiny images as a parquet file in the datasets layout."""
    import timm

    model_dir, data_file = folder / "tiny-model", folder / "tiny.parquet"
    if not model_dir.is_dir():
        timm.models.save_for_hf(tiny_backbone().model, model_dir, safe_serialization=True)
    if not data_file.is_file():
        tiny_images().dataset.to_parquet(str(data_file))
    return f"local-dir:{model_dir}", str(data_file)
