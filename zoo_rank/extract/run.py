"""The extraction of one request: resume from shards, compute the rest in blocks, commit one entry.

`extract_features(model, data)` returns penultimate features (timm's
``forward_head(forward_features(x), pre_logits=True)``) of a labelled image set, computing only what the
cache does not hold yet:

- one device picker (CUDA, then MPS, then CPU; ``cuda:$LOCAL_RANK`` under torchrun) and precision
  (zoo_rank.extract.forward);
- a DataLoader that decodes ahead of the model (zoo_rank.extract.loader);
- under torchrun each rank extracts one block of the manifest, rank 0 commits ONE entry
  (zoo_rank.extract.distributed);
- results go to per-block shards as they come (every `shard_size` images or SHARD_SECONDS), so a killed
  run resumes where it stopped (Ctrl-C saves the batches done so far, and a rerun says it resumed); the
  committed entry is written atomically (zoo_rank.cache);
- no backbone is built when the entry is already cached and the spec's weights have a known file.

Several GPUs or nodes (the cache folder on a shared file system, or not: rank 0 then sends the entry)::

    torchrun --nproc-per-node 8 -m zoo_rank.cli extract resnet50.a1_in1k --data imagenet-1k --n-per-class 50
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zoo_rank._console import err_console, progress, warn
from zoo_rank._device import pick_device, resolve_precision
from zoo_rank._paths import cache_root
from zoo_rank._validation import ZooRankError
from zoo_rank.cache import Entry, FeatureSet
from zoo_rank.extract.commit import Block, commit_blocks, entry_meta, report
from zoo_rank.extract.distributed import broadcast, gather, process_group, rank_block, share
from zoo_rank.extract.forward import Forward, batch_size_for, on_device
from zoo_rank.extract.loader import ImageRows, bad_image_error, default_num_workers, image_loader
from zoo_rank.extract.request import Request, resolve_request
from zoo_rank.options import ExtractOptions, Subset

# A killed run loses at most this much work (or `shard_size` images, whichever comes first).
# 10 s: a shard costs milliseconds, and a run killed in its first minute still keeps most of its work.
SHARD_SECONDS = 10.0
_Columns = tuple[np.ndarray, np.ndarray, np.ndarray]  # rows (n,), labels (n,), features (n, p)


@dataclass(frozen=True)
class Settings:
    """ExtractOptions resolved for one run on this machine: no "auto" and no None left."""

    device: torch.device
    precision: str  # "bf16" | "fp32"
    batch_size: int
    tune_micro: bool  # no batch size was asked for: the CPU measures its micro-batch (forward.MicroBatchTuner)
    num_workers: int
    shard_size: int
    quiet: bool  # this rank prints nothing (also true on every rank but 0)
    on_bad_image: str

    @classmethod
    def resolve(cls, options: ExtractOptions, num_features: int, *, rank: int = 0) -> Settings:
        dev = pick_device(options.device)
        shard = options.shard_size or min(16384, max(1024, 2**26 // (4 * max(1, int(num_features)))))
        return cls(
            device=dev,
            precision=resolve_precision(options.precision, dev),
            batch_size=batch_size_for(dev, options.batch_size),
            tune_micro=options.batch_size is None,
            num_workers=default_num_workers(dev) if options.num_workers is None else int(options.num_workers),
            shard_size=max(1, int(shard)),
            quiet=options.quiet or rank != 0,
            on_bad_image=options.on_bad_image,
        )


def _resume(entry: Entry, block_rows: np.ndarray, first: int, end: int) -> _Columns | None:
    """Rows, labels, features already in shards for this block, deduplicated; None when there are none."""
    found = entry.read_shards(first, end)
    if found is None:
        return None
    rows, labels, feats = found
    keep = np.isin(rows, block_rows)
    rows, labels, feats = rows[keep], labels[keep], feats[keep]
    rows, first_seen = np.unique(rows, return_index=True)
    if len(rows) == 0:
        return None
    return rows, labels[first_seen], feats[first_seen]


class _ShardBuffer:
    """Computed batches not yet on disk, written as one shard every `shard_size` rows or SHARD_SECONDS.

    missing: (m,) manifest positions being computed; a shard is named by the span of positions it covers.
    """

    def __init__(self, entry: Entry, missing: np.ndarray, shard_size: int):
        self.entry, self.missing, self.shard_size = entry, missing, shard_size
        self.written: list[_Columns] = []  # this run's shards, in order
        self._buffer: list[_Columns] = []
        self._n = self._first = self._end = 0
        self._last_flush = time.perf_counter()

    def add(self, pos: int, n_images: int, computed: _Columns | None) -> None:
        """The batch at positions [pos, pos + n_images) of `missing`; `computed` None: every image was bad."""
        if not self._buffer:
            self._first = int(self.missing[pos])
        self._end = pos + n_images
        if computed is not None:
            self._buffer.append(computed)
            self._n += len(computed[0])
        if self._buffer and (
            self._n >= self.shard_size or time.perf_counter() - self._last_flush >= SHARD_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        r, lab, f = (np.concatenate(c) for c in zip(*self._buffer, strict=True))
        self.entry.write_shard(self._first, int(self.missing[self._end - 1]) + 1, r, lab, f)
        self.written.append((r, lab, f))
        self._buffer, self._n, self._last_flush = [], 0, time.perf_counter()

    @property
    def n_saved(self) -> int:
        return sum(len(w[0]) for w in self.written)


def _compute(
    request: Request,
    entry: Entry,
    missing: np.ndarray,
    forward: Forward,
    settings: Settings,
    done: int,
    total: int,
) -> tuple[list[_Columns], list[tuple[int, str]], dict]:
    """Features of manifest positions `missing`, sharded as they come: (shards, skipped images, timings).

    Ctrl-C saves the batches already computed as a shard, says so and how to resume, then re-raises.
    """
    dataset = ImageRows(
        request.images.dataset,
        request.rows[missing],
        request.backbone.transform,
        f"{request.images.name}:{request.images.split}",
    )
    loader = image_loader(
        dataset,
        batch_size=settings.batch_size,
        num_workers=settings.num_workers,
        pin_memory=forward.device.type == "cuda",
    )
    shards = _ShardBuffer(entry, missing, settings.shard_size)
    skipped: list[tuple[int, str]] = []
    wait = {"data_wait_s": 0.0, "model_s": 0.0}
    pos = 0
    with progress(quiet=settings.quiet) as bar:
        task = bar.add_task(f"extract {request.backbone.name}", total=total, completed=done, rate="")
        t_comp0 = t0 = time.perf_counter()
        try:
            for images, labels, rows, bad in loader:
                if bad and settings.on_bad_image != "skip":
                    raise bad_image_error(bad[0][1])
                skipped += bad
                t1 = time.perf_counter()
                wait["data_wait_s"] += t1 - t0
                feats = forward(images) if images is not None else None
                t0 = time.perf_counter()
                wait["model_s"] += t0 - t1
                n = len(rows) + len(bad)
                shards.add(pos, n, None if feats is None else (rows.numpy(), labels.numpy(), feats.numpy()))
                pos += n
                rate = pos / max(time.perf_counter() - t_comp0, 1e-9)
                bar.update(task, advance=n, rate=f"{rate:.0f} img/s")
        except KeyboardInterrupt:
            shards.flush()
            err_console().print(
                f"interrupted: {done + shards.n_saved} of {total} images of {request.backbone.name} on "
                f"{request.images.name}:{request.images.split} are saved in the cache ({entry.parts}); "
                "run the same command again to resume from there.",
                highlight=False,
                soft_wrap=True,
            )
            raise
        shards.flush()
    return shards.written, skipped, wait


def extract_block(
    request: Request, entry: Entry, first: int, end: int, forward: Forward, settings: Settings
) -> Block:
    """Features of manifest positions [first, end): resumed from shards, the rest computed and sharded."""
    block_rows = request.rows[first:end]
    t_start = time.perf_counter()
    resumed = _resume(entry, block_rows, first, end)
    missing = first + np.flatnonzero(~np.isin(block_rows, resumed[0] if resumed else []))
    n_done = end - first - len(missing)
    if n_done and not settings.quiet:
        err_console().print(
            f"{request.backbone.name}: resumed {n_done} of {end - first} images from the shards of an earlier "
            f"run ({entry.parts}); extracting the other {len(missing)}",
            highlight=False,
            soft_wrap=True,
        )
    pieces = [resumed] if resumed is not None else []
    skipped: list[tuple[int, str]] = []
    wait = {"data_wait_s": 0.0, "model_s": 0.0}
    if len(missing):
        computed, skipped, wait = _compute(request, entry, missing, forward, settings, n_done, end - first)
        pieces += computed
    if pieces:
        rows, labels, feats = (np.concatenate(c) for c in zip(*pieces, strict=True))
        order = np.argsort(rows, kind="stable")
        rows, labels, feats = rows[order], labels[order], feats[order]
    else:  # an empty block (more ranks than images, or every image unreadable)
        rows, labels, feats = np.empty(0, np.int64), np.empty(0, np.int64), None
    wall = time.perf_counter() - t_start
    timings = {
        "seconds": wall,
        "n_computed": len(missing),
        "n_resumed": int(n_done),
        **wait,
        "images_per_s": len(missing) / wall if len(missing) else None,
        "batch_size": forward.micro,
    }
    return Block(rows=rows, labels=labels, features=feats, timings=timings, skipped=skipped)


def _compute_entry(
    request: Request, entry: Entry, settings: Settings, rank: int, world: int
) -> FeatureSet | None:
    """Every rank extracts its block; rank 0 commits the entry and returns it (None elsewhere)."""
    t_call = time.perf_counter()
    first, end = rank_block(len(request.rows), rank, world)
    backbone = request.backbone
    forward = Forward(
        backbone,
        settings.device,
        settings.precision,
        settings.batch_size,
        quiet=settings.quiet,
        tune_micro=settings.tune_micro,
    )
    with on_device(backbone, settings.device, forward.channels_last), torch.inference_mode():
        block = extract_block(request, entry, first, end, forward, settings)
    blocks = gather(block, rank, world)
    if rank != 0:
        return None
    assert blocks is not None
    meta = entry_meta(
        request, settings.precision, forward.channels_last, settings.device, world, settings.num_workers
    )
    fs = commit_blocks(entry, request, blocks, meta)
    if not settings.quiet:
        report(fs, backbone.name, time.perf_counter() - t_call, entry)
    return fs


def extract_request(request: Request, options: ExtractOptions) -> FeatureSet:
    """The features of a resolved request: from the cache when present, else extracted and committed.

    The backbone is built (from `request.spec`) only when the entry is not cached. Should the built
    network name itself differently from its weightless description, its own key is the truth.
    """
    if len(request.rows) == 0:
        raise ZooRankError(
            f"{request.asked['data']!r} selects no images; pass a data spec or manifest with rows."
        )
    rank, world = process_group(pick_device(options.device))
    settings = Settings.resolve(options, request.backbone.num_features, rank=rank)
    entry = Entry(cache_root(options.cache_dir), request.key(settings.precision).digest())
    fs: FeatureSet | None = None
    rebuilt: Request | None = None
    with entry.lock(quiet=settings.quiet) if rank == 0 else contextlib.nullcontext():
        if rank == 0:
            if not options.skip_existing:
                entry.clear()
            fs = entry.read_valid(request.rows)
            if fs is not None and fs.meta.get("skipped_images") and settings.on_bad_image != "skip":
                raise bad_image_error(fs.meta["skipped_images"][0]["problem"])
        if not broadcast(fs is not None, world):
            built = request.built()
            if built.key(settings.precision) == request.key(settings.precision):
                fs = _compute_entry(built, entry, settings, rank, world)
            else:  # every rank sees the same two keys: all of them go on under the built one
                warn(
                    f"{built.backbone.name}: its weightless description differed from the built model; using the latter."
                )
                rebuilt = built
    if rebuilt is not None:
        return extract_request(rebuilt, options)
    return share(fs, entry, request.rows, rank, world)


def extract_features(
    model: Any,
    data: Any,
    *,
    split: str | None = None,
    subset: Subset | None = None,
    options: ExtractOptions | None = None,
    manifest: Any = None,
) -> FeatureSet:
    """Penultimate features of `model` on `data`, from the cache when present, else extracted and cached.

    model: a spec for zoo_rank.models.create_backbone ("pip:efficientnet-lite0", "resnet50.a1_in1k", ...)
    or a Backbone. data: a spec for zoo_rank.data.load_images (with `split`) or an ImageSet.
    subset: a class-balanced subset (Subset(n_per_class, seed), zoo_rank.data.balanced_subset); None (or
    n_per_class None) means every image. manifest: a Manifest (or its JSON path) that fixes the rows instead.
    options: precision ("auto": bf16 + channels_last where native, else fp32), device, batch size, workers,
    cache dir, skip_existing (False recomputes: drops the entry and its shards first), shard_size (images per
    resume shard; default about 64 MB of features, 1024..16384 images), on_bad_image ("error" stops at an
    image that does not decode, naming the file and the data set; "skip" leaves such images out and lists
    them in meta["skipped_images"]), quiet.

    Returns FeatureSet: features (N, p) float32, labels (N,) int64, rows (N,) dataset rows, meta.
    Under torchrun every rank extracts its block and returns the merged entry.
    """
    options = options or ExtractOptions()
    request = resolve_request(model, data, split=split, subset=subset, manifest=manifest)
    return extract_request(request, options)


__all__ = [
    "SHARD_SECONDS",
    "Settings",
    "extract_block",
    "extract_features",
    "extract_request",
]
