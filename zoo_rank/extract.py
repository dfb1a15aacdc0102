"""The extraction loop: device, precision, batching, sharding under torchrun, resume through the cache.

One call, `extract_features(model, data)`, returns penultimate features (timm's
``forward_head(forward_features(x), pre_logits=True)``) of a labelled image set, computing only what the
cache does not hold yet:

- one device picker (CUDA, then MPS, then CPU; ``cuda:$LOCAL_RANK`` under torchrun);
- precision "auto" is bf16 autocast + channels_last where the hardware has native bf16 (CUDA with bf16,
  x86 CPUs with AVX512-BF16 or AMX), else fp32; "fp32" is the plain reference path. Features are float32;
- a DataLoader whose workers decode and transform whole batches while the model runs; pinned memory on
  CUDA; an out-of-memory error halves the batch and the run goes on;
- under torchrun (WORLD_SIZE > 1) each rank extracts one contiguous block of the manifest (gloo on CPU,
  nccl on CUDA), rank 0 gathers the blocks and commits ONE cache entry, every rank returns it;
- results go to per-block shards as they come (every `shard_size` images or SHARD_SECONDS), so a killed
  run resumes where it stopped (Ctrl-C saves the batches done so far, and a rerun says it resumed); the
  committed entry is written atomically (zoo_rank.cache);
- an image that does not decode stops the run naming the file and the data set, or with
  ``on_bad_image="skip"`` is left out and listed in the entry's ``meta["skipped_images"]``.

Several GPUs or nodes (the cache folder on a shared file system, or not: rank 0 then sends the entry)::

    torchrun --nproc-per-node 8 -m zoo_rank.cli extract resnet50.a1_in1k --data imagenet-1k --n-per-class 50
"""

from __future__ import annotations

import atexit
import contextlib
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from zoo_rank import __version__
from zoo_rank._console import err_console, progress, warn
from zoo_rank._device import pick_device, resolve_precision
from zoo_rank._validation import ZooRankError
from zoo_rank.cache import Entry, FeatureSet, Request, cache_root, resolve_request

DEFAULT_BATCH_SIZE = {"cuda": 256, "mps": 64, "cpu": 32}
# A killed run loses at most this much work (or `shard_size` images, whichever comes first).
# 10 s: a shard costs milliseconds, and a run killed in its first minute still keeps most of its work.
SHARD_SECONDS = 10.0


# ---- workers ------------------------------------------------------------------------------------


