"""Generated images for the decode tests (also imported by tests/test_cuda.py): no zoo_rank import at the
top, so a CUDA host without polars still collects the GPU tests that need only torch."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

LITE0_CFG = {
    "input_size": (3, 224, 224),
    "interpolation": "bicubic",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "crop_pct": 0.875,
    "crop_mode": "center",
}
RESNET_CFG = {**LITE0_CFG, "interpolation": "bilinear", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "crop_pct": 0.95}  # fmt: skip


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8: a low-frequency colour field plus fine grain, like a photograph's statistics."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    grain = rng.integers(-6, 7, (h, w, 3))
    return np.clip(np.asarray(coarse, dtype=np.int32) + grain, 0, 255).astype(np.uint8)


def chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def jpeg_images(shapes: list[tuple[int, int]], quality: int = 90):
    """An ImageSet of JPEGs (smooth images of the given (h, w)), labels 0, 1, 0, 1, ...; plus their bytes."""
    import datasets

    from zoo_rank.data import ImageSet

    blobs = []
    for i, (h, w) in enumerate(shapes):
        buf = io.BytesIO()
        Image.fromarray(smooth_image(h, w, seed=i)).save(buf, format="JPEG", quality=quality)
        blobs.append(buf.getvalue())
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in blobs], "label": [i % 2 for i in range(len(blobs))]},
        features=features,
    )
    name = f"jpeg-{len(shapes)}"
    return ImageSet(ds, name, "train", ["a", "b"], f"{name}:{hash(tuple(shapes)) & 0xFFFF}"), blobs
