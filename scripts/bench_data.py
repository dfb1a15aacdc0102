"""Benchmark image-set loading: built-in sets cold and warm, the encoding choice, decoding, subsets.

    .venv/bin/python scripts/bench_data.py [--decode 5000]

Prints the command line, versions and seconds for: Fashion-MNIST (60k train) loaded into a fresh cache
(arrays -> datasets once) and again (memory-mapped); the two ways of storing its 28x28 images, PNG (what
datasets.Image() does with arrays) and the binary PGM zoo_rank writes; decoding rows to RGB PIL images;
imagenet-sample (../shared/data) cold and warm; and a 50-per-class balanced subset with its manifest digest.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo_rank import data


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decode", type=int, default=5000, help="rows to decode for the images/s figure")
    args = parser.parse_args()

    import datasets
    import PIL

    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print(
        f"python {platform.python_version()}, datasets {datasets.__version__}, numpy {np.__version__}, "
        f"pillow {PIL.__version__}, {os.cpu_count()} CPUs ({platform.machine()})"
    )
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ZOO_RANK_CACHE"] = cache
        train, cold = timed(data.load_images, "fashion-mnist:train")
        _, warm = timed(data.load_images, "fashion-mnist:train")
        print(f"fashion-mnist train ({len(train)} images): first load {cold:.2f} s, later loads {warm:.3f} s")

        pixels = data._read_idx(
            Path(data.BUILTIN["fashion-mnist"].location) / "train-images-idx3-ubyte.gz", magic=2051
        )
        _, pgm = timed(data._arrow_dataset, pixels, np.zeros(len(pixels), np.int64))

        def png_all():
            from PIL import Image

            out = []
            for image in pixels:
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="PNG")
                out.append(buffer.getvalue())
            return out

        _, png = timed(png_all)
        print(
            f"encoding {len(pixels)} images: PNG {png:.2f} s, binary PGM into arrow {pgm:.2f} s ({png / pgm:.0f}x)"
        )

        rows = range(min(args.decode, len(train)))
        _, decode = timed(lambda: [train.dataset[i]["image"] for i in rows])
        print(f"decode to RGB PIL: {len(rows) / decode:.0f} images/s (one process)")

        manifest, subset = timed(data.balanced_subset, train, 50, 0)
        print(
            f"balanced_subset 50/class: {len(manifest.indices)} rows in {subset * 1e3:.1f} ms, digest {manifest.digest()}"
        )

        sample = data.shared_data_dir() / "imagenet-sample" / "sample.parquet"
        if sample.is_file():
            images, cold = timed(data.load_images, str(sample))
            _, warm = timed(data.load_images, str(sample))
            _, decode = timed(lambda: [images.dataset[i]["image"] for i in range(100)])
            print(
                f"imagenet-sample ({len(images)} JPEGs): first load {cold:.2f} s (datasets' arrow cache may already "
                f"exist), later {warm:.3f} s; decode {100 / decode:.0f} images/s"
            )
        else:
            print(f"imagenet-sample: {sample} absent, skipped")


if __name__ == "__main__":
    main()
