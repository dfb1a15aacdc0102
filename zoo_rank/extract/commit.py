"""How the ranks' blocks become one committed entry, and what the entry records beside its numbers
(model, data, manifest, precision, device, timings, versions, key fields)."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from zoo_rank._console import err_console, warn
from zoo_rank._paths import versions
from zoo_rank._validation import ZooRankError
from zoo_rank.cache import Entry, FeatureSet
from zoo_rank.extract.forward import warn_nonfinite
from zoo_rank.extract.request import Request

_Columns = tuple[np.ndarray, np.ndarray, np.ndarray]  # rows (n,), labels (n,), features (n, p)


@dataclass
class Block:
    """What one rank holds for its block: rows (n,), labels (n,), features (n, p), and how it went."""

    rows: np.ndarray
    labels: np.ndarray
    features: np.ndarray | None
    timings: dict
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (row, problem) of unreadable images


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return platform.processor() or platform.machine()
    return device.type


def entry_meta(
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
        "versions": versions("torch", "timm", "datasets", "polars", "numpy"),
        "key_fields": asdict(request.key(precision)),
    }


def _merged(request: Request, blocks: list[Block], meta: dict) -> _Columns:
    """The ranks' blocks as one (rows, labels, features), every manifest row exactly once (less the
    unreadable images skipped, listed in meta["skipped_images"]), or an error."""
    skipped = sorted(s for b in blocks for s in b.skipped)
    parts = [b for b in blocks if b.features is not None]
    if not parts:
        raise ZooRankError(
            f"none of the {len(request.rows)} images of {request.images.name}:{request.images.split} decodes "
            f"(first: {skipped[0][1] if skipped else '?'}); check the files."
        )
    rows = np.concatenate([b.rows for b in parts])
    labels = np.concatenate([b.labels for b in parts])
    feats = np.concatenate([b.features for b in parts])  # type: ignore[misc]
    rows, first_seen = np.unique(rows, return_index=True)
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
    return rows, labels[first_seen], feats[first_seen]


def commit_blocks(entry: Entry, request: Request, blocks: list[Block], meta: dict) -> FeatureSet:
    """Merge the ranks' blocks into one entry, check the features once for NaN/Inf (where they leave the
    model), add the run's timings to `meta` and commit."""
    rows, labels, feats = _merged(request, blocks, meta)
    warn_nonfinite(feats, request.backbone.name)
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


def report(fs: FeatureSet, name: str, seconds: float, entry: Entry, how: str = "") -> None:
    """One line per committed entry: its shape, time, speed, what bounded it, where it went."""
    t = fs.meta["timings"]
    rate = t["images_per_s"]
    bound = "data" if t["data_wait_s"] > t["model_s"] else "model"
    tail = f", {rate:.0f} img/s, {bound}-bound{how}" if rate else ""
    err_console().print(
        f"{name}: {fs.features.shape[0]} x {fs.features.shape[1]} in {seconds:.1f} s{tail} -> {entry.path}",
        highlight=False,
        soft_wrap=True,
    )


__all__ = ["Block", "commit_blocks", "entry_meta", "report"]
