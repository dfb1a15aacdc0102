"""A zoo of models on one image set: decode the images once, then run every model on the same pixels.

`extract_zoo(models, data)` returns each model's penultimate features (a FeatureSet, or the error that
model met) and caches them like `extract_features`, under a key that records the decode path
(zoo_rank.extract.decode.decode_spec: decoder, square side, resampling) beside the model, weights, data config,
data, manifest and precision. The key is computed before anything is built: the backbone's identity comes
from a weightless skeleton (zoo_rank.models.describe_backbone), so when every entry is cached no backbone
is built and no image is decoded. Otherwise the missing models share one zoo_rank.extract.decode.DecodedImages
(JPEGs decoded on the GPU when the run is on CUDA), and each applies its own eval transform as tensor
ops on its own device (zoo_rank.extract.transforms.EvalTransform). Models whose transform is not a centre crop,
and runs under torchrun, go through `extract_features` (timm's PIL path) one model at a time.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zoo_rank._console import progress, warn
from zoo_rank._device import pick_device, resolve_precision
from zoo_rank._paths import cache_root
from zoo_rank._validation import ZooRankError
from zoo_rank.cache import CacheKey, Entry, FeatureSet
from zoo_rank.data import load_images
from zoo_rank.extract.commit import Block, commit_blocks, entry_meta, report
from zoo_rank.extract.decode import DecodedImages, DecodeError, decode_spec
from zoo_rank.extract.distributed import live_rank_world
from zoo_rank.extract.forward import Forward, batch_size_for, on_device
from zoo_rank.extract.request import Request, resolve_request
from zoo_rank.extract.run import extract_features
from zoo_rank.extract.transforms import EvalTransform, cover_side, tensor_path_reason
from zoo_rank.models import create_backbone, describe_backbone
from zoo_rank.options import ExtractOptions, Subset


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
    forward: Forward,
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


@dataclass(frozen=True)
class _Zoo:
    """One extract_zoo call's settings: `options` with device, precision and batch size resolved."""

    images: Any
    subset: Subset | None
    manifest: Any
    options: ExtractOptions
    device: torch.device
    tune_micro: bool  # no batch size was asked for: the CPU measures its micro-batch

    @property
    def precision(self) -> str:
        return self.options.precision


def extract_zoo(
    models: list[ZooModel | str],
    data: Any,
    *,
    split: str | None = None,
    subset: Subset | None = None,
    options: ExtractOptions | None = None,
    manifest: Any = None,
) -> list[FeatureSet | BaseException]:
    """Features of every model on `data` (same arguments as extract_features), decoding the images once.

    Images that do not decode are the per-model path's business: with on_bad_image="skip" every model
    takes that path (it leaves them out and lists them), and a decode failure of the shared pass reruns
    the models there, whose error names the file and the data set.

    Returns, in the order of `models`, each one's FeatureSet or the exception it raised: one model's
    failure is not the zoo's.
    Raises ZooRankError for problems of the data itself (unknown set, empty subset, decode failure).
    """
    options = options or ExtractOptions()
    images = load_images(data, split) if isinstance(data, str) else data
    dev = pick_device(options.device)
    bs = batch_size_for(dev, options.batch_size)
    resolved = options.replace(precision=resolve_precision(options.precision, dev), device=dev, batch_size=bs)
    zoo = _Zoo(images, subset, manifest, resolved, dev, tune_micro=options.batch_size is None)
    members = [_Member(m) for m in map(_as_model, models)]
    tensor_path = [m for m in members if _route(m, zoo)]
    if tensor_path:
        _decode_once(tensor_path, zoo)
    return [m.result for m in members]  # type: ignore[misc]


def _route(member: _Member, zoo: _Zoo) -> bool:
    """Name the member's entry; True when it goes the decode-once way, else its result is set here."""
    try:
        _identify(member)
        member.request = resolve_request(
            member.identity, zoo.images, subset=zoo.subset, manifest=zoo.manifest
        )
    except Exception as err:  # one model's failure is its own row
        member.result = err
        return False
    if len(member.request.rows) == 0:
        raise ZooRankError(f"{zoo.images.name!r} selects no images; pass a data spec or manifest with rows.")
    # Under torchrun the ranks share the work of each model (extract_features' blocks), not the zoo.
    per_model = zoo.options.on_bad_image == "skip" or live_rank_world()[1] > 1
    if per_model or tensor_path_reason(member.identity.data_config) is not None:
        member.result = _per_model(member, zoo)
        return False
    return True


