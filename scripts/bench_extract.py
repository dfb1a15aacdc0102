"""Extraction speed: model alone (fp32 vs the default precision), data pipeline alone, both together, and
reading the cache back against numpy.load.

    .venv/bin/python scripts/bench_extract.py                       # imagenet-sample, 256 images
    .venv/bin/python scripts/bench_extract.py --n 1000 --models resnet50 --batch-size 64
    .venv/bin/python scripts/bench_extract.py --skip-models --cache-rows 50000 --cache-dim 2048
    python scripts/bench_extract.py --synthetic 2048 --batch-size 256   # no image files needed (GPU hosts)

Models have random weights (speed does not depend on them). The data pipeline is the extraction's own
DataLoader (batched decode + each model's eval transform) with the default worker count and with none;
the end-to-end row is `extract_features` itself, so comparing the three shows which side bounds a run.
`--synthetic N` writes N smooth-noise 500x375 JPEGs (ImageNet's typical size) into a temporary parquet in
the datasets image layout, for machines without ../shared/data; their decode cost is close to photos'.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "imagenet-sample" / "sample.parquet"


def versions() -> str:
    import datasets
    import polars
    import timm

    import zoo_rank

    return (
        f"python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}, datasets "
        f"{datasets.__version__}, polars {polars.__version__}, numpy {np.__version__}, zoo_rank {zoo_rank.__version__}"
    )


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}"
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        name = next(
            ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")
        )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    flags = torch.backends.cpu.get_cpu_capability()
    return f"CPU {name} ({flags}), {cores} cores, torch threads {torch.get_num_threads()}"


def synthetic_images(n: int, folder: Path, seed: int = 0) -> Path:
    """n JPEGs of 500x375 pixels, 100 classes, as a parquet in the datasets image layout."""
    import io

    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)

    def jpeg(i: int) -> dict:
        # Low-frequency colour fields plus fine grain: JPEG sizes and decode times like photographs',
        # where pure noise would be several times larger and slower to decode.
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375), 3)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (375, 500, 3), dtype=np.int16)
        buf = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        return {"bytes": buf.getvalue(), "path": f"{i}.jpg"}

    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[f"c{k}" for k in range(100)])}
    )
    unique = [jpeg(i) for i in range(min(n, 512))]  # decoding repeated bytes costs the same; saves time
    table = datasets.Dataset.from_dict(
        {"image": [unique[i % len(unique)] for i in range(n)], "label": [i % 100 for i in range(n)]},
        features=features,
    )
    path = folder / "synthetic.parquet"
    table.to_parquet(str(path))
    return path


def time_loader(images, rows, transform, batch_size: int, workers: int) -> float:
    """(images/s, seconds to the first batch) of the extraction DataLoader alone: decode + transform +
    collate, nothing else. Use many more batches than workers, or the start-up dominates."""
    from zoo_rank.extract.loader import ImageRows, collate

    loader = torch.utils.data.DataLoader(
        ImageRows(images.dataset, rows, transform),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        prefetch_factor=4 if workers else None,
    )
    t0 = time.perf_counter()
    batches = iter(loader)
    n = len(next(batches)[0])
    first = time.perf_counter() - t0  # worker start-up included; a long run amortises it
    n += sum(len(batch[0]) for batch in batches)
    return n / (time.perf_counter() - t0), first


def time_model(
    backbone, x: torch.Tensor, device: torch.device, precision: str, channels_last: bool, reps: int
) -> float:
    """Images/s of the backbone alone on one pre-transformed batch x (B, 3, H, W): the best of `reps` timed
    batches after one warm-up batch (best-of, as timeit does: other load on the machine only slows a run)."""
    from zoo_rank.extract.forward import Forward, on_device

    forward = Forward(backbone, device, precision, len(x), quiet=True)
    forward.channels_last = channels_last
    best = float("inf")
    with on_device(backbone, device, channels_last), torch.inference_mode():
        forward(x)  # warm-up: oneDNN/cuDNN pick and JIT their kernels for these shapes
        for _ in range(reps):
            t0 = time.perf_counter()
            forward(x)  # returns a CPU tensor: the device is synchronised
            best = min(best, time.perf_counter() - t0)
    return len(x) / best


def bench_models(args, device: torch.device) -> None:
    from zoo_rank._device import resolve_precision
    from zoo_rank.data import load_images
    from zoo_rank.extract import default_num_workers, extract_features
    from zoo_rank.models import create_backbone
    from zoo_rank.options import ExtractOptions

    images = load_images(str(args.images))
    rows = np.arange(min(args.n, len(images.dataset)), dtype=np.int64)
    subset = type(images)(
        dataset=images.dataset.select(rows),
        name=f"{images.name}[:{len(rows)}]",
        split=images.split,
        classes=images.classes,
        fingerprint=f"{images.fingerprint}[:{len(rows)}]",
    )
    default = resolve_precision("auto", device)
    workers = default_num_workers(device)
    print(f"images: {args.images} ({len(rows)} of {len(images.dataset)}), batch {args.batch_size}")
    print(f"default precision on {device}: {default}; default DataLoader workers: {workers}\n")
    # Read the image bytes once so that no row below pays the cold page cache.
    for _ in subset.dataset.with_format("arrow").iter(batch_size=256):
        pass
    header = f"{'model':<24} {'what':<44} {'img/s':>8}"
    print(header)
    print("-" * len(header))
    for name in args.models:
        backbone = create_backbone(name, pretrained=False)
        x = torch.stack(
            [backbone.transform(images.dataset[int(i % len(rows))]["image"]) for i in range(args.batch_size)]
        )
        if device.type == "cuda":
            x = x.pin_memory()  # as the extraction DataLoader hands batches over on CUDA
        print(f"{name:<24} input {tuple(x.shape[1:])} from its eval transform", flush=True)
        fp32 = time_model(backbone, x, device, "fp32", False, args.reps)
        print(f"{name:<24} {'model alone, fp32':<44} {fp32:8.1f}", flush=True)
        auto = time_model(backbone, x, device, default, default == "bf16", args.reps)
        label = f"model alone, default ({default}{' + channels_last' if default == 'bf16' else ''})"
        print(f"{name:<24} {label:<44} {auto:8.1f}   {auto / fp32:.2f}x fp32", flush=True)
        if default == "bf16":
            plain = time_model(backbone, x, device, "bf16", False, args.reps)
            print(
                f"{name:<24} {'model alone, bf16 contiguous':<44} {plain:8.1f}   {plain / fp32:.2f}x fp32",
                flush=True,
            )
        for w in sorted(set(args.workers or [0, workers])):
            rate, first = time_loader(subset, np.arange(len(rows)), backbone.transform, args.batch_size, w)
            print(
                f"{name:<24} {f'data alone, {w} workers':<44} {rate:8.1f}   (first batch after {first:.1f} s)",
                flush=True,
            )
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            fs = extract_features(
                backbone, subset, options=ExtractOptions(batch_size=args.batch_size, cache_dir=tmp, quiet=True, device=device)
            )
            wall = time.perf_counter() - t0
            t = fs.meta["timings"]
            print(
                f"{name:<24} {'extract_features, default':<44} {len(rows) / wall:8.1f}   "
                f"(waiting for data {t['data_wait_s']:.1f} s, model {t['model_s']:.1f} s)",
                flush=True,
            )
        print()


def bench_cache(args) -> None:
    import polars as pl

    from zoo_rank.cache import Entry

    rng = np.random.default_rng(0)
    n, p = args.cache_rows, args.cache_dim
    # bf16-rounded features, as the default precision writes them (float32 with 16 zero mantissa bits)
    feats = torch.from_numpy(rng.random((n, p), dtype=np.float32)).bfloat16().float().numpy()
    labels = rng.integers(0, 1000, n).astype(np.int64)
    gb = feats.nbytes / 1e9
    print(f"cache read-back: {n} x {p} float32 = {gb:.2f} GB (bf16-rounded values)")
    with tempfile.TemporaryDirectory() as tmp:
        entry = Entry(Path(tmp), "bench" + "0" * 19)
        t0 = time.perf_counter()
        entry.commit(np.arange(n), labels, feats, {"model": "bench"})
        write = time.perf_counter() - t0
        np.save(Path(tmp) / "f.npy", feats)
        size = entry.path.stat().st_size / 1e9
        best_read = best_npy = best_polars = float("inf")
        for _ in range(args.reps):
            t0 = time.perf_counter()
            fs = entry.read()
            best_read = min(best_read, time.perf_counter() - t0)
            t0 = time.perf_counter()
            pl.read_parquet(entry.path, columns=["label", "features"])["features"].to_numpy()
            best_polars = min(best_polars, time.perf_counter() - t0)
            t0 = time.perf_counter()
            back = np.load(Path(tmp) / "f.npy")
            best_npy = min(best_npy, time.perf_counter() - t0)
        assert np.array_equal(fs.features, feats) and np.array_equal(back, feats)
    print(f"  parquet file {size:.2f} GB on disk ({size / gb:.0%} of raw), commit {write / gb:.2f} s/GB")
    print(
        f"  Entry.read (verified, writeable copy): {best_read / gb:.2f} s/GB  (best of {args.reps}, warm page cache)"
    )
    print(
        f"  polars read_parquet alone:             {best_polars / gb:.2f} s/GB  (zero-copy view, no checks)"
    )
    print(
        f"  numpy.load of the same matrix:         {best_npy / gb:.2f} s/GB  -> {best_read / best_npy:.1f}x numpy"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=Path, default=DEFAULT_IMAGES, help="parquet in the datasets image layout"
    )
    parser.add_argument("--synthetic", type=int, default=0, metavar="N", help="use N generated JPEGs")
    parser.add_argument("--n", type=int, default=256, help="images for the data and end-to-end rows")
    parser.add_argument("--models", nargs="+", default=["tf_efficientnet_lite0", "resnet50"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3, help="timed model batches (and cache reads)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, nargs="+", help="DataLoader worker counts for the data rows")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--skip-cache", action="store_true")
    parser.add_argument("--cache-rows", type=int, default=50_000)
    parser.add_argument("--cache-dim", type=int, default=2048)
    args = parser.parse_args()

    from zoo_rank._device import pick_device

    device = pick_device(args.device)
    print("$ " + shlex.join([Path(sys.executable).name, *sys.argv]))
    print(versions())
    print(machine(device) + "\n")
    tmp = tempfile.TemporaryDirectory()
    if args.synthetic:
        args.images = synthetic_images(args.synthetic, Path(tmp.name))
        args.n = args.synthetic
    if not args.skip_models:
        if not args.images.is_file():
            sys.exit(f"{args.images} is absent; pass --images PATH (a parquet in the datasets image layout)")
        bench_models(args, device)
    if not args.skip_cache:
        bench_cache(args)


if __name__ == "__main__":
    main()
