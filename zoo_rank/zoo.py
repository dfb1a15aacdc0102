"""A zoo of models on one image set: decode the images once, then run every model on the same pixels.

`extract_zoo(models, data)` returns each model's penultimate features (a FeatureSet, or the error that
model met) and caches them like `extract_features`, under a key that records the decode path
(zoo_rank.decode.decode_spec: decoder, square side, resampling) beside the model, weights, data config,
data, manifest and precision. The key is computed before anything is built: the backbone's identity comes
from a weightless skeleton (zoo_rank.models.describe_backbone), so when every entry is cached no backbone
is built and no image is decoded. Otherwise the missing models share one zoo_rank.decode.DecodedImages
(JPEGs decoded on the GPU when the run is on CUDA), and each applies its own eval transform as tensor
ops on its own device (zoo_rank.transforms.EvalTransform). Models whose transform is not a centre crop,
and runs under torchrun, go through `extract_features` (timm's PIL path) one model at a time.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from zoo_rank._console import err_console, progress, warn
from zoo_rank._device import pick_device, resolve_precision
from zoo_rank._validation import ZooRankError
from zoo_rank.cache import CacheKey, Entry, FeatureSet, Request, cache_root, resolve_request
from zoo_rank.data import load_images
from zoo_rank.decode import DecodedImages, DecodeError, decode_spec
from zoo_rank.extract import (
    DEFAULT_BATCH_SIZE,
    _Block,
    _commit,
    _entry_meta,
    _Forward,
    _on_device,
    extract_features,
)
from zoo_rank.models import create_backbone, describe_backbone
from zoo_rank.transforms import EvalTransform, cover_side, tensor_path_reason


@dataclass(frozen=True)
class ZooModel:
    """One model of a zoo: a create_backbone spec, pretrained or randomly initialised from `seed`."""

    spec: str
    pretrained: bool = True
    seed: int = 0


@dataclass
class _Member:
    model: ZooModel
    identity: Any = None  # models.BackboneIdentity or a built Backbone
    backbone: Any = None
    request: Request | None = None
    key: CacheKey | None = None
    result: FeatureSet | BaseException | None = None


def _as_model(m: ZooModel | str) -> ZooModel:
    return m if isinstance(m, ZooModel) else ZooModel(str(m))


def _build(m: ZooModel):
    return create_backbone(m.spec, pretrained=m.pretrained, seed=m.seed)


def _identify(member: _Member) -> None:
    """The identity the cache key needs; the backbone itself only when a skeleton cannot name the weights."""
    m = member.model
    ident = describe_backbone(m.spec, pretrained=m.pretrained, seed=m.seed)
    if ident is None:
        member.backbone = _build(m)
        ident = member.backbone
    member.identity = ident


def _model_inputs(images: list[torch.Tensor], transform: EvalTransform, device: torch.device) -> torch.Tensor:
    """Decoded uint8 squares (sides may differ) -> (B, 3, crop, crop) float model input on `device`."""

    def moved(x: torch.Tensor) -> torch.Tensor:
        if x.device == device:
            return x
        if device.type == "cuda":
            x = x.pin_memory()
        return x.to(device, non_blocking=True)

    sides = [im.shape[-1] for im in images]
    if len(set(sides)) == 1:
        return transform(moved(torch.stack(images)))
    out = torch.empty((len(images), 3, transform.crop, transform.crop), device=device)
    for side in sorted(set(sides)):
        idx = [i for i, s in enumerate(sides) if s == side]
        out[idx] = transform(moved(torch.stack([images[i] for i in idx])))
    return out


def _extract_decoded(
    backbone: Any,
    decoded: DecodedImages,
    forward: _Forward,
    batch_size: int,
    *,
    quiet: bool,
) -> tuple[np.ndarray, dict]:
    """(N, p) float32 features of every decoded image, in decoded.rows order, and the timings."""
    transform = EvalTransform.from_data_config(backbone.data_config)
    feats = []
    data_wait = model_s = 0.0
    t_start = time.perf_counter()
    with progress(quiet=quiet) as bar:
        task = bar.add_task(f"extract {backbone.name}", total=len(decoded), rate="")
        t0 = time.perf_counter()
        for _, images in decoded.batches(batch_size):
            x = _model_inputs(images, transform, forward.device)
            t1 = time.perf_counter()
            data_wait += t1 - t0
            feats.append(forward(x))
            t0 = time.perf_counter()
            model_s += t0 - t1
            done = sum(len(f) for f in feats)
            bar.update(task, advance=len(images), rate=f"{done / max(t0 - t_start, 1e-9):.0f} img/s")
    wall = time.perf_counter() - t_start
    timings = {
        "seconds": wall,
        "n_computed": len(decoded),
        "n_resumed": 0,
        "data_wait_s": data_wait,
        "model_s": model_s,
        "images_per_s": len(decoded) / wall if wall > 0 else None,
        "batch_size": forward.micro,
    }
    return torch.cat(feats).numpy(), timings


def extract_zoo(
    models: list[ZooModel | str],
    data: Any,
    *,
    split: str | None = None,
    n_per_class: int | None = None,
    seed: int = 0,
    manifest: Any = None,
    precision: str = "auto",
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    cache_dir: Any = None,
    skip_existing: bool = True,
    quiet: bool = False,
    on_bad_image: str = "error",
) -> list[FeatureSet | BaseException]:
    """Features of every model on `data` (same arguments as extract_features), decoding the images once.

    Images that do not decode are the per-model path's business: with on_bad_image="skip" every model
    takes that path (it leaves them out and lists them), and a decode failure of the shared pass reruns
    the models there, whose error names the file and the data set.

    Returns, in the order of `models`, each one's FeatureSet or the exception it raised: one model's
    failure is not the zoo's.
    Raises ZooRankError for problems of the data itself (unknown set, empty subset, decode failure).
    """
    images = load_images(data, split) if isinstance(data, str) else data
    dev = pick_device(device)
    prec = resolve_precision(precision, dev)
    bs = int(batch_size or DEFAULT_BATCH_SIZE.get(dev.type, 32))
    if bs < 1:
        raise ZooRankError(f"batch_size={bs}; pass a positive batch size or leave it unset.")
    members = [_Member(m) for m in map(_as_model, models)]
    common = {"n_per_class": n_per_class, "seed": seed, "manifest": manifest}
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    tensor_path: list[_Member] = []
    for member in members:
        try:
            _identify(member)
            member.request = resolve_request(member.identity, images, **common)
        except Exception as err:  # one model's failure is its own row
            member.result = err
            continue
        if len(member.request.rows) == 0:
            raise ZooRankError(f"{images.name!r} selects no images; pass a data spec or manifest with rows.")
        per_model = on_bad_image == "skip" or distributed
        if per_model or tensor_path_reason(member.identity.data_config) is not None:
            member.result = _per_model(
                member, images, prec, dev, bs, cache_dir, skip_existing, quiet, common, on_bad_image
            )
        else:
            tensor_path.append(member)
    if not tensor_path:
        return [m.result for m in members]  # type: ignore[misc]

    side = cover_side([m.identity.data_config for m in tensor_path])
    spec = decode_spec("cuda" if dev.type == "cuda" else "cpu", side)
    root = cache_root(cache_dir)
    missing = []
    for member in tensor_path:
        member.key = dataclasses.replace(member.request.key(prec), decode=spec)
        entry = Entry(root, member.key.digest())
        if not skip_existing:
            entry.clear()
        fs = entry.read_valid(member.request.rows)
        if fs is not None:
            member.result = fs
        else:
            missing.append(member)
    if missing:
        rows = missing[0].request.rows
        decoded = DecodedImages(
            images.dataset,
            rows,
            side,
            dev if dev.type == "cuda" else torch.device("cpu"),
            key_parts={"fingerprint": images.fingerprint, "split": str(images.split)},
            cache_dir=cache_dir,
        ).start()
        try:
            for member in missing:
                member.result = _run_member(member, decoded, spec, prec, dev, bs, root, quiet)
            decoded.wait()
        except DecodeError:
            for member in missing:
                member.result = _per_model(
                    member, images, prec, dev, bs, cache_dir, skip_existing, quiet, common, on_bad_image
                )
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        decoded.remove_file()
    return [m.result for m in members]  # type: ignore[misc]


def _per_model(member, images, prec, dev, bs, cache_dir, skip_existing, quiet, common, on_bad_image):
    try:
        backbone = member.backbone or _build(member.model)
        return extract_features(
            backbone,
            images,
            precision=prec,
            device=dev,
            batch_size=bs,
            cache_dir=cache_dir,
            skip_existing=skip_existing,
            quiet=quiet,
            on_bad_image=on_bad_image,
            **common,
        )
    except Exception as err:
        return err


def _run_member(
    member: _Member,
    decoded: DecodedImages,
    spec: str,
    prec: str,
    dev: torch.device,
    bs: int,
    root: Any,
    quiet: bool,
) -> FeatureSet | BaseException:
    """Build one model, run it on the decoded images, commit its entry (under its lock)."""
    t_call = time.perf_counter()
    try:
        backbone = member.backbone or _build(member.model)
        request = dataclasses.replace(member.request, backbone=backbone)
        key = dataclasses.replace(request.key(prec), decode=spec)
        if key != member.key:  # the skeleton named it differently: the built backbone's key is the truth
            warn(
                f"{backbone.name}: its weightless description differed from the built model; using the latter."
            )
        entry = Entry(root, key.digest())
        with entry.lock(quiet=quiet):
            fs = entry.read_valid(request.rows)  # another process may have committed it meanwhile
            if fs is not None:
                return fs
            forward = _Forward(backbone, dev, prec, bs, quiet=quiet)
            with _on_device(backbone, dev, forward.channels_last), torch.inference_mode():
                feats, timings = _extract_decoded(backbone, decoded, forward, bs, quiet=quiet)
            labels = np.asarray(request.images.labels)[request.rows]
            meta = _entry_meta(request, prec, forward.channels_last, dev, 1, 0)
            meta["decode"] = spec
            meta["key_fields"] = dataclasses.asdict(key)
            block = _Block(rows=request.rows, labels=labels, features=feats, timings=timings)
            fs = _commit(entry, request, [block], meta)
        if not quiet:
            t = fs.meta["timings"]
            bound = "data" if t["data_wait_s"] > t["model_s"] else "model"
            err_console().print(
                f"{backbone.name}: {fs.features.shape[0]} x {fs.features.shape[1]} in "
                f"{time.perf_counter() - t_call:.1f} s, {t['images_per_s']:.0f} img/s, {bound}-bound "
                f"(decoded once, {spec}) -> {entry.path}",
                highlight=False,
                soft_wrap=True,
            )
        return fs
    except DecodeError:
        raise  # the data's failure, not this model's
    except Exception as err:  # one model's failure is its own row
        return err


class ZooRun:
    """One run's features: the first request for an image set extracts it for every model of the run.

    features(model, images, n_per_class, seed) -> FeatureSet, or raises the error that model met.
    `extract_kw`: precision, device, batch_size, cache_dir, quiet (as extract_zoo takes them).
    """

    def __init__(self, models: list[ZooModel], **extract_kw: Any):
        self.models = list(models)
        self.extract_kw = extract_kw
        self._done: dict[tuple, list[FeatureSet | BaseException]] = {}

    def features(self, model: ZooModel, images: Any, n_per_class: int | None, seed: int) -> FeatureSet:
        key = (images.fingerprint, str(images.split), n_per_class, seed)
        if key not in self._done:
            self._done[key] = extract_zoo(
                self.models, images, n_per_class=n_per_class, seed=seed, **self.extract_kw
            )
        result = self._done[key][self.models.index(model)]
        if isinstance(result, BaseException):
            raise result
        return result


__all__ = ["ZooModel", "ZooRun", "extract_zoo"]