def _decode_once(members: list[_Member], zoo: _Zoo) -> None:
    """Read the cached members' entries; decode the images once for the others and run each on them."""
    side = cover_side([m.identity.data_config for m in members])
    spec = decode_spec("cuda" if zoo.device.type == "cuda" else "cpu", side)
    root = cache_root(zoo.options.cache_dir)
    missing = []
    for member in members:
        assert member.request is not None
        member.key = dataclasses.replace(member.request.key(zoo.precision), decode=spec)
        entry = Entry(root, member.key.digest())
        if not zoo.options.skip_existing:
            entry.clear()
        member.result = entry.read_valid(member.request.rows)
        if member.result is None:
            missing.append(member)
    if not missing:
        return
    decoded = DecodedImages(
        zoo.images.dataset,
        missing[0].request.rows,  # type: ignore[union-attr]
        side,
        zoo.device if zoo.device.type == "cuda" else torch.device("cpu"),
        key_parts={"fingerprint": zoo.images.fingerprint, "split": str(zoo.images.split)},
        cache_dir=zoo.options.cache_dir,
    ).start()
    try:
        for member in missing:
            member.result = _run_member(member, decoded, spec, zoo, root)
        decoded.wait()
    except DecodeError:
        for member in missing:
            member.result = _per_model(member, zoo)
    if zoo.device.type == "cuda":
        torch.cuda.synchronize(zoo.device)
    decoded.remove_file()


def _per_model(member: _Member, zoo: _Zoo) -> FeatureSet | BaseException:
    try:
        backbone = member.backbone or _build(member.model)
        return extract_features(
            backbone, zoo.images, subset=zoo.subset, options=zoo.options, manifest=zoo.manifest
        )
    except Exception as err:
        return err


def _run_member(
    member: _Member, decoded: DecodedImages, spec: str, zoo: _Zoo, root: Any
) -> FeatureSet | BaseException:
    """Build one model, run it on the decoded images, commit its entry (under its lock)."""
    t_call = time.perf_counter()
    dev, prec, quiet = zoo.device, zoo.precision, zoo.options.quiet
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
            forward = Forward(
                backbone, dev, prec, zoo.options.batch_size, quiet=quiet, tune_micro=zoo.tune_micro
            )
            with on_device(backbone, dev, forward.channels_last), torch.inference_mode():
                feats, timings = _extract_decoded(
                    backbone, decoded, forward, zoo.options.batch_size, quiet=quiet
                )
            labels = np.asarray(request.images.labels)[request.rows]
            meta = entry_meta(request, prec, forward.channels_last, dev, 1, 0)
            meta["decode"] = spec
            meta["key_fields"] = dataclasses.asdict(key)
            block = Block(rows=request.rows, labels=labels, features=feats, timings=timings)
            fs = commit_blocks(entry, request, [block], meta)
        if not quiet:
            report(fs, backbone.name, time.perf_counter() - t_call, entry, f" (decoded once, {spec})")
        return fs
    except DecodeError:
        raise  # the data's failure, not this model's
    except Exception as err:  # one model's failure is its own row
        return err


class ZooRun:
    """One run's features: the first request for an image set extracts it for every model of the run.

    features(model, images, subset) -> FeatureSet, or raises the error that model met.
    `options`: how extract_zoo extracts (precision, device, batch size, cache dir, quiet, ...).
    """

    def __init__(self, models: list[ZooModel], options: ExtractOptions | None = None):
        self.models = list(models)
        self.options = options or ExtractOptions()
        self._done: dict[tuple, list[FeatureSet | BaseException]] = {}

    def features(self, model: ZooModel, images: Any, subset: Subset | None = None) -> FeatureSet:
        subset = subset or Subset()
        key = (images.fingerprint, str(images.split), subset.n_per_class, subset.seed)
        if key not in self._done:
            self._done[key] = extract_zoo(self.models, images, subset=subset, options=self.options)
        result = self._done[key][self.models.index(model)]
        if isinstance(result, BaseException):
            raise result
        return result


__all__ = ["ZooModel", "ZooRun", "extract_zoo"]
