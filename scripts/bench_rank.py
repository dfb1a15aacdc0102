"""Time the embedded default of `zoo-rank rank` (target: under ~5 minutes on 2 CPU cores), cold and cached.

    .venv/bin/python scripts/bench_rank.py [--n-per-class 200] [--probe-n-per-class 50] [--probe-method logistic]

Runs the default board twice into a temporary folder with a fresh feature cache: the first run extracts
every model, the second is served by the cache (what a rerun of `zoo-rank rank` costs). Prints the
command line, versions, the CPU, and per model the seconds of each stage and the extraction throughput.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    from zoo_rank.jobs import rank as rank_mod
    from zoo_rank.options import BoardOptions, ExtractOptions, ProbeOptions, Subset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-per-class", type=int, default=rank_mod.DEFAULT_N_PER_CLASS)
    ap.add_argument("--probe-n-per-class", type=int, default=rank_mod.DEFAULT_PROBE_N_PER_CLASS)
    ap.add_argument("--probe-method", default=rank_mod.DEFAULT_PROBE_METHOD)
    args = ap.parse_args()

    import timm
    import torch

    import zoo_rank

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(
        f"versions: zoo_rank {zoo_rank.__version__}, torch {torch.__version__}, timm {timm.__version__}, "
        f"python {platform.python_version()}"
    )
    print(
        f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    )
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        for label in ("cold (extracts)", "cached rerun"):
            t0 = time.perf_counter()
            options = rank_mod.RankOptions(
                subset=Subset(args.n_per_class),
                probe_subset=Subset(args.probe_n_per_class),
                probe=ProbeOptions(method=args.probe_method),
                extract=ExtractOptions(cache_dir=cache, quiet=True),
                board=BoardOptions(command="bench"),
                out=Path(tmp) / "boards" / "default",
            )
            board, _ = rank_mod.rank(options=options)
            wall = time.perf_counter() - t0
            print(f"\n{label}: {wall:.1f} s wall for {len(board.results)} models")
            for r in board.results:
                t = r.timings
                n = r.conditions.get("images", 0)
                rate = f"{n / t['extract_s']:.0f} img/s" if t.get("extract_s") else "-"
                stages = ", ".join(f"{k} {v:.1f}" for k, v in t.items())
                print(f"  {r.label:36s} {stages}  (scored {n} images, {rate})")
            print(f"  recommendation: {board.recommendation()}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