def default_num_workers(device: torch.device) -> int:
    """DataLoader workers: the CPUs this process may use (split between local torchrun ranks).

    On CPU one core is left to the model's own threads (2 cores -> 1 worker that decodes ahead while the
    model runs), at most 8. On an accelerator JPEG decoding bounds the run, so every core decodes (up to
    32): on a 16-core H200 host, 16 workers fed resnet50 2,081 images/s against 1,391 with 8, while the
    GPU alone runs 12,854 (scripts/bench_gpu.sh).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cpus = os.cpu_count() or 1
    cpus = max(1, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    return min(8, cpus - 1) if device.type == "cpu" else min(32, cpus)


ON_BAD_IMAGE = ("error", "skip")


def check_loader_args(batch_size: int | None, num_workers: int | None, on_bad_image: str = "error") -> None:
    """One-line errors for a batch size below 1, a negative worker count (None means the default) or an
    unknown --on-bad-image choice."""
    if on_bad_image not in ON_BAD_IMAGE:
        raise ZooRankError(
            f"--on-bad-image {on_bad_image!r} is not known; use 'error' (stop at the first unreadable image) "
            "or 'skip' (leave such images out and count them)."
        )
    if batch_size is not None and int(batch_size) < 1:
        raise ZooRankError(
            f"--batch-size {batch_size}: a batch needs at least 1 image; pass a positive number (e.g. 32) "
            "or leave it unset (256 on CUDA, 32 on CPU, halved on out-of-memory)."
        )
    if num_workers is not None and int(num_workers) < 0:
        raise ZooRankError(
            f"--num-workers {num_workers}: expected 0 (decode in the main process) or a positive number of "
            "decoding processes; leave it unset for one per free CPU core."
        )


# ---- data loading ---------------------------------------------------------------------------------


_Item = tuple[torch.Tensor | None, int, int, str | None]


class _ImageRows(torch.utils.data.Dataset):
    """Rows of a `datasets.Dataset` as (image tensor (3,H,W), label, row, None); decodes a whole batch per
    call. An image that does not decode or transform comes back as (None, label, row, what went wrong):
    the worker never raises for it, so the main process can name the file or skip it."""

    def __init__(self, dataset: Any, rows: np.ndarray, transform: Any, name: str = "the data"):
        self.dataset = dataset
        self.rows = rows
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return len(self.rows)

    def _items(self, rows: list[int]) -> list[_Item]:
        try:
            batch = self.dataset[rows]  # one arrow take + decode for the batch, not one lookup per image
            # zoo_rank.data decodes to RGB and the backbone's transform converts any other mode itself.
            return [
                (self.transform(img), int(label), row, None)
                for img, label, row in zip(batch["image"], batch["label"], rows, strict=True)
            ]
        except Exception:  # some image of the batch is broken: find which, one at a time
            return [self._one(row) for row in rows]

    def _one(self, row: int) -> _Item:
        try:
            item = self.dataset[row]
            return self.transform(item["image"]), int(item["label"]), row, None
        except Exception as err:  # PIL, datasets and the transform raise many types for a bad file
            raw = self.dataset.with_format("arrow")[row : row + 1]  # no decoding: the stored path
            image = raw["image"][0].as_py() if "image" in raw.column_names else None
            path = image.get("path") if isinstance(image, dict) else None
            where = f"{path} (row {row})" if path else f"row {row}"
            detail = (str(err).strip().splitlines() or [""])[0][:200]
            label = int(raw["label"][0].as_py()) if "label" in raw.column_names else -1
            return (
                None,
                label,
                row,
                f"image {where} of {self.name} does not decode ({type(err).__name__}: {detail})",
            )

    def __getitems__(self, idx: list[int]) -> list[_Item]:
        return self._items([int(self.rows[i]) for i in idx])

    def __getitem__(self, i: int) -> _Item:
        return self._items([int(self.rows[i])])[0]


def _collate(
    items: list[_Item],
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
    """(images (B,3,H,W) or None when all are bad, labels (B,), rows (B,), [(row, problem)] of bad images)."""
    good = [it for it in items if it[3] is None]
    bad = [(it[2], str(it[3])) for it in items if it[3] is not None]
    images = torch.stack([it[0] for it in good]) if good else None
    labels = torch.tensor([it[1] for it in good], dtype=torch.int64)
    return images, labels, torch.tensor([it[2] for it in good], dtype=torch.int64), bad


def skipped_note(skipped: list[dict]) -> str:
    """A board note for the images left out by on_bad_image="skip" (meta["skipped_images"])."""
    return (
        f"{len(skipped)} image(s) skipped because they do not decode (--on-bad-image skip); "
        f"first: {skipped[0]['problem']}"
    )


def bad_image_error(problem: str) -> ZooRankError:
    """The one-line error for an image that does not decode: which file, which data set, both ways out."""
    return ZooRankError(
        f"{problem}; replace or delete the file, or pass --on-bad-image skip to leave unreadable images out "
        "(the board says how many)."
    )


# ---- the model side -------------------------------------------------------------------------------


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


class _Forward:
    """Backbone features of a batch on `device` in `precision`; halves the micro-batch on out-of-memory.

    __call__: (B, 3, H, W) float tensor (CPU) -> (B, p) float32 tensor (CPU).
    """

    def __init__(self, backbone: Any, device: torch.device, precision: str, batch_size: int, *, quiet: bool):
        self.backbone = backbone
        self.device = device
        self.bf16 = precision == "bf16"
        # channels_last lets oneDNN / cuDNN pick their fast bf16 convolution kernels; fp32 stays the
        # untouched reference layout.
        self.channels_last = self.bf16
        self.micro = batch_size
        self.quiet = quiet

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        start = 0
        while start < len(x):
            size = self.micro
            try:
                out.append(self._features(x[start : start + size]))
                start += size
                continue
            except RuntimeError as err:  # torch.OutOfMemoryError is a RuntimeError
                if not _is_oom(err) or size == 1:
                    raise
            # Outside the except block: the traceback no longer pins the failed batch's tensors.
            self.micro = size // 2
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if not self.quiet:
                warn(f"out of memory at batch size {size}; going on with {self.micro}.")
        return torch.cat(out)

    def _features(self, chunk: torch.Tensor) -> torch.Tensor:
        chunk = chunk.to(self.device, non_blocking=True)
        if self.channels_last:
            chunk = chunk.contiguous(memory_format=torch.channels_last)
        with (
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16),
            _exact_fp32(self.device.type == "cuda" and not self.bf16),
        ):
            return self.backbone.features(chunk).float().cpu()


@contextlib.contextmanager
def _exact_fp32(active: bool) -> Iterator[None]:
    """fp32 means IEEE fp32: cuDNN convolutions default to TF32 (10-bit mantissa) on Ampere and later,
    which moved features of size 1e-3 by up to 1e-5 on an H200; the fp32 reference must not depend on the
    GPU generation."""
    if not active:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@contextlib.contextmanager
def _on_device(backbone: Any, device: torch.device, channels_last: bool) -> Iterator[None]:
    """Move the backbone's model to `device` (and channels_last) for the run; put it back afterwards."""
    model = backbone.model
    param = next(model.parameters(), None)
    home = param.device if param is not None else torch.device("cpu")
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        model.to(home)


