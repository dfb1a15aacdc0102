"""Top-1 of the offline ImageNet models on imagenet-sample: timm's PIL transform path vs decode-once tensors.

    .venv/bin/python scripts/check_decode_top1.py                 # the five offline models, 1,000 images
    .venv/bin/python scripts/check_decode_top1.py --n 200 --models pip:efficientnet-lite0

Both paths go through the library (zoo_rank.extract.extract_features: each model decodes and transforms
with PIL; zoo_rank.extract.zoo.extract_zoo: decoded once, each model's transform as tensor ops) in a temporary
cache; logits are the features times each model's own classifier. The issue's bar: |difference| <= 0.5
points for every model.
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

from zoo_rank.data import load_images
from zoo_rank.extract import extract_features
from zoo_rank.extract.zoo import extract_zoo
from zoo_rank.models import create_backbone
from zoo_rank.options import ExtractOptions

ROOT = Path(__file__).resolve().parents[1]
SHARED_MODELS = ROOT.parent / "shared" / "models"
MODELS = [
    "pip:efficientnet-lite0",
    "pip:efficientnet-lite1",
    "pip:efficientnet-lite2",
    f"local-dir:{SHARED_MODELS / 'mobilenetv2_100'}",
    f"local-dir:{SHARED_MODELS / 'tf_mobilenetv3_small_100'}",
]


def top1(backbone, fs) -> float:
    weight, bias = backbone.classifier()
    logits = torch.from_numpy(fs.features) @ weight.float().T + (0 if bias is None else bias.float())
    return float((logits.argmax(1).numpy() == fs.labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--data", default="imagenet-sample")
    parser.add_argument("--n", type=int, default=0, help="first N images only (0: all)")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    print("$ " + shlex.join([Path(sys.executable).name, *sys.argv]))
    print(f"python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}")
    images = load_images(args.data)
    if args.n:
        rows = np.arange(min(args.n, len(images)))
        images = type(images)(
            images.dataset.select(rows), images.name, images.split, images.classes,
            f"{images.fingerprint}[:{len(rows)}]",
        )  # fmt: skip
    print(f"{images.name}: {len(images)} images\n")
    print(f"{'model':<48} {'PIL top-1':>9} {'tensor top-1':>12} {'diff (pt)':>9} {'agree':>6}")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        zoo = extract_zoo(
            args.models, images, options=ExtractOptions(precision=args.precision, cache_dir=tmp, quiet=True)
        )
        t_zoo = time.perf_counter() - t0
        t_pil = 0.0
        for spec, tensor in zip(args.models, zoo, strict=True):
            backbone = create_backbone(spec)
            t0 = time.perf_counter()
            pil = extract_features(
                backbone, images, options=ExtractOptions(precision=args.precision, cache_dir=tmp, quiet=True)
            )
            t_pil += time.perf_counter() - t0
            if isinstance(tensor, BaseException):
                raise tensor
            a, b = top1(backbone, pil), top1(backbone, tensor)
            w, _ = backbone.classifier()
            pa = (torch.from_numpy(pil.features) @ w.float().T).argmax(1)
            pb = (torch.from_numpy(tensor.features) @ w.float().T).argmax(1)
            worst = max(worst, abs(a - b) * 100)
            name = spec if len(spec) <= 48 else "..." + spec[-45:]
            print(
                f"{name:<48} {a:9.4f} {b:12.4f} {100 * (b - a):+9.2f} {float((pa == pb).float().mean()):6.3f}",
                flush=True,
            )
        print(f"\nprecision {pil.meta['precision']}; decode path {tensor.meta['decode']}")
        print(f"largest |difference|: {worst:.2f} points (bar: 0.5)")
        print(f"wall: per-model PIL path {t_pil:.1f} s, decode-once zoo {t_zoo:.1f} s")


if __name__ == "__main__":
    main()
