"""Class-balanced subsets, written down as manifests: which rows of an ImageSet a run uses.

``balanced_subset(images, Subset(n_per_class, seed))`` draws n images per class (all of a class that has
fewer, recorded in the manifest) reproducibly on any machine, once per process for each (data, split,
subset); ``Manifest.save`` / ``Manifest.load`` write it down as JSON, and its ``digest()`` goes into cache keys.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo_rank._console import warn
from zoo_rank._paths import write_text_atomic
from zoo_rank._validation import ZooRankError
from zoo_rank.data.images import ImageSet, _digest
from zoo_rank.options import Subset

MANIFEST_FORMAT = "zoo_rank.manifest/1"


@dataclass
class Manifest:
    """Which rows of an ImageSet a run uses: ``indices`` (sorted int64), how they were drawn, from what."""

    indices: np.ndarray
    n_per_class: int
    seed: int
    source_fingerprint: str
    dataset: str = ""
    split: str = ""
    short_classes: dict[int, int] = field(default_factory=dict)  # class -> rows available, when < n_per_class

    def __post_init__(self):
        self.indices = np.ascontiguousarray(self.indices, dtype=np.int64)

    def digest(self) -> str:
        """sha256 of what defines the selection: rows, n_per_class, seed and the source fingerprint."""
        return _digest(
            {
                "format": MANIFEST_FORMAT,
                "indices": hashlib.sha256(self.indices.astype("<i8").tobytes()).hexdigest(),
                "n_per_class": self.n_per_class,
                "seed": self.seed,
                "source_fingerprint": self.source_fingerprint,
            }
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the manifest as JSON (atomically); returns the path."""
        path = Path(path)
        record = {
            "format": MANIFEST_FORMAT,
            "digest": self.digest(),
            "dataset": self.dataset,
            "split": self.split,
            "source_fingerprint": self.source_fingerprint,
            "n_per_class": self.n_per_class,
            "seed": self.seed,
            "n_rows": len(self.indices),
            "short_classes": {str(k): v for k, v in sorted(self.short_classes.items())},
            "indices": self.indices.tolist(),
        }
        write_text_atomic(path, json.dumps(record, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Manifest:
        """Read a manifest written by ``save``; raises ZooRankError when it is damaged or edited."""
        try:
            record = json.loads(Path(path).read_text())
            manifest = cls(
                indices=np.asarray(record["indices"], dtype=np.int64),
                n_per_class=int(record["n_per_class"]),
                seed=int(record["seed"]),
                source_fingerprint=str(record["source_fingerprint"]),
                dataset=record.get("dataset", ""),
                split=record.get("split", ""),
                short_classes={int(k): int(v) for k, v in record.get("short_classes", {}).items()},
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ZooRankError(
                f"cannot read manifest {path} ({type(err).__name__}: {err}); write it again"
            ) from err
        if record.get("format") != MANIFEST_FORMAT or record.get("digest") != manifest.digest():
            raise ZooRankError(
                f"manifest {path} does not match its digest (edited or damaged); draw it again with balanced_subset"
            )
        return manifest


def balanced_indices(labels: Any, n_per_class: int, seed: int = 0) -> tuple[np.ndarray, dict[int, int]]:
    """Draw ``n_per_class`` rows of every class: ``(indices (M,) sorted int64, short_classes)``.

    Works on any (N,) non-negative integer labels. Each class draws from its own stream, PCG64 seeded by
    SeedSequence([seed, class]): a class's choice does not depend on the other classes, and the raw PCG64
    output (unlike Generator.choice/permutation algorithms) is guaranteed the same on every machine and
    numpy version. Rows of a class are ranked by one random 64-bit key each; the n smallest are taken.
    A class with fewer than n rows gives all of them and is listed in short_classes (class -> count).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ZooRankError(f"expected 1D integer labels, got shape {labels.shape} dtype {labels.dtype}")
    check_subset_args(n_per_class, seed)
    if len(labels) and labels.min() < 0:
        raise ZooRankError(f"labels must be >= 0 (found {int(labels.min())}); drop unlabelled rows first")
    order = np.argsort(labels, kind="stable")  # rows grouped by class, ascending within each class
    classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    chosen, short = [], {}
    for cls, start, count in zip(classes.tolist(), starts, counts, strict=True):
        rows = order[start : start + count]
        if count <= n_per_class:
            chosen.append(rows)
            if count < n_per_class:
                short[int(cls)] = int(count)
            continue
        keys = np.random.PCG64(np.random.SeedSequence([seed, int(cls)])).random_raw(int(count))
        chosen.append(rows[np.argsort(keys, kind="stable")[:n_per_class]])
    indices = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)
    return indices.astype(np.int64), short


def check_subset_args(n_per_class: int | None, seed: int) -> None:
    """Raise unless n_per_class (None = every image) is >= 1 and seed >= 0 (`Subset`'s own check)."""
    Subset(n_per_class=n_per_class, seed=seed)


# (fingerprint, name, split, n_per_class, seed) -> the manifest drawn for it in this process.
_DRAWN: dict[tuple, Manifest] = {}


def balanced_subset(images: ImageSet, subset: Subset | int, seed: int = 0) -> Manifest:
    """A class-balanced subset of an ImageSet (the paper: 50 ImageNet images per class), as a Manifest.

    `subset`: a Subset (n_per_class >= 1), or n_per_class itself with `seed` (the older call form). The
    draw is made once per process for each (data, split, subset), and the same Manifest (indices read-only)
    is returned after. Classes with fewer than n_per_class images give all they have, with a warning (once)
    that names them and their counts.
    """
    subset = subset if isinstance(subset, Subset) else Subset(n_per_class=subset, seed=seed)
    if subset.n_per_class is None:
        raise ZooRankError(
            "Subset(n_per_class=None) means every image, so there is no subset to draw; use the ImageSet as "
            "it is, or pass e.g. --n-per-class 50"
        )
    key = (images.fingerprint, images.name, images.split, subset.n_per_class, subset.seed)
    if key not in _DRAWN:
        indices, short = balanced_indices(images.labels, subset.n_per_class, subset.seed)
        indices.flags.writeable = False  # shared by every caller of this key
        manifest = Manifest(
            indices, subset.n_per_class, subset.seed, images.fingerprint, images.name, images.split, short
        )
        if short and manifest.digest() not in _WARNED_SHORT:
            _WARNED_SHORT.add(manifest.digest())
            warn(short_classes_message(images, manifest))
        _DRAWN[key] = manifest
    return _DRAWN[key]


_WARNED_SHORT: set[str] = set()


def short_classes_message(images: ImageSet, manifest: Manifest) -> str:
    """'3 of 10 classes of NAME:SPLIT have fewer than --n-per-class N images (cat 12, ...)': the numbers."""
    short = manifest.short_classes
    shown = ", ".join(f"{images.classes[k]} {n}" for k, n in sorted(short.items())[:8])
    more = ", ..." if len(short) > 8 else ""
    n_classes = len(np.unique(images.labels))
    return (
        f"{len(short)} of {n_classes} classes of {images.name}:{images.split} have fewer than --n-per-class "
        f"{manifest.n_per_class} images ({shown}{more}); they contribute all they have, so the subset holds "
        f"{len(manifest.indices)} images, not {n_classes * manifest.n_per_class}, and is not balanced"
    )
