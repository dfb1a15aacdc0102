"""Processes, devices and seeds of a training run: torchrun's process group, and per-epoch seeding that
makes a resumed run replay an uninterrupted one exactly."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
import torch.distributed as dist

from zoo_rank._device import pick_device

_WE_STARTED_DIST = False


def _distributed(device: str) -> tuple[int, int, torch.device]:
    """(rank, world_size, device): joins torchrun's process group when its environment says so.

    The device comes from the project's one picker (`_device.pick_device`: CUDA as cuda:$LOCAL_RANK, then
    MPS, then CPU); the backend is nccl on CUDA and gloo otherwise.
    """
    global _WE_STARTED_DIST
    dev = pick_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        _WE_STARTED_DIST = True
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    return rank, world, dev


def shutdown_distributed() -> None:
    """Leave the process group if `train` created it (torchrun runs); a caller's own group is left alone."""
    global _WE_STARTED_DIST
    if _WE_STARTED_DIST and dist.is_initialized():
        dist.destroy_process_group()
    _WE_STARTED_DIST = False


def is_main_process() -> bool:
    """True outside torchrun and on rank 0: the process that writes shared files and prints."""
    return not dist.is_initialized() or dist.get_rank() == 0


def _seed(seed: int, epoch: int, rank: int) -> None:
    """Seed everything an epoch draws from, from (seed, epoch, rank) alone, so a resumed epoch replays exactly.

    torch drives torchvision's augmentations, dropout and the loader workers' seeds; Python's `random`
    drives timm's AutoAugment in the main process (loader workers seed their own `random` from torch).
    """
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(2)
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))
    random.seed(int(state[0]))
