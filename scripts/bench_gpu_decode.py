"""GPU decode + decode once, against the model alone measured as timm's benchmark.py measures it.

    python scripts/bench_gpu_decode.py [--n 8192] [--batch-size 256] [--models resnet50 tf_efficientnet_lite0]

On generated 500x375 JPEGs (ImageNet's typical size; smooth colour fields plus grain, so their decode cost
is a photograph's), for each model, in one run on one device:

- model alone, as timm's benchmark.py (InferenceBenchmarkRunner) measures it: random input already on the
  device at the model's input size, eval(), channels_last, bf16 autocast, no_grad, cudnn.benchmark,
  10 warm-up steps then 40 timed steps with a device synchronise around each; images/s of the full forward;
- decode alone: zoo_rank.extract.decode.DecodedImages filling the store (nvJPEG batches, central square, resize);
- whole pipeline, decode included: a fresh DecodedImages decoding in its background thread while the model
  runs the first batches (zoo_rank.extract.transforms.EvalTransform + pre-logits features, bf16, channels_last,
  the features copied back to the host), N images / wall time from the first byte read to the last
  feature on the host;
- amortised: the same model on an already decoded store (what every further model of a zoo sees).

Weights are random (speed does not depend on them). Needs torch, torchvision, timm, numpy, pyarrow, PIL;
not polars or datasets (the store reads a pyarrow table). Prints the command line and versions.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import timm
import timm.data
import torch
import torchvision
from PIL import Image

from zoo_rank.extract.decode import DecodedImages
from zoo_rank.extract.transforms import EvalTransform, cover_side

WARM, STEPS = 10, 40  # timm benchmark.py's defaults (--num-warm-iter, --num-bench-iter)


def jpeg_table(n: int, unique: int = 512, seed: int = 0) -> pa.Table:
    """n JPEGs of 500x375 in the datasets image layout (image struct of bytes/path, label)."""
    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(min(n, unique)):  # decoding repeated bytes costs the same; generating them does not
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375), 3)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (375, 500, 3), dtype=np.int16)
        buf = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        blobs.append(buf.getvalue())
    image = pa.StructArray.from_arrays(
        [pa.array([blobs[i % len(blobs)] for i in range(n)], pa.binary()), pa.nulls(n, pa.string())],
        names=["bytes", "path"],
    )
    return pa.table({"image": image, "label": pa.array(np.arange(n) % 100, pa.int64())})


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        sync(device)


def model_alone(
    model: torch.nn.Module,
    batch: int,
    size: tuple,
    device: torch.device,
    warm: int = WARM,
    steps: int = STEPS,
) -> float:
    """timm benchmark.py's inference measurement: images/s over STEPS synchronised steps after WARM."""
    x = torch.randn((batch, *size), device=device).contiguous(memory_format=torch.channels_last)

    def step() -> float:
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            model(x)
        sync(device)
        return time.perf_counter() - t0

    with torch.no_grad():
        for _ in range(warm):
            step()
        total = sum(step() for _ in range(steps))
    return batch * steps / total


def library_pipeline(
    model, decoded: DecodedImages, transform: EvalTransform, batch: int, device
) -> np.ndarray:
    """zoo_rank.extract.zoo's own loop (_extract_decoded with extract's Forward): (N, p) float32 on the host."""
    from zoo_rank.extract.forward import Forward
    from zoo_rank.extract.zoo import _extract_decoded
    from zoo_rank.models import Backbone

    cfg = dict(timm.data.resolve_model_data_config(model))
    backbone = Backbone(
        model.default_cfg.get("architecture", "m"), model, None, cfg, model.num_features, "random"
    )
    forward = Forward(backbone, device, "bf16", batch, quiet=True)
    with torch.inference_mode():
        feats, _ = _extract_decoded(backbone, decoded, forward, batch, quiet=True)
    return feats