# ---- torchrun -------------------------------------------------------------------------------------


def _process_group(device: torch.device) -> tuple[int, int]:
    """(rank, world size): the live process group, one started now from torchrun's env vars, or (0, 1).

    A group started here stays up for later calls (one CLI run extracts several models): tearing it down
    and starting another on torchrun's store races with the stale rendezvous keys of the first.
    """
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        atexit.register(_destroy_process_group)
    return dist.get_rank(), dist.get_world_size()


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _broadcast(obj: Any, world: int) -> Any:
    if world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(obj: Any, rank: int, world: int) -> list | None:
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def rank_block(n: int, rank: int, world: int) -> tuple[int, int]:
    """Manifest positions [first, end) that `rank` of `world` extracts: contiguous, sizes differ by <= 1."""
    return n * rank // world, n * (rank + 1) // world


# ---- the loop -------------------------------------------------------------------------------------


@dataclass
class _Block:
    """What one rank holds for its block: rows (n,), labels (n,), features (n, p), and how it went."""

    rows: np.ndarray
    labels: np.ndarray
    features: np.ndarray
    timings: dict
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (row, problem) of unreadable images


def _resume(
    entry: Entry, block_rows: np.ndarray, first: int, end: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
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


def _extract_block(
    request: Request,
    entry: Entry,
    first: int,
    end: int,
    forward: _Forward,
    *,
    batch_size: int,
    num_workers: int,
    shard_size: int,
    quiet: bool,
    on_bad_image: str = "error",
) -> _Block:
    """Features of manifest positions [first, end): resumed from shards, the rest computed and sharded.

    Ctrl-C saves the batches already computed as a shard, says so and how to resume, then re-raises.
    """
    block_rows = request.rows[first:end]
    t_start = time.perf_counter()
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    resumed = _resume(entry, block_rows, first, end)
    if resumed is not None:
        pieces.append(resumed)
    missing = first + np.flatnonzero(~np.isin(block_rows, resumed[0] if resumed else []))
    n_done = end - first - len(missing)
    if n_done and not quiet:
        err_console().print(
            f"{request.backbone.name}: resumed {n_done} of {end - first} images from the shards of an earlier "
            f"run ({entry.parts}); extracting the other {len(missing)}",
            highlight=False,
            soft_wrap=True,
        )
    data_wait = model_s = 0.0
    skipped: list[tuple[int, str]] = []
    if len(missing):
        dataset = _ImageRows(
            request.images.dataset,
            request.rows[missing],
            request.backbone.transform,
            f"{request.images.name}:{request.images.split}",
        )
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=_collate,
            pin_memory=forward.device.type == "cuda",
            # Deep enough that a slow image or two never stalls the model; with many workers (GPU hosts)
            # 2 each already keeps dozens of batches in flight, and 4 would pin several GB of host memory.
            prefetch_factor=(4 if num_workers <= 8 else 2) if num_workers > 0 else None,
        )
        buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        buf_first, buf_n, pos = int(missing[0]), 0, 0
        last_flush = time.perf_counter()

        def flush() -> None:
            nonlocal buffer, buf_n, last_flush
            r, lab, f = (np.concatenate(c) for c in zip(*buffer, strict=True))
            entry.write_shard(buf_first, int(missing[pos - 1]) + 1, r, lab, f)
            pieces.append((r, lab, f))
            buffer, buf_n, last_flush = [], 0, time.perf_counter()

        with progress(quiet=quiet) as bar:
            task = bar.add_task(
                f"extract {request.backbone.name}", total=end - first, completed=n_done, rate=""
            )
            t_comp0 = time.perf_counter()
            t0 = time.perf_counter()
            try:
                for images, labels, rows, bad in loader:
                    if bad and on_bad_image != "skip":
                        raise bad_image_error(bad[0][1])
                    skipped += bad
                    t1 = time.perf_counter()
                    data_wait += t1 - t0
                    feats = forward(images) if images is not None else None
                    t0 = time.perf_counter()
                    model_s += t0 - t1
                    if not buffer:
                        buf_first = int(missing[pos])
                    pos += len(rows) + len(bad)
                    if feats is not None:
                        buffer.append((rows.numpy(), labels.numpy(), feats.numpy()))
                        buf_n += len(rows)
                    if buffer and (buf_n >= shard_size or time.perf_counter() - last_flush >= SHARD_SECONDS):
                        flush()
                    rate = (pos) / max(time.perf_counter() - t_comp0, 1e-9)
                    bar.update(task, advance=len(rows) + len(bad), rate=f"{rate:.0f} img/s")
            except KeyboardInterrupt:
                if buffer:
                    flush()
                saved = n_done + sum(len(p[0]) for p in pieces[1 if resumed is not None else 0 :])
                err_console().print(
                    f"interrupted: {saved} of {end - first} images of {request.backbone.name} on "
                    f"{request.images.name}:{request.images.split} are saved in the cache ({entry.parts}); "
                    "run the same command again to resume from there.",
                    highlight=False,
                    soft_wrap=True,
                )
                raise
            if buffer:
                flush()
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
        "data_wait_s": data_wait,
        "model_s": model_s,
        "images_per_s": len(missing) / wall if len(missing) else None,
        "batch_size": forward.micro,
    }
    return _Block(rows=rows, labels=labels, features=feats, timings=timings, skipped=skipped)


