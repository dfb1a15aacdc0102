"""The one device picker and precision rule, shared by extraction and the cache keys.

"auto" device: CUDA (``cuda:$LOCAL_RANK`` under torchrun), then MPS, then CPU. "auto" precision: bf16
autocast where the hardware runs it natively (CUDA with bf16, x86 CPUs with AVX512-BF16 or AMX, where
scripts/bench_extract.py measures it against fp32), else fp32 (bf16 would run emulated there).
"""

from __future__ import annotations

import os

import torch

from zoo_rank._validation import ZooRankError
from zoo_rank.options import PRECISIONS


def pick_device(device: str | torch.device = "auto", *, allow_mps: bool = True) -> torch.device:
    """The device to run on: "auto" means CUDA (``cuda:$LOCAL_RANK`` under torchrun), then MPS, then CPU.

    allow_mps=False keeps "auto" off MPS, for float64 work (the probes), which MPS does not run.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        mps = getattr(torch.backends, "mps", None)
        if allow_mps and mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ZooRankError(
            f"device {device!r} is not a torch device; pass auto, cpu, cuda, cuda:N or mps."
        ) from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ZooRankError(
                f"device {device!r} was requested but CUDA is not available; pass --device cpu or auto."
            )
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    return dev


def _cpu_has_native_bf16() -> bool:
    # Private helpers of torch.cpu (used by torch.compile's CPU backend); when absent, assume no native
    # bf16 and keep the fp32 reference path.
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(torch.cpu, name, None)
        if fn is not None and fn():
            return True
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" -> "bf16" where autocast is native and faster (CUDA with bf16, AVX512-BF16/AMX CPUs), else "fp32"."""
    if precision not in PRECISIONS:
        raise ZooRankError(
            f"precision {precision!r} is not one of {', '.join(PRECISIONS)}; pass --precision auto, bf16 or fp32."
        )
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if _cpu_has_native_bf16() else "fp32"
    return "fp32"  # MPS: bf16 autocast support depends on the macOS version; stay exact
