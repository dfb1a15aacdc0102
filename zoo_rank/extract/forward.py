"""The model side of extraction: a batch in, penultimate features out, on one device in one precision.

- precision "auto" is bf16 autocast + channels_last where the hardware has native bf16 (CUDA with bf16,
  x86 CPUs with AVX512-BF16 or AMX), else fp32; "fp32" is the plain reference path. Features are float32;
- an out-of-memory error halves the batch and the run goes on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from zoo_rank._console import warn

DEFAULT_BATCH_SIZE = {"cuda": 256, "mps": 64, "cpu": 32}


def batch_size_for(device: torch.device, asked: int | None) -> int:
    """The batch size asked for, else the device's default (halved later on out-of-memory)."""
    return DEFAULT_BATCH_SIZE.get(device.type, 32) if asked is None else int(asked)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


class Forward:
    """Backbone features of a batch on `device` in `precision`; halves the micro-batch on out-of-memory.

    __call__: (B, 3, H, W) float tensor (CPU) -> (B, p) float32 tensor (CPU).
    """

    def __init__(self, backbone: Any, device: torch.device, precision: str, batch_size: int, *, quiet: bool):
        self.backbone = backbone
        self.device = device
        self.bf16 = precision == "bf16"
        # channels_last lets oneDNN / cuDNN pick their fast bf16 convolution kernels; fp32 stays the
        # untouched reference layout.
        self.channels_last = self.bf16
        self.micro = batch_size
        self.quiet = quiet

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        start = 0
        while start < len(x):
            size = self.micro
            try:
                out.append(self._features(x[start : start + size]))
                start += size
                continue
            except RuntimeError as err:  # torch.OutOfMemoryError is a RuntimeError
                if not _is_oom(err) or size == 1:
                    raise
            # Outside the except block: the traceback no longer pins the failed batch's tensors.
            self.micro = size // 2
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


__all__ = ["DEFAULT_BATCH_SIZE", "Forward", "batch_size_for", "on_device", "warn_nonfinite"]