def _versions() -> dict[str, str]:
    import datasets
    import polars
    import timm

    return {
        "zoo_rank": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "datasets": datasets.__version__,
        "polars": polars.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return platform.processor() or platform.machine()
    return device.type


def _entry_meta(
    request: Request, precision: str, channels_last: bool, device: torch.device, world: int, workers: int
) -> dict:
    """What an entry records beside its numbers: model, data, manifest, how and where it was extracted."""
    backbone, images = request.backbone, request.images
    return {
        "model": backbone.name,
        "weights_id": backbone.weights_id,
        "model_meta": getattr(backbone, "meta", {}),
        "data_config": backbone.data_config,
        "dataset": images.name,
        "split": images.split,
        "fingerprint": images.fingerprint,
        "classes": list(images.classes),
        "n_classes": len(images.classes),
        "manifest": request.manifest,
        "request": request.asked,
        "precision": precision,
        "channels_last": channels_last,
        "device": str(device),
        "device_name": _device_name(device),
        "world_size": world,
        "num_workers": workers,
        "versions": _versions(),
        "key_fields": asdict(request.key(precision)),
    }


def _commit(entry: Entry, request: Request, blocks: list[_Block], meta: dict) -> FeatureSet:
    """Merge the ranks' blocks into one entry; every manifest row exactly once (less the unreadable images
    skipped, listed in meta["skipped_images"]), or an error."""
    skipped = sorted(s for b in blocks for s in b.skipped)
    parts = [b for b in blocks if b.features is not None]
    if not parts:
        raise ZooRankError(
            f"none of the {len(request.rows)} images of {request.images.name}:{request.images.split} decodes "
            f"(first: {skipped[0][1] if skipped else '?'}); check the files."
        )
    rows = np.concatenate([b.rows for b in parts])
    labels = np.concatenate([b.labels for b in parts])
    feats = np.concatenate([b.features for b in parts])
    rows, first_seen = np.unique(rows, return_index=True)
    labels, feats = labels[first_seen], feats[first_seen]
    expected = np.setdiff1d(request.rows, [r for r, _ in skipped]) if skipped else request.rows
    if skipped:
        meta["skipped_images"] = [{"row": int(r), "problem": p} for r, p in skipped]
        warn(
            f"{len(skipped)} of {len(request.rows)} images skipped because they do not decode "
            f"(--on-bad-image skip), e.g. {skipped[0][1]}"
        )
    if not np.array_equal(rows, expected):
        missing = np.setdiff1d(expected, rows)
        raise ZooRankError(
            f"merged extraction has {len(rows)} rows, the manifest {len(request.rows)} ({len(missing)} missing, "
            f"first {missing[:5].tolist()}); rerun the same command to fill them in."
        )
    bad = int((~np.isfinite(feats).all(axis=1)).sum())
    if bad:
        warn(
            f"{bad} of {len(rows)} feature rows contain NaN/Inf ({request.backbone.name}); try --precision fp32."
        )
    timings = [b.timings for b in blocks]
    computed = sum(t["n_computed"] for t in timings)
    wall = max(t["seconds"] for t in timings)
    meta["timings"] = {
        "seconds": wall,
        "n_computed": computed,
        "n_resumed": sum(t["n_resumed"] for t in timings),
        "images_per_s": computed / wall if computed and wall > 0 else None,
        "data_wait_s": sum(t["data_wait_s"] for t in timings),
        "model_s": sum(t["model_s"] for t in timings),
        "per_rank": timings,
    }
    meta["batch_size"] = min(t["batch_size"] for t in timings)
    return entry.commit(rows, labels, feats, meta)


def _share(fs: FeatureSet | None, entry: Entry, request: Request, rank: int, world: int) -> FeatureSet:
    """Every rank returns the committed entry: read from the shared cache folder, or sent by rank 0."""
    if world == 1:
        assert fs is not None
        return fs
    import torch.distributed as dist

    visible = [None] * world
    dist.all_gather_object(visible, entry.path.exists())
    if all(visible):
        return fs if rank == 0 else entry.read(request.rows)  # type: ignore[return-value]
    return _broadcast(fs, world)  # no shared file system: rank 0 sends it


def class_stats(fs: FeatureSet):
    """zoo_rank.metrics.ClassStats of a whole entry, computed once across torchrun ranks.

    Under torch.distributed each rank adds only its block of rows (`rank_block`) and the statistics are
    all-reduced, so every rank gets the totals; a single process simply reads them all.
    """
    import torch.distributed as dist

    from zoo_rank.metrics import ClassStats

    rank, world = (
        (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    )
    first, end = rank_block(len(fs.labels), rank, world)
    stats = ClassStats(dim=fs.features.shape[1])
    if end > first:
        stats.update(fs.features[first:end], fs.labels[first:end])
    return stats.all_reduce() if world > 1 else stats


def extract_features(
    model: Any,
    data: Any,
    *,
    split: str | None = None,
    n_per_class: int | None = None,
    seed: int = 0,
    precision: str = "auto",
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    skip_existing: bool = True,
    quiet: bool = False,
    manifest: Any = None,
    shard_size: int | None = None,
    on_bad_image: str = "error",
) -> FeatureSet:
    """Penultimate features of `model` on `data`, from the cache when present, else extracted and cached.

    model: a spec for zoo_rank.models.create_backbone ("pip:efficientnet-lite0", "resnet50.a1_in1k", ...)
    or a Backbone. data: a spec for zoo_rank.data.load_images (with `split`) or an ImageSet.
    n_per_class/seed: a class-balanced subset (zoo_rank.data.balanced_subset); None means every image.
    manifest: a Manifest (or its JSON path) that fixes the rows instead.
    precision: "auto" (bf16 + channels_last where native, else fp32), "bf16" or "fp32".
    skip_existing=False recomputes (drops the entry and its shards first).
    shard_size: images per resume shard (default: about 64 MB of features, 1024..16384 images).
    on_bad_image: "error" (default) stops at an image that does not decode, naming the file and the data
    set; "skip" leaves such images out and lists them in meta["skipped_images"].

    Returns FeatureSet: features (N, p) float32, labels (N,) int64, rows (N,) dataset rows, meta.
    Under torchrun every rank extracts its block and returns the merged entry.
    """
    check_loader_args(batch_size, num_workers, on_bad_image)  # before minutes of model and data loading
    request = resolve_request(model, data, split=split, n_per_class=n_per_class, seed=seed, manifest=manifest)
    if len(request.rows) == 0:
        raise ZooRankError(
            f"{request.asked['data']!r} selects no images; pass a data spec or manifest with rows."
        )
    dev = pick_device(device)
    prec = resolve_precision(precision, dev)
    key = request.key(prec)
    entry = Entry(cache_root(cache_dir), key.digest())
    backbone = request.backbone
    bs = DEFAULT_BATCH_SIZE.get(dev.type, 32) if batch_size is None else int(batch_size)
    workers = default_num_workers(dev) if num_workers is None else int(num_workers)
    if shard_size is None:
        shard_size = int(min(16384, max(1024, 2**26 // (4 * max(1, int(backbone.num_features))))))
    t_call = time.perf_counter()

    rank, world = _process_group(dev)
    quiet_here = quiet or rank != 0
    fs: FeatureSet | None = None
    with entry.lock(quiet=quiet_here) if rank == 0 else contextlib.nullcontext():
        if rank == 0:
            if not skip_existing:
                entry.clear()
            fs = entry.read_valid(request.rows)
            if fs is not None and fs.meta.get("skipped_images") and on_bad_image != "skip":
                raise bad_image_error(fs.meta["skipped_images"][0]["problem"])
        done = _broadcast(fs is not None, world)
        if not done:
            first, end = rank_block(len(request.rows), rank, world)
            forward = _Forward(backbone, dev, prec, bs, quiet=quiet_here)
            with _on_device(backbone, dev, forward.channels_last), torch.inference_mode():
                block = _extract_block(
                    request,
                    entry,
                    first,
                    end,
                    forward,
                    batch_size=bs,
                    num_workers=workers,
                    shard_size=max(1, int(shard_size)),
                    quiet=quiet_here,
                    on_bad_image=on_bad_image,
                )
            blocks = _gather(block, rank, world)
            if rank == 0:
                assert blocks is not None
                meta = _entry_meta(request, prec, forward.channels_last, dev, world, workers)
                fs = _commit(entry, request, blocks, meta)
                if not quiet:
                    t = fs.meta["timings"]
                    rate = t["images_per_s"]
                    bound = "data" if t["data_wait_s"] > t["model_s"] else "model"
                    tail = f", {rate:.0f} img/s, {bound}-bound" if rate else ""
                    err_console().print(
                        f"{backbone.name}: {fs.features.shape[0]} x {fs.features.shape[1]} in "
                        f"{time.perf_counter() - t_call:.1f} s{tail} -> {entry.path}",
                        highlight=False,
                        soft_wrap=True,
                    )
    return _share(fs, entry, request, rank, world)


__all__ = [
    "FeatureSet",
    "Request",
    "class_stats",
    "default_num_workers",
    "extract_features",
    "pick_device",
    "rank_block",
    "resolve_precision",
    "resolve_request",
]
