"""Run by `python -m torch.distributed.run --nproc-per-node 2` in tests/test_extract.py (gloo on CPU).

Each rank extracts its block of the tiny image set into the shared cache folder argv[1] and saves what it got
back, plus the all-reduced ClassStats, to argv[2]/rank<R>.npz.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch.distributed as dist
from _extract_helpers import tiny_backbone, tiny_images

from zoo_rank.extract import class_stats, extract_features, rank_block
from zoo_rank.options import ExtractOptions


def main() -> None:
    cache_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    backbone = tiny_backbone()
    # The process group comes from torchrun's env vars inside extract_features (gloo: CPU).
    fs = extract_features(
        backbone,
        tiny_images(),
        options=ExtractOptions(
            precision="fp32", device="cpu", batch_size=4, num_workers=0, cache_dir=cache_dir, quiet=True,
        ),
    )
    # The group stays up for later calls (and for the statistics reduced across ranks).
    assert dist.is_initialized() and dist.get_backend() == "gloo"
    rank = int(os.environ["RANK"])
    assert dist.get_rank() == rank
    stats = class_stats(fs)
    first, end = rank_block(len(fs.labels), rank, dist.get_world_size())
    np.savez(
        out / f"rank{rank}.npz",
        features=fs.features,
        labels=fs.labels,
        rows=fs.rows,
        calls=backbone.calls,
        block=np.array([first, end]),
        class_means=stats.class_means(),
        total_cov=stats.total_cov(),
        classes=np.array([int(c) for c in stats.classes], dtype=np.int64),
        world=fs.meta["world_size"],
        n_per_rank=np.array([t["n_computed"] for t in fs.meta["timings"]["per_rank"]]),
    )


if __name__ == "__main__":
    main()
