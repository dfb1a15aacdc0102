"""One extraction of the tiny image set, run as a subprocess by tests/test_cache.py (kill -9, concurrency).

usage: _cache_worker.py CACHE_DIR DELAY_S SHARD_SIZE  -> prints one JSON line: forward calls, key, timings.
A fresh interpreter, not a fork of pytest: polars' and OpenMP's thread pools do not survive fork().
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _extract_helpers import tiny_backbone, tiny_images

from zoo_rank.extract import extract_features
from zoo_rank.options import ExtractOptions


def main() -> None:
    cache_dir, delay_s, shard_size = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    backbone = tiny_backbone(delay_s=delay_s)
    fs = extract_features(
        backbone,
        tiny_images(),
        options=ExtractOptions(
            precision="fp32", device="cpu", batch_size=2, num_workers=0, cache_dir=cache_dir,
            shard_size=shard_size, quiet=True,
        ),
    )  # fmt: skip
    print(json.dumps({"calls": backbone.calls, "key": fs.key, "timings": fs.meta["timings"]}))


if __name__ == "__main__":
    main()
