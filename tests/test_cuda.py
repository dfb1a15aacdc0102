"""CUDA paths agree with the CPU reference. Skipped without a GPU (CI); run on a CUDA host with
`python -m pytest -q tests/test_cuda.py` (scripts/bench_gpu.sh does, beside the GPU benchmarks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _decode_helpers import LITE0_CFG, jpeg_images, smooth_image
from _extract_helpers import fail_batches_above, tiny_backbone, tiny_images

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def test_extraction_on_cuda_matches_cpu_fp32(tmp_path):
    from zoo_rank.extract import extract_features
    from zoo_rank.options import ExtractOptions

    images = tiny_images()
    # The cache key leaves the device out (same numbers wherever computed), so each run gets its own cache.
    ref = extract_features(
        tiny_backbone(),
        images,
        options=ExtractOptions(precision="fp32", device="cpu", cache_dir=tmp_path / "cpu", quiet=True),
    )
    fp32 = extract_features(
        tiny_backbone(),
        images,
        options=ExtractOptions(precision="fp32", device="cuda", cache_dir=tmp_path / "gpu", quiet=True),
    )
    auto = extract_features(
        tiny_backbone(),
        images,
        options=ExtractOptions(device="auto", cache_dir=tmp_path / "gpu", quiet=True),
    )
    assert auto.meta["precision"] == "bf16" and auto.meta["device"].startswith("cuda")
    assert np.array_equal(fp32.labels, ref.labels) and np.array_equal(auto.rows, ref.rows)
    # cuDNN convolutions run TF32 by default on Ampere and later: close to, not equal to, the CPU fp32.
    assert _cosines(fp32.features, ref.features).min() > 0.9999
    assert _cosines(auto.features, ref.features).min() > 0.999
    assert ref.key == fp32.key != auto.key


def test_extraction_halves_the_batch_on_cuda_out_of_memory(tmp_path):
    from zoo_rank import extract
    from zoo_rank.options import ExtractOptions

    backbone = tiny_backbone()
    seen = fail_batches_above(backbone, 4)
    fs = extract.extract_features(
        backbone,
        tiny_images(),
        options=ExtractOptions(batch_size=16, device="cuda", cache_dir=tmp_path, quiet=True),
    )
    assert len(fs.features) == len(tiny_images().dataset) and seen[:2] == [16, 8] and max(seen[2:]) <= 4


@pytest.mark.parametrize("dtype, rel, tol", [(np.float64, 1e-9, 1e-12), (np.float32, 1e-4, 1e-6)])
def test_class_stats_on_cuda_equal_cpu(dtype, rel, tol):
    from zoo_rank.metrics import METRICS, ClassStats, compute_metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 3000)
    x = (rng.normal(size=(7, 64))[y] * 2 + rng.normal(size=(3000, 64)) + 50).astype(dtype)
    cpu = ClassStats.from_arrays(x, y)
    gpu = ClassStats(64)
    for chunk in np.array_split(np.arange(len(y)), 5):
        gpu.update(torch.from_numpy(x[chunk]).cuda(), torch.from_numpy(y[chunk]).cuda())
    assert gpu.device.type == "cuda"
    names = [n for n, info in METRICS.items() if not info.needs_raw]
    want, got = compute_metrics(cpu, None, names), compute_metrics(gpu, None, names)
    for name, value in want.items():
        # float32 features are multiplied in float32 (per chunk), so batching changes the last digits
        assert got[name] == pytest.approx(value, rel=rel, abs=tol), name


def test_probe_on_cuda_matches_cpu():
    from zoo_rank.options import ProbeOptions
    from zoo_rank.probe import linear_probe

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 32))
    y = rng.integers(0, 5, 900)
    x = centres[y] + 1.5 * rng.normal(size=(900, 32))
    args = (x[:600], y[:600], x[600:], y[600:])
    cpu = linear_probe(*args, options=ProbeOptions(device="cpu", dtype="float64"))
    gpu = linear_probe(*args, options=ProbeOptions(device="cuda", dtype="float64"))
    assert gpu.l2 == cpu.l2
    assert gpu.top1 == pytest.approx(cpu.top1, abs=1 / 300)
    np.testing.assert_allclose(gpu.val_acc_path, cpu.val_acc_path[: len(gpu.val_acc_path)], atol=1 / 120)


JPEG_SHAPES = [(375, 500), (500, 375), (333, 500), (64, 64), (241, 319), (32, 32), (480, 640), (300, 300)]


def test_gpu_jpeg_decode_matches_cpu_decode():
    """nvJPEG (batched, on the device) against libjpeg-turbo: the same pixels up to IDCT/upsampling rounding."""
    from zoo_rank.extract.decode import decode_images, to_square

    _, blobs = jpeg_images(JPEG_SHAPES)
    cpu = decode_images(blobs, torch.device("cpu"))
    gpu = decode_images(blobs, torch.device("cuda"))
    for a, b, shape in zip(cpu, gpu, JPEG_SHAPES, strict=True):
        assert b.device.type == "cuda" and b.dtype == torch.uint8 and a.shape == b.shape == (3, *shape)
        diff = (a.int() - b.cpu().int()).abs().float()
        assert float(diff.mean()) < 1.5 and float(diff.quantile(0.99)) <= 6 and float(diff.max()) <= 40, shape
    squares = zip(to_square(cpu, 256), to_square(gpu, 256), strict=True)
    for a, b in squares:  # the resize to the decode side on either device
        diff = (a.int() - b.cpu().int()).abs().float()
        assert a.shape == b.shape and float(diff.mean()) < 1.5 and float(diff.max()) <= 40


def test_tensor_transform_on_cuda_equals_cpu():
    from zoo_rank.extract.transforms import EvalTransform

    transform = EvalTransform.from_data_config(LITE0_CFG)
    x = torch.from_numpy(np.stack([smooth_image(300, 300, seed=s) for s in range(4)])).permute(0, 3, 1, 2)
    a, b = transform(x.contiguous()), transform(x.contiguous().cuda()).cpu()
    levels = (a - b).abs() * 127.5  # std 0.5: one uint8 level is 1 / 127.5
    assert float(levels.max()) <= 1.0001 and float(levels.mean()) < 0.01  # a rounding flip at most


def test_zoo_extraction_on_cuda_matches_cpu(tmp_path):
    """extract_zoo on CUDA (nvJPEG decode, device store, fp32) against the CPU path: same rows, close features,
    and keys that name the decoder."""
    from zoo_rank.extract.zoo import ZooModel, extract_zoo
    from zoo_rank.options import ExtractOptions

    images, _ = jpeg_images(JPEG_SHAPES * 3)
    models = [ZooModel("test_efficientnet", pretrained=False), ZooModel("test_convnext", pretrained=False)]
    cpu = extract_zoo(
        models,
        images,
        options=ExtractOptions(precision="fp32", device="cpu", cache_dir=tmp_path, quiet=True),
    )
    gpu = extract_zoo(
        models,
        images,
        options=ExtractOptions(precision="fp32", device="cuda", cache_dir=tmp_path, quiet=True),
    )
    auto = extract_zoo(models, images, options=ExtractOptions(device="cuda", cache_dir=tmp_path, quiet=True))
    for c, g, a in zip(cpu, gpu, auto, strict=True):
        assert np.array_equal(c.rows, g.rows) and np.array_equal(c.labels, g.labels)
        assert c.meta["decode"].split(":")[1] == "cpu" and g.meta["decode"].split(":")[1] == "cuda"
        assert c.key != g.key != a.key and a.meta["precision"] == "bf16"
        assert _cosines(c.features, g.features).min() > 0.998  # nvJPEG vs libjpeg-turbo: ~1 level apart
        assert _cosines(c.features, a.features).min() > 0.99
