"""A zoo on one image set: the per-model path as it ran before issue 14 against decode-once, same run.

    .venv/bin/python scripts/bench_zoo.py                          # 5 offline models, 5,000 CIFAR-10 images
    .venv/bin/python scripts/bench_zoo.py --n-per-class 50 --order old new pil new old

old: for each model, zoo_rank.extract.extract_features (each model decodes every image with PIL in its
DataLoader worker and applies timm's PIL transform) at a fixed batch of 32, the CPU default before the
micro-batch was measured (zoo_rank.extract.forward.MicroBatchTuner); pil: the same per-model path with
today's defaults (the measured micro-batch), which separates the two changes; new:
zoo_rank.extract.zoo.extract_zoo with today's defaults (the images decoded once into uint8 squares, each
model's transform as batched tensor ops, the measured micro-batch). Every path builds its backbones inside
the timed region and writes to its own empty temporary cache; the default precision of this machine.
With --order old new new old, each path's time is the mean of its runs (drift on a shared machine cancels).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch

from zoo_rank._device import pick_device, resolve_precision
from zoo_rank.data import balanced_subset, load_images
from zoo_rank.extract import DEFAULT_BATCH_SIZE, extract_features
from zoo_rank.extract.zoo import extract_zoo
from zoo_rank.models import create_backbone
from zoo_rank.options import ExtractOptions, Subset

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODELS = [
    "pip:efficientnet-lite0",
    "pip:efficientnet-lite1",
    "pip:efficientnet-lite2",
    f"local-dir:{SHARED / 'models' / 'mobilenetv2_100'}",
    f"local-dir:{SHARED / 'models' / 'tf_mobilenetv3_small_100'}",
]


def per_model(models, images, n_per_class, cache, batch_size=None) -> float:
    t0 = time.perf_counter()
    options = ExtractOptions(cache_dir=cache, quiet=True, batch_size=batch_size)
    for spec in models:
        extract_features(create_backbone(spec), images, subset=Subset(n_per_class), options=options)
    return time.perf_counter() - t0


def old_path(models, images, n_per_class, cache) -> float:
    return per_model(models, images, n_per_class, cache, batch_size=DEFAULT_BATCH_SIZE["cpu"])


def new_path(models, images, n_per_class, cache) -> float:
    t0 = time.perf_counter()
    for result in extract_zoo(
        models, images, subset=Subset(n_per_class), options=ExtractOptions(cache_dir=cache, quiet=True)
    ):
        if isinstance(result, BaseException):
            raise result
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "data" / "cifar10" / "train.parquet"))
    parser.add_argument("--n-per-class", type=int, default=500, help="images per class (CIFAR-10: x10)")
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--order", nargs="+", default=["old", "new"], choices=["old", "new", "pil"])
    args = parser.parse_args()
    print("$ " + shlex.join([Path(sys.executable).name, *sys.argv]))
    device = pick_device("auto")
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}, "
        f"numpy {np.__version__}; {device}, {torch.get_num_threads()} threads, "
        f"precision {resolve_precision('auto', device)}"
    )
    images = load_images(args.data)
    n = len(balanced_subset(images, args.n_per_class).indices)
    print(f"{images.name}: {n} images ({args.n_per_class} per class), {len(args.models)} models\n")
    times: dict[str, list[float]] = {"old": [], "new": [], "pil": []}
    runs = {"old": old_path, "new": new_path, "pil": per_model}
    labels = {"old": "per-model PIL, batch 32", "new": "decode once (extract_zoo)", "pil": "per-model PIL, today"}
    for which in args.order:
        with tempfile.TemporaryDirectory() as cache:
            seconds = runs[which](args.models, images, args.n_per_class, cache)
        times[which].append(seconds)
        label = labels[which]
        print(
            f"{which}: {label:<28} {seconds:8.1f} s   {n * len(args.models) / seconds:6.1f} model-img/s",
            flush=True,
        )
    if times["old"] and times["new"]:
        old, new = np.mean(times["old"]), np.mean(times["new"])
        print(f"\nmean wall: old {old:.1f} s, new {new:.1f} s -> the zoo path is {old / new:.2f}x faster")
    if times["old"] and times["pil"]:
        old, pil = np.mean(times["old"]), np.mean(times["pil"])
        print(f"per-model path alone: old {old:.1f} s, today {pil:.1f} s -> {old / pil:.2f}x (the micro-batch)")


if __name__ == "__main__":
    main()