def standalone_pipeline(
    model, decoded: DecodedImages, transform: EvalTransform, batch: int, device
) -> np.ndarray:
    """The same loop without zoo_rank.extract (which needs polars): (N, p) float32 on the host."""
    out = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
        for _, images in decoded.batches(batch):
            x = transform(torch.stack(images).to(device, non_blocking=True))
            x = x.contiguous(memory_format=torch.channels_last)
            feats = model.forward_head(model.forward_features(x), pre_logits=True)
            out.append(feats.float().to("cpu", non_blocking=True))
    sync(device)
    return torch.cat(out).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--models", nargs="+", default=["resnet50", "tf_efficientnet_lite0"])
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test of the script itself")
    parser.add_argument("--steps", type=int, nargs=2, default=[WARM, STEPS], metavar=("WARM", "TIMED"))
    args = parser.parse_args()
    print("$ " + shlex.join([Path(sys.executable).name, *sys.argv]))
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"timm {timm.__version__}, numpy {np.__version__}, pyarrow {pa.__version__}"
    )
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "no CUDA device: this benchmark measures the GPU path (tests/test_decode.py covers the CPU one)"
        )
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True  # as timm's benchmark.py sets it
    print(f"{device_name(device)}; {args.n} JPEGs 500x375, batch {args.batch_size}\n")
    t0 = time.perf_counter()
    table = jpeg_table(args.n)
    print(f"generated the JPEGs in {time.perf_counter() - t0:.1f} s ({table.nbytes / 1e6:.0f} MB)")
    rows = np.arange(args.n)
    try:
        import zoo_rank.extract.zoo  # noqa: F401 - needs polars and datasets

        run_pipeline, which = library_pipeline, "zoo_rank.extract.zoo._extract_decoded"
    except ImportError as err:
        run_pipeline, which = standalone_pipeline, f"the script's own loop ({err})"
    print(f"pipeline loop: {which}")
    results = {
        "pipeline_loop": which,
        "device": device_name(device),
        "n": args.n,
        "batch": args.batch_size,
        "models": {},
    }
    header = f"{'model':<24} {'what':<52} {'img/s':>9}"
    print(header + "\n" + "-" * len(header))
    for name in args.models:
        model = timm.create_model(name, pretrained=False).eval().to(device, memory_format=torch.channels_last)
        cfg = timm.data.resolve_model_data_config(model)
        transform = EvalTransform.from_data_config(cfg)
        side = cover_side([cfg])
        alone = model_alone(model, args.batch_size, tuple(cfg["input_size"]), device, *args.steps)
        print(f"{name:<24} {'model alone (timm benchmark.py method, bf16, CL)':<52} {alone:9.0f}", flush=True)

        # Whole pipeline, decode included, on a cold store (decoding overlaps the model).
        warm_up = DecodedImages(table, rows[: 2 * args.batch_size], side, device, store="device").start()
        run_pipeline(model, warm_up, transform, args.batch_size, device)  # cuDNN / nvJPEG start-up
        sync(device)
        t0 = time.perf_counter()
        decoded = DecodedImages(table, rows, side, device, store="device").start()
        feats = run_pipeline(model, decoded, transform, args.batch_size, device)
        pipeline = args.n / (time.perf_counter() - t0)
        assert feats.shape[0] == args.n and np.isfinite(feats).all()
        print(
            f"{name:<24} {'whole pipeline, GPU decode included':<52} {pipeline:9.0f}   {pipeline / alone:.0%} of alone",
            flush=True,
        )
        t0 = time.perf_counter()
        run_pipeline(model, decoded, transform, args.batch_size, device)
        amortised = args.n / (time.perf_counter() - t0)
        print(
            f"{name:<24} {'decoded once already (each further zoo model)':<52} {amortised:9.0f}   {amortised / alone:.0%} of alone",
            flush=True,
        )
        sync(device)
        t0 = time.perf_counter()
        only = DecodedImages(table, rows, side, device, store="device").start()
        only.wait()
        sync(device)
        decode = args.n / (time.perf_counter() - t0)
        print(f"{name:<24} {f'decode alone (nvJPEG, square {side})':<52} {decode:9.0f}", flush=True)
        results["models"][name] = {
            "model_alone": alone,
            "pipeline": pipeline,
            "pipeline_over_alone": pipeline / alone,
            "amortised": amortised,
            "decode_alone": decode,
            "side": side,
        }
        del decoded, only, warm_up, model
        torch.cuda.empty_cache()
        print()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
