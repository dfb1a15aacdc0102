"""The model side of extraction: a batch in, penultimate features out, on one device in one precision.

- precision "auto" is bf16 autocast + channels_last where the hardware has native bf16 (CUDA with bf16,
  x86 CPUs with AVX512-BF16 or AMX), else fp32; "fp32" is the plain reference path. Features are float32;
- an out-of-memory error halves the batch and the run goes on;
- on the CPU, unless a batch size was asked for, the micro-batch is measured rather than assumed
  (`MicroBatchTuner`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from zoo_rank._console import warn

DEFAULT_BATCH_SIZE = {"cuda": 256, "mps": 64, "cpu": 32}
# Micro-batches tried on the CPU, and how many full chunks of each are timed after one untimed chunk (the
# untimed one pays oneDNN's primitive creation for the new shape).
CPU_MICRO_CANDIDATES = (32, 16, 8)
_TIMED_CHUNKS = 2


def batch_size_for(device: torch.device, asked: int | None) -> int:
    """The batch size asked for, else the device's default (halved later on out-of-memory)."""
    return DEFAULT_BATCH_SIZE.get(device.type, 32) if asked is None else int(asked)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


class MicroBatchTuner:
    """Picks the CPU micro-batch by timing real chunks: each candidate runs one untimed chunk, then
    `_TIMED_CHUNKS` timed ones; the fastest per image wins and is kept for the rest of the run.

    Why: on the 2-core AMD EPYC we develop on, bf16 channels_last convolutions ran 1.3x faster per image
    at micro-batch 8-16 than at 32 (lite0 186 vs 143 img/s, lite2 103 vs 77, MobileNetV2 198 vs 150:
    activations that stay in cache), while other CPUs and models peak elsewhere. Every timed chunk is
    real work whose features are kept, so tuning costs only the slower candidates' extra seconds.
    """

    def __init__(self, candidates: tuple[int, ...]):
        self.candidates = list(candidates)
        self.seconds_per_image: dict[int, float] = {}
        self._seen: dict[int, list[float]] = {c: [] for c in self.candidates}
        self._untimed: set[int] = set()

    @property
    def done(self) -> bool:
        return len(self.seconds_per_image) == len(self.candidates)

    def next_size(self) -> int:
        for c in self.candidates:
            if c not in self.seconds_per_image:
                return c
        return self.best

    @property
    def best(self) -> int:
        return min(self.seconds_per_image, key=self.seconds_per_image.__getitem__)

    def record(self, size: int, n: int, seconds: float) -> None:
        """One chunk of `n` images asked at `size` took `seconds`; partial chunks tell nothing."""
        if n != size or size in self.seconds_per_image:
            return
        if size not in self._untimed:
            self._untimed.add(size)
            return
        self._seen[size].append(seconds / n)
        if len(self._seen[size]) >= _TIMED_CHUNKS:
            self.seconds_per_image[size] = min(self._seen[size])


class Forward:
    """Backbone features of a batch on `device` in `precision`; halves the micro-batch on out-of-memory.

    __call__: (B, 3, H, W) float tensor (CPU) -> (B, p) float32 tensor (CPU).
    `tune_micro`: on the CPU, choose the micro-batch among the candidates <= `batch_size` by measurement
    (`MicroBatchTuner`); `micro` is then the chosen one once tuning is done.
    """

    def __init__(
        self,
        backbone: Any,
        device: torch.device,
        precision: str,
        batch_size: int,
        *,
        quiet: bool,
        tune_micro: bool = False,
    ):
        self.backbone = backbone
        self.device = device
        self.bf16 = precision == "bf16"
        # channels_last lets oneDNN / cuDNN pick their fast bf16 convolution kernels; fp32 stays the
        # untouched reference layout.
        self.channels_last = self.bf16
        self.micro = batch_size
        self.quiet = quiet
        sizes = tuple(c for c in CPU_MICRO_CANDIDATES if c <= batch_size)
        self.tuner = MicroBatchTuner(sizes) if tune_micro and device.type == "cpu" and len(sizes) > 1 else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        start = 0
        while start < len(x):
            tuning = self.tuner is not None and not self.tuner.done
            size = self.tuner.next_size() if tuning else self.micro
            try:
                t0 = time.perf_counter()
                out.append(self._features(x[start : start + size]))
                if tuning:
                    self.tuner.record(size, len(out[-1]), time.perf_counter() - t0)
                    if self.tuner.done:
                        self.micro = self.tuner.best
                start += size
                continue
            except RuntimeError as err:  # torch.OutOfMemoryError is a RuntimeError
                if not _is_oom(err) or size == 1:
                    raise
            # Outside the except block: the traceback no longer pins the failed batch's tensors.
            self.micro, self.tuner = size // 2, None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if not self.quiet:
                warn(f"out of memory at batch size {size}; going on with {self.micro}.")
        return torch.cat(out)

    def _features(self, chunk: torch.Tensor) -> torch.Tensor:
        chunk = chunk.to(self.device, non_blocking=True)
        if self.channels_last:
            chunk = chunk.contiguous(memory_format=torch.channels_last)
        with (
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16),
            _exact_fp32(self.device.type == "cuda" and not self.bf16),
        ):
            return self.backbone.features(chunk).float().cpu()


@contextlib.contextmanager
def _exact_fp32(active: bool) -> Iterator[None]:
    """fp32 means IEEE fp32: cuDNN convolutions default to TF32 (10-bit mantissa) on Ampere and later,
    which moved features of size 1e-3 by up to 1e-5 on an H200; the fp32 reference must not depend on the
    GPU generation."""
    if not active:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@contextlib.contextmanager
def on_device(backbone: Any, device: torch.device, channels_last: bool) -> Iterator[None]:
    """Move the backbone's model to `device` (and channels_last) for the run; put it back afterwards."""
    model = backbone.model
    param = next(model.parameters(), None)
    home = param.device if param is not None else torch.device("cpu")
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        model.to(home)


def warn_nonfinite(features: np.ndarray, model: str) -> None:
    """The one finiteness check of extracted features, where they leave the model (N, p): a warning that
    names the way out (a bf16 overflow), not an error; what is committed is then read back checksummed."""
    bad = int((~np.isfinite(features).all(axis=1)).sum())
    if bad:
        warn(f"{bad} of {len(features)} feature rows contain NaN/Inf ({model}); try --precision fp32.")


__all__ = [
    "CPU_MICRO_CANDIDATES",
    "DEFAULT_BATCH_SIZE",
    "Forward",
    "MicroBatchTuner",
    "batch_size_for",
    "on_device",
    "warn_nonfinite",
]
