"""The settings that travel down the stack, as frozen dataclasses (timm's flat configs, scikit-learn's
checks at the boundary): the CLI builds them once, every layer below reads the fields it needs.

A room keeps its own defaults (the 97-value L2 grid lives with the probe, the batch size per device with
extraction): a field left at None here means "the room's default", never a number chosen twice.

    subset = Subset(n_per_class=640, seed=0)
    extract = ExtractOptions(precision="auto", device="cpu", cache_dir="~/.cache/zoo_rank")
    fs = extract_features(backbone, images, subset=subset, options=extract)
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from zoo_rank._validation import ZooRankError

ON_BAD_IMAGE = ("error", "skip")
PRECISIONS = ("auto", "bf16", "fp32")
PROBE_METHODS = ("logistic", "ridge")


class _Options:
    def replace(self, **changes: Any):
        """A copy with `changes`; a change to None keeps the current value (an unset CLI option)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Subset(_Options):
    """Which rows of a split: `n_per_class` images of every class (None: all of them), drawn with `seed`."""

    n_per_class: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.n_per_class is not None and self.n_per_class < 1) or self.seed < 0:
            raise ZooRankError(
                f"need n_per_class >= 1 and seed >= 0, got n_per_class={self.n_per_class}, seed={self.seed}; "
                "pass e.g. --n-per-class 50 --seed 0"
            )


@dataclass(frozen=True)
class ExtractOptions(_Options):
    """How features are computed and where they are kept. None: the device's default (batch 256 on CUDA,
    32 on CPU cut into micro-batches of 8-32 chosen by timing; one decoding worker per free core) or the
    cache root ($ZOO_RANK_CACHE, platformdirs)."""

    precision: str = "auto"  # auto: bf16 autocast where the device has native bf16, else fp32
    device: str = "auto"
    batch_size: int | None = None
    num_workers: int | None = None
    cache_dir: str | os.PathLike | None = None
    skip_existing: bool = True
    shard_size: int | None = None  # rows per cache shard (None: ~10 s of work per shard)
    on_bad_image: str = "error"  # or "skip": leave unreadable images out and count them
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ZooRankError(
                f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}; pass --precision auto, "
                "bf16 or fp32."
            )
        if self.on_bad_image not in ON_BAD_IMAGE:
            raise ZooRankError(
                f"--on-bad-image {self.on_bad_image!r} is not known; use 'error' (stop at the first unreadable "
                "image) or 'skip' (leave such images out and count them)."
            )
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise ZooRankError(
                f"--batch-size {self.batch_size}: a batch needs at least 1 image; pass a positive number "
                "(e.g. 32) or leave it unset (256 on CUDA, 32 on CPU, halved on out-of-memory)."
            )
        if self.num_workers is not None and int(self.num_workers) < 0:
            raise ZooRankError(
                f"--num-workers {self.num_workers}: expected 0 (decode in the main process) or a positive "
                "number of decoding processes; leave it unset for one per free CPU core."
            )
        if self.shard_size is not None and int(self.shard_size) < 1:
            raise ZooRankError(f"shard_size={self.shard_size}: expected a positive number of rows, or None.")


@dataclass(frozen=True)
class ProbeOptions(_Options):
    """The linear probe: L2 chosen on validation accuracy over `l2_grid` (None: 97 log-spaced values in
    [1e-6, 1e6], the paper's grid), then refit on train + validation."""

    method: str = "logistic"
    l2_grid: tuple[float, ...] | None = None
    device: str = "auto"
    dtype: str = "auto"
    val_fraction: float = 0.2
    seed: int = 0
    early_stop: bool = True
    patience: int = 12
    tol: float = 1e-4
    max_iter: int = 500

    def __post_init__(self) -> None:
        if self.method not in PROBE_METHODS:
            raise ZooRankError(
                f"probe method {self.method!r} is not known; expected one of {', '.join(PROBE_METHODS)}."
            )
        if not 0 < self.val_fraction < 1:
            raise ZooRankError(
                f"val_fraction={self.val_fraction}; expected a fraction in (0, 1), e.g. 0.2 of the train rows."
            )
        if self.l2_grid is not None and not (
            len(self.l2_grid) and all(0 < v < math.inf for v in self.l2_grid)
        ):
            raise ZooRankError(
                f"l2_grid={self.l2_grid}: expected positive finite L2 strengths, e.g. (1e-3, 1e-2)."
            )
        if self.patience < 1 or self.max_iter < 1 or self.tol <= 0:
            raise ZooRankError(
                f"patience={self.patience}, max_iter={self.max_iter}, tol={self.tol}: expected positive values."
            )


@dataclass(frozen=True)
class BoardOptions(_Options):
    """What a board shows: its name, the score columns (None: the registry's default list), the column it
    is sorted by (None: VCI, or its shrinkage variant where N < 5p), and the bootstrap size of its CIs."""

    name: str = "zoo_rank"
    metrics: tuple[str, ...] | None = None
    primary: str | None = None
    command: str = ""
    created: str = ""
    n_boot: int = 200

    def __post_init__(self) -> None:
        if self.n_boot < 0:
            raise ZooRankError(f"n_boot={self.n_boot}: expected 0 (no intervals) or a positive number, e.g. 200.")


__all__ = ["BoardOptions", "ExtractOptions", "ProbeOptions", "Subset"]
