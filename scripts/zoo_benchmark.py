"""Does the ranking hold? Models x real targets: every registry score against fine-tuned and probe accuracy.

    python scripts/zoo_benchmark.py                      # the default: ~13 models x 6 targets, CPU budget
    python scripts/zoo_benchmark.py --tiny --out /tmp/zb # smoke setting (~1 min): 2 models, 1 target
    python scripts/zoo_benchmark.py --full               # the GPU protocol (zoo_rank.finetune.FULL)

Writes leaderboards/zoo-benchmark.{md,csv,json,png} (the --tiny setting writes zoo-benchmark-tiny.*).
Every cell (features, scores, probe, each fine-tuning) is cached under --work: a rerun recomputes nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import timm
import torch

from zoo_rank import __version__
from zoo_rank._console import err_console
from zoo_rank._paths import cache_root
from zoo_rank.board.zoo import analyse, write_board
from zoo_rank.finetune import FULL, FinetuneOptions
from zoo_rank.jobs.benchmark import DEFAULT_TARGETS, TARGETS, TINY_TARGETS, Settings, run_grid
from zoo_rank.metrics import METRICS

TINY = dict(
    # lr 1e-3: at 1e-2 the LP-FT head's first steps blew MobileNetV3-Small up (val loss 2e3 on sign-digits).
    finetune=FinetuneOptions(epochs=1, lrs=(1e-3,), img_size=64, batch_size=8),
    spread_targets=TINY_TARGETS,
    spread_seeds=(1,),
    imagenet_models=("local-dir:" + str(Path(__file__).resolve().parents[1].parent / "shared" / "models" / "tf_mobilenetv3_small_100"),),
    imagenet_controls=(),
    tiny=True,
)


def settings_from(args: argparse.Namespace) -> Settings:
    targets = tuple(args.targets.split(",")) if args.targets else (TINY_TARGETS if args.tiny else DEFAULT_TARGETS)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    if args.tiny:
        return Settings(targets=targets, **TINY)
    ft = FULL if args.full else FinetuneOptions()
    return Settings(targets=targets, finetune=ft)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="smoke setting for tests (~1 minute)")
    p.add_argument("--full", action="store_true", help="GPU fine-tuning protocol (more epochs, larger LR grid)")
    p.add_argument("--targets", help=f"comma-separated subset of {', '.join(TARGETS)}")
    p.add_argument("--out", default="leaderboards", help="folder of the board")
    p.add_argument("--work", default=None, help="cells, fine-tunings and trained zoo (default: <cache root>/zoo-benchmark)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    settings = settings_from(args)
    work = Path(args.work) if args.work else cache_root() / ("zoo-benchmark-tiny" if args.tiny else "zoo-benchmark")
    command = shlex.join([Path(sys.executable).name, "scripts/zoo_benchmark.py", *(argv if argv is not None else sys.argv[1:])])
    err_console().print(f"{command}\nzoo_rank {__version__}, torch {torch.__version__}, timm {timm.__version__}, "
                        f"python {platform.python_version()}, {os.cpu_count()} CPUs", highlight=False)  # fmt: skip
    started, cpu_started = time.perf_counter(), time.process_time()
    zoo, cells = run_grid(settings, work, device=args.device, quiet=args.quiet)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    analysis = analyse(cells, seed=settings.seed)
    ft = settings.finetune
    run = {
        "command": command,
        "tiny": settings.tiny,
        "protocol": "full (GPU)" if args.full else "tiny smoke" if args.tiny else "default (CPU budget)",
        "wall_time_s (this call; cached cells cost ~0)": round(wall, 1),
        "cpu_time_s (this call, all threads)": round(cpu, 1),
        "cpu_time_s of the cells (sum over their result files, cached or not)": round(sum(
            c.get("cpu_seconds", 0) + sum(r.get("cpu_seconds") or 0 for r in c.get("finetune_runs", [])) for c in cells), 1),
        "wall_time_s of the cells (sum of extract + probe + fine-tuning seconds over their result files)": round(sum(
            sum((c.get("seconds") or {}).values()) + sum(r.get("seconds") or 0 for r in c.get("finetune_runs", []))
            for c in cells), 1),
        "cells": len(cells),
        "failed cells": [f"{c['model']} on {c['target']}: {c['error']}" for c in cells if "error" in c],
        "targets (train / test images per class cap)": {t: [TARGETS[t].train_per_class, TARGETS[t].test_per_class] for t in settings.targets},
        "fine-tuning": ft.to_dict(),
        "fine-tuning seed repeats": {"targets": settings.spread_targets, "extra seeds": settings.spread_seeds},
        "seeds": {"subset / split / head / data order": settings.seed},
        "scores (registry at run time)": list(METRICS),
        "versions": {"zoo_rank": __version__, "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }  # fmt: skip
    stem = Path(args.out) / ("zoo-benchmark-tiny" if args.tiny else "zoo-benchmark-full" if args.full else "zoo-benchmark")
    paths = write_board(analysis, zoo, cells, run, stem)
    err_console().print(f"{len(cells)} cells in {wall:.0f} s; wrote " + ", ".join(str(v) for v in paths.values()), highlight=False)
    return 0 if not run["failed cells"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
