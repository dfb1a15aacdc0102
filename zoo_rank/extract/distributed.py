"""torchrun: the process group, which block of the manifest each rank extracts, and moving results between ranks.

Under torchrun (WORLD_SIZE > 1) each rank extracts one contiguous block of the manifest (gloo on CPU,
nccl on CUDA), rank 0 gathers the blocks and commits ONE cache entry, every rank returns it.
"""

from __future__ import annotations

import atexit
import os
from typing import Any

import torch
import torch.distributed as dist

from zoo_rank.cache import Entry, FeatureSet
from zoo_rank.metrics import ClassStats


def process_group(device: torch.device) -> tuple[int, int]:
    """(rank, world size): the live process group, one started now from torchrun's env vars, or (0, 1).

    A group started here stays up for later calls (one CLI run extracts several models): tearing it down
    and starting another on torchrun's store races with the stale rendezvous keys of the first.
    """
    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        atexit.register(_destroy_process_group)
    return dist.get_rank(), dist.get_world_size()


def live_rank_world() -> tuple[int, int]:
    """(rank, world size) of a process group already running, else (0, 1); starts nothing."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast(obj: Any, world: int) -> Any:
    """Rank 0's `obj` on every rank."""
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, rank: int, world: int) -> list | None:
    """Every rank's `obj`, in rank order, on rank 0 (None elsewhere)."""
    if world == 1:
        return [obj]
    out = [None] * world if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def rank_block(n: int, rank: int, world: int) -> tuple[int, int]:
    """Manifest positions [first, end) that `rank` of `world` extracts: contiguous, sizes differ by <= 1."""
    return n * rank // world, n * (rank + 1) // world


def share(fs: FeatureSet | None, entry: Entry, rows: Any, rank: int, world: int) -> FeatureSet:
    """Every rank returns the committed entry: read from the shared cache folder, or sent by rank 0.

    rows: (N,) the manifest rows the entry holds (checked when a rank reads it from disk).
    """
    if world == 1:
        assert fs is not None
        return fs
    visible = [None] * world
    dist.all_gather_object(visible, entry.path.exists())
    if all(visible):
        return fs if rank == 0 else entry.read(rows)  # type: ignore[return-value]
    return broadcast(fs, world)  # no shared file system: rank 0 sends it


def class_stats(fs: FeatureSet) -> ClassStats:
    """zoo_rank.metrics.ClassStats of a whole entry, computed once across torchrun ranks.

    Under torch.distributed each rank adds only its block of rows (`rank_block`) and the statistics are
    all-reduced, so every rank gets the totals; a single process simply reads them all.
    """
    rank, world = live_rank_world()
    first, end = rank_block(len(fs.labels), rank, world)
    stats = ClassStats(dim=fs.features.shape[1])
    if end > first:
        stats.update(fs.features[first:end], fs.labels[first:end])
    return stats.all_reduce() if world > 1 else stats


__all__ = ["broadcast", "class_stats", "gather", "live_rank_world", "process_group", "rank_block", "share"]
