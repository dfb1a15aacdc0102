"""The data side of extraction: a DataLoader whose workers decode and transform whole batches while the
model runs (pinned memory on CUDA), and what happens to an image that does not decode: the run stops
naming the file and the data set, or with ``on_bad_image="skip"`` it is left out and listed in the
entry's ``meta["skipped_images"]``."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from zoo_rank._validation import ZooRankError

_Item = tuple[torch.Tensor | None, int, int, str | None]
Batch = tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, list[tuple[int, str]]]


def default_num_workers(device: torch.device) -> int:
    """DataLoader workers: the CPUs this process may use (split between local torchrun ranks).

    On CPU one core is left to the model's own threads (2 cores -> 1 worker that decodes ahead while the
    model runs), at most 8. On an accelerator JPEG decoding bounds the run, so every core decodes (up to
    32): on a 16-core H200 host, 16 workers fed resnet50 2,081 images/s against 1,391 with 8, while the
    GPU alone runs 12,854 (scripts/bench_gpu.sh).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cpus = os.cpu_count() or 1
    cpus = max(1, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    return min(8, cpus - 1) if device.type == "cpu" else min(32, cpus)


class ImageRows(torch.utils.data.Dataset):
    """Rows of a `datasets.Dataset` as (image tensor (3,H,W), label, row, None); decodes a whole batch per
    call. An image that does not decode or transform comes back as (None, label, row, what went wrong):
    the worker never raises for it, so the main process can name the file or skip it."""

    def __init__(self, dataset: Any, rows: np.ndarray, transform: Any, name: str = "the data"):
        self.dataset = dataset
        self.rows = rows
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return len(self.rows)

    def _items(self, rows: list[int]) -> list[_Item]:
        try:
            batch = self.dataset[rows]  # one arrow take + decode for the batch, not one lookup per image
            # zoo_rank.data decodes to RGB and the backbone's transform converts any other mode itself.
            return [
                (self.transform(img), int(label), row, None)
                for img, label, row in zip(batch["image"], batch["label"], rows, strict=True)
            ]
        except Exception:  # some image of the batch is broken: find which, one at a time
            return [self._one(row) for row in rows]

    def _one(self, row: int) -> _Item:
        try:
            item = self.dataset[row]
            return self.transform(item["image"]), int(item["label"]), row, None
        except Exception as err:  # PIL, datasets and the transform raise many types for a bad file
            raw = self.dataset.with_format("arrow")[row : row + 1]  # no decoding: the stored path
            image = raw["image"][0].as_py() if "image" in raw.column_names else None
            path = image.get("path") if isinstance(image, dict) else None
            where = f"{path} (row {row})" if path else f"row {row}"
            detail = (str(err).strip().splitlines() or [""])[0][:200]
            label = int(raw["label"][0].as_py()) if "label" in raw.column_names else -1
            return (
                None,
                label,
                row,
                f"image {where} of {self.name} does not decode ({type(err).__name__}: {detail})",
            )

    def __getitems__(self, idx: list[int]) -> list[_Item]:
        return self._items([int(self.rows[i]) for i in idx])

    def __getitem__(self, i: int) -> _Item:
        return self._items([int(self.rows[i])])[0]


def collate(items: list[_Item]) -> Batch:
    """(images (B,3,H,W) or None when all are bad, labels (B,), rows (B,), [(row, problem)] of bad images)."""
    good = [it for it in items if it[3] is None]
    bad = [(it[2], str(it[3])) for it in items if it[3] is not None]
    images = torch.stack([it[0] for it in good]) if good else None
    labels = torch.tensor([it[1] for it in good], dtype=torch.int64)
    return images, labels, torch.tensor([it[2] for it in good], dtype=torch.int64), bad


def image_loader(
    rows: ImageRows, *, batch_size: int, num_workers: int, pin_memory: bool
) -> torch.utils.data.DataLoader:
    """Batches of `rows` in order, decoded by `num_workers` processes ahead of the model."""
    return torch.utils.data.DataLoader(
        rows,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        # Deep enough that a slow image or two never stalls the model; with many workers (GPU hosts)
        # 2 each already keeps dozens of batches in flight, and 4 would pin several GB of host memory.
        prefetch_factor=(4 if num_workers <= 8 else 2) if num_workers > 0 else None,
    )


def skipped_note(skipped: list[dict]) -> str:
    """A board note for the images left out by on_bad_image="skip" (meta["skipped_images"])."""
    return (
        f"{len(skipped)} image(s) skipped because they do not decode (--on-bad-image skip); "
        f"first: {skipped[0]['problem']}"
    )


def bad_image_error(problem: str) -> ZooRankError:
    """The one-line error for an image that does not decode: which file, which data set, both ways out."""
    return ZooRankError(
        f"{problem}; replace or delete the file, or pass --on-bad-image skip to leave unreadable images out "
        "(the board says how many)."
    )


__all__ = [
    "ImageRows",
    "bad_image_error",
    "collate",
    "default_num_workers",
    "image_loader",
    "skipped_note",
]
