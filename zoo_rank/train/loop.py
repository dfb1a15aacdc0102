"""The training loop of one family member: DDP under torchrun, bf16 on CUDA, resumable, tracked.

One run writes into `out_dir/<family>-<value>/`:

    config.json, model.safetensors   timm's local-dir format (`create_backbone("local-dir:PATH")` loads it);
                                     config.json["zoo_rank"] records the recipe, the knob and the epoch
    resume.pt                        model + optimizer + scheduler + logs, replaced atomically each epoch
    history.*, tracking.*, spectra.* parquet + CSV logs (see `TrackingLog`)
    collapse.png, within_split.png, spectra.png

Determinism: every epoch seeds torch from (seed, epoch, rank) and the sampler shuffles with
(seed, epoch), so an interrupted run resumed from resume.pt continues exactly as an uninterrupted
one would (bit-identical on CPU).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from zoo_rank._console import err_console, progress
from zoo_rank._validation import ZooRankError
from zoo_rank.train.losses import FamilyLoss, make_loss
from zoo_rank.train.recipes import Recipe, get_recipe
from zoo_rank.train.tracking import TrackingLog

RESUME_FILE = "resume.pt"
_RESUME_FORMAT = 1


def run_name(family: str, value: float) -> str:
    """Folder name of one family member, e.g. "tau-0.1", "lambda-2.5"."""
    return f"{family}-{value:g}"


@dataclass
class TrainResult:
    """Where a run lives and how it ended."""

    run_dir: Path
    family: str
    value: float
    recipe: str
    epochs_done: int
    epochs: int
    test_top1: float | None = None  # on the test split (recipe.final_test_per_class), after the last epoch
    last_test: dict[str, Any] = field(default_factory=dict)  # the last tracking row of the test split
    model: nn.Module | None = field(
        default=None, repr=False
    )  # the trained timm model, when this call trained

    @property
    def completed(self) -> bool:
        return self.epochs_done >= self.epochs

    @property
    def spec(self) -> str:
        """The zoo name of the trained model."""
        return f"local-dir:{self.run_dir}"


# ---- processes and devices -------------------------------------------------------------------------

_WE_STARTED_DIST = False


def _distributed(device: str) -> tuple[int, int, torch.device]:
    """(rank, world_size, device): joins torchrun's process group when its environment says so.

    The device comes from the project's one picker (`_device.pick_device`: CUDA as cuda:$LOCAL_RANK, then
    MPS, then CPU); the backend is nccl on CUDA and gloo otherwise.
    """
    global _WE_STARTED_DIST
    from zoo_rank._device import pick_device

    dev = pick_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        _WE_STARTED_DIST = True
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    return rank, world, dev


def shutdown_distributed() -> None:
    """Leave the process group if `train` created it (torchrun runs); a caller's own group is left alone."""
    global _WE_STARTED_DIST
    if _WE_STARTED_DIST and dist.is_initialized():
        dist.destroy_process_group()
    _WE_STARTED_DIST = False


def _seed(seed: int, epoch: int, rank: int) -> None:
    """Seed everything an epoch draws from, from (seed, epoch, rank) alone, so a resumed epoch replays exactly.

    torch drives torchvision's augmentations, dropout and the loader workers' seeds; Python's `random`
    drives timm's AutoAugment in the main process (loader workers seed their own `random` from torch).
    """
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(2)
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))
    random.seed(int(state[0]))


# ---- data ------------------------------------------------------------------------------------------


class _ImageRows(torch.utils.data.Dataset):
    """Rows `indices` of an ImageSet as (transformed image (3, H, W), label) pairs."""

    def __init__(self, images: Any, indices: np.ndarray, labels: np.ndarray, transform: Any) -> None:
        self.dataset = images.dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = int(self.indices[i])
        image = self.dataset[row]["image"]
        return self.transform(image.convert("RGB")), int(self.labels[row])


def data_config(recipe: Recipe) -> dict[str, Any]:
    """The eval preprocessing of a trained model, as timm's pretrained config records it."""
    return {
        "input_size": (3, recipe.img_size, recipe.img_size),
        "interpolation": recipe.interpolation,
        "mean": tuple(recipe.mean),
        "std": tuple(recipe.std),
        "crop_pct": recipe.crop_pct,
        "crop_mode": "center",
    }


def train_transform(recipe: Recipe) -> Any:
    """PIL -> (3, img_size, img_size) tensor with the recipe's augmentation."""
    import timm.data
    from torchvision import transforms as T

    if recipe.augment == "autoaugment":
        return timm.data.create_transform(
            input_size=recipe.img_size,
            is_training=True,
            auto_augment=recipe.auto_augment_policy,
            interpolation=recipe.interpolation,
            mean=recipe.mean,
            std=recipe.std,
        )
    if recipe.augment == "crop-flip":
        interpolation = T.InterpolationMode(recipe.interpolation)
        return T.Compose(
            [
                T.Resize(recipe.img_size, interpolation=interpolation),
                T.CenterCrop(recipe.img_size),
                T.RandomCrop(recipe.img_size, padding=recipe.crop_padding),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize(recipe.mean, recipe.std),
            ]
        )
    return eval_transform(recipe)


def eval_transform(recipe: Recipe) -> Any:
    """timm's eval transform of the exported pretrained config: exactly what a zoo user of the model gets."""
    import timm.data

    return timm.data.create_transform(**data_config(recipe))


@dataclass
class _Data:
    train_images: Any
    test_images: Any
    train_indices: np.ndarray
    train_labels: np.ndarray
    test_labels: np.ndarray
    track: dict[str, tuple[Any, np.ndarray, np.ndarray]]  # split -> (images, indices, labels)
    final_test: np.ndarray  # test rows of the accuracy reported after the last epoch
    classes: list[str]


def _load_data(recipe: Recipe) -> _Data:
    from zoo_rank import data as zdata

    train_images = zdata.load_images(recipe.train_data, recipe.train_split)
    test_images = zdata.load_images(recipe.test_data, recipe.test_split)
    train_labels, test_labels = train_images.labels, test_images.labels
    if recipe.n_per_class is not None:
        train_indices = zdata.balanced_subset(train_images, recipe.n_per_class, seed=recipe.seed).indices
    else:
        train_indices = np.arange(len(train_labels))
    # The fixed train subset is drawn from the images actually trained on.
    picked, _ = zdata.balanced_indices(
        train_labels[train_indices], recipe.track_train_per_class, seed=recipe.seed
    )
    track_train = train_indices[picked]
    if recipe.track_test_per_class is None:
        track_test = np.arange(len(test_labels))
    else:
        track_test = zdata.balanced_subset(test_images, recipe.track_test_per_class, seed=recipe.seed).indices
    if recipe.final_test_per_class is None:
        final_test = np.arange(len(test_labels))
    else:
        final_test = zdata.balanced_subset(test_images, recipe.final_test_per_class, seed=recipe.seed).indices
    return _Data(
        train_images=train_images,
        test_images=test_images,
        train_indices=train_indices,
        train_labels=train_labels,
        test_labels=test_labels,
        track={
            "train": (train_images, track_train, train_labels),
            "test": (test_images, track_test, test_labels),
        },
        final_test=final_test,
        classes=list(train_images.classes),
    )


# ---- model -----------------------------------------------------------------------------------------


class FeaturesAndLogits(nn.Module):
    """timm model -> (pre-logit features (B, p), logits (B, C)); the classifier is applied to those features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return features, self.model.get_classifier()(features)


def create_model(recipe: Recipe, num_classes: int) -> nn.Module:
    import timm

    torch.manual_seed(recipe.seed)  # every rank starts from the same weights
    return timm.create_model(recipe.model, num_classes=num_classes, **recipe.model_args)


def build_optimizer(recipe: Recipe, model: nn.Module, world_size: int = 1) -> torch.optim.Optimizer:
    """timm's optimizer factory with the recipe's settings (no weight decay on biases and norms, timm's default)."""
    import timm.optim

    return timm.optim.create_optimizer_v2(
        model,
        opt=recipe.opt,
        lr=recipe.lr(world_size),
        weight_decay=recipe.weight_decay,
        momentum=recipe.momentum,
    )


def build_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
    """timm's scheduler factory, updated every step: linear warm-up from warmup_lr, then cosine or step decay.

    Call `step_update(num_updates)` after every optimizer step and `step(epoch)` after every epoch.
    """
    import timm.scheduler

    scheduler, _ = timm.scheduler.create_scheduler_v2(
        optimizer,
        sched=recipe.sched,
        num_epochs=recipe.epochs,
        decay_epochs=recipe.decay_epochs,
        decay_rate=recipe.decay_rate,
        min_lr=recipe.min_lr,
        warmup_lr=recipe.warmup_lr,
        warmup_epochs=recipe.warmup_epochs,
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    return scheduler


# ---- measuring -------------------------------------------------------------------------------------


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    recipe: Recipe,
    device: torch.device,
    rank: int,
    world: int,
) -> tuple[Any, dict[str, float]]:
    """ClassStats of the features and top-1/CE of `dataset`, sharded over ranks and all-reduced."""
    from zoo_rank.metrics import ClassStats

    was_training = model.training
    model.eval()
    shard = torch.utils.data.Subset(dataset, list(range(rank, len(dataset), world)))
    loader = torch.utils.data.DataLoader(shard, batch_size=recipe.batch_size, num_workers=recipe.num_workers)
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # correct, cross-entropy sum, n
    stats = None
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            features, logits = model(x)
        features, logits = features.float(), logits.float()
        if stats is None:
            stats = ClassStats(dim=features.shape[1])
        stats.update(features, y)
        totals += torch.stack(
            [
                (logits.argmax(1) == y).sum().double(),
                nn.functional.cross_entropy(logits, y, reduction="sum").double(),
                torch.tensor(float(len(y)), dtype=torch.float64, device=device),
            ]
        )
    if stats is None:
        stats = ClassStats(dim=_num_features(model))
    if world > 1:
        stats.all_reduce()
        dist.all_reduce(totals)
    model.train(was_training)
    correct, ce_sum, n = totals.tolist()
    return stats, {"top1": correct / max(n, 1), "loss": ce_sum / max(n, 1)}


def _num_features(model: nn.Module) -> int:
    inner = model.model if isinstance(model, FeaturesAndLogits) else model
    return int(getattr(inner, "head_hidden_size", None) or inner.num_features)


# ---- checkpoints -----------------------------------------------------------------------------------


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _export(
    model: nn.Module,
    run_dir: Path,
    recipe: Recipe,
    loss: FamilyLoss,
    record: dict[str, Any],
    classes: list[str],
) -> None:
    """Write config.json + model.safetensors (timm local-dir) with the recipe and the knob recorded."""
    from timm.models import save_for_hf

    tmp = run_dir / f".export-tmp-{os.getpid()}"
    tag = f"zoo_rank_{run_name(loss.family, loss.value)}"
    # safetensors stores contiguous tensors only; CUDA training keeps conv weights channels_last.
    model = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format)
    save_for_hf(
        model,
        tmp,
        model_config={
            "pretrained_cfg": {"tag": tag, "origin_url": None, "license": None},
            "label_names": [str(c) for c in classes],
            "zoo_rank": record,
        },
        safe_serialization=True,
        data_config=data_config(recipe),
    )
    # Weights first, then the config that describes them.
    for name in ("model.safetensors", "config.json"):
        os.replace(tmp / name, run_dir / name)
    tmp.rmdir()


def _record(
    recipe: Recipe, loss: FamilyLoss, epoch: int, world: int, extra: dict[str, Any]
) -> dict[str, Any]:
    import timm

    from zoo_rank import __version__

    return {
        "family": loss.family,
        "value": loss.value,
        "recipe": recipe.to_dict(),
        "epoch": epoch,
        "epochs": recipe.epochs,
        "world_size": world,
        "versions": {"zoo_rank": __version__, "torch": torch.__version__, "timm": timm.__version__},
        **extra,
    }


def read_record(run_dir: str | Path) -> dict[str, Any]:
    """config.json["zoo_rank"] of a trained model: family, value, recipe, epoch, test_top1, ..."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ZooRankError(
            f"{path} not found; train the model first (zoo-rank train ...) or pass a run folder."
        )
    return json.loads(path.read_text()).get("zoo_rank", {})


# ---- the loop --------------------------------------------------------------------------------------


def train(
    recipe: str | Recipe,
    family: str,
    value: float,
    out_dir: str | Path,
    *,
    epochs: int | None = None,
    resume: bool = False,
    stop_after_epoch: int | None = None,
    device: str = "auto",
    quiet: bool = False,
) -> TrainResult:
    """Train one family member (`family` "tau" or "lambda", knob `value`) with a recipe.

    `epochs` overrides the recipe's. `resume=True` continues from out_dir/<family>-<value>/resume.pt
    when present (a finished run is returned as is); without it an existing run folder is an error.
    `stop_after_epoch` ends the process cleanly after that epoch (checkpointed), e.g. to fit a job's
    time limit; run again with resume=True to go on. Under torchrun each process calls this and the
    batch is per process (DistributedDataParallel, gloo on CPU, nccl on CUDA).
    """
    recipe = get_recipe(recipe, epochs=epochs)
    loss_fn = make_loss(family, value)
    rank, world, dev = _distributed(device)
    run_dir = Path(out_dir) / run_name(family, value)
    resume_path = run_dir / RESUME_FILE
    checkpoint = _load_resume(resume_path, recipe, loss_fn, resume, dev, world)
    if checkpoint is not None and int(checkpoint["epoch"]) >= recipe.epochs:
        # Finished before: nothing to train, so don't load data or build the model.
        logs = TrackingLog(**checkpoint["logs"])
        return TrainResult(
            run_dir=run_dir,
            family=family,
            value=float(value),
            recipe=recipe.name,
            epochs_done=int(checkpoint["epoch"]),
            epochs=recipe.epochs,
            test_top1=_read_json_record(run_dir).get("test_top1"),
            last_test=next((r for r in reversed(logs.tracking) if r["split"] == "test"), {}),
        )
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)

    data = _load_data(recipe)
    num_classes = len(data.classes)
    train_set = _ImageRows(data.train_images, data.train_indices, data.train_labels, train_transform(recipe))
    sampler = torch.utils.data.DistributedSampler(
        train_set, num_replicas=world, rank=rank, shuffle=True, seed=recipe.seed
    )
    # Dropping the last partial batch keeps batch norm away from batches of one.
    drop_last = len(sampler) > recipe.batch_size
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=recipe.batch_size,
        sampler=sampler,
        num_workers=recipe.num_workers,
        drop_last=drop_last,
        pin_memory=dev.type == "cuda",
        # Fresh workers every epoch take their seeds from that epoch's seeding: exact replay on resume.
        persistent_workers=False,
    )
    steps_per_epoch = len(loader)
    track_eval = eval_transform(recipe)
    track_sets = {
        split: _ImageRows(images, indices, labels, track_eval)
        for split, (images, indices, labels) in data.track.items()
    }

    model = create_model(recipe, num_classes)
    module = FeaturesAndLogits(model).to(dev)
    if dev.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(recipe, model, world)
    scheduler = build_scheduler(recipe, optimizer, steps_per_epoch)
    log = TrackingLog.empty()
    start_epoch, num_updates = 0, 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start_epoch, num_updates = int(checkpoint["epoch"]), int(checkpoint["num_updates"])
        log = TrackingLog(**checkpoint["logs"])
    else:
        scheduler.step_update(0)  # the warm-up learning rate from the first step
    ddp = (
        nn.parallel.DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None)
        if world > 1
        else module
    )
    title = f"{recipe.name} {family}={value:g}"
    last_test: dict[str, Any] = next((r for r in reversed(log.tracking) if r["split"] == "test"), {})
    stop = recipe.epochs if stop_after_epoch is None else min(recipe.epochs, stop_after_epoch)

    with progress(quiet=quiet or rank != 0) as bar:
        for epoch in range(start_epoch, stop):
            _seed(recipe.seed, epoch, rank)
            sampler.set_epoch(epoch)
            ddp.train()
            task = bar.add_task(f"{title} epoch {epoch + 1}/{recipe.epochs}", total=steps_per_epoch, rate="")
            # Batch-weighted sums of loss, cross-entropy and cosine distance, and the number correct.
            sums = torch.zeros(4, dtype=torch.float64, device=dev)
            seen, started = 0, time.perf_counter()
            for x, y in loader:
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                if dev.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    features, logits = ddp(x)
                parts = loss_fn(logits, features, y)
                optimizer.zero_grad(set_to_none=True)
                parts.loss.backward()
                optimizer.step()
                num_updates += 1
                scheduler.step_update(num_updates=num_updates)
                b = len(y)
                sums += torch.stack(
                    [
                        parts.loss.detach() * b,
                        parts.cross_entropy * b,
                        parts.cosine_distance * b,
                        (logits.argmax(1) == y).sum(),
                    ]
                ).double()
                seen += b
                elapsed = time.perf_counter() - started
                bar.update(task, advance=1, rate=f"{seen * world / max(elapsed, 1e-9):.0f} img/s")
            scheduler.step(epoch + 1)
            seconds = time.perf_counter() - started
            counts = torch.tensor([float(seen)], dtype=torch.float64, device=dev)
            if world > 1:
                dist.all_reduce(sums)
                dist.all_reduce(counts)
                # DDP broadcasts buffers before each forward, so after the last step the ranks' batch-norm
                # statistics differ by one update: make rank 0's the common ones.
                for buffer in module.buffers():
                    dist.broadcast(buffer, 0)
            n = max(float(counts[0]), 1.0)
            loss_sum, ce_sum, dist_sum, correct = sums.tolist()
            done = epoch + 1
            log.history.append(
                {
                    "epoch": done,
                    "lr": float(optimizer.param_groups[0]["lr"]),
                    "loss": loss_sum / n,
                    "cross_entropy": ce_sum / n,
                    "cosine_distance": dist_sum / n,
                    "train_top1": correct / n,
                    "images": int(n),
                    "seconds": seconds,
                }
            )
            if done % recipe.track_every == 0 or done == recipe.epochs:
                for split, dataset in track_sets.items():
                    stats, extra = _evaluate(module, dataset, recipe, dev, rank, world)
                    if rank == 0:
                        row = log.add_measurement(done, split, stats, extra, recipe.spectrum_top)
                        if split == "test":
                            last_test = row
            extra: dict[str, Any] = {}
            if done == recipe.epochs:
                test_set = _ImageRows(data.test_images, data.final_test, data.test_labels, track_eval)
                _, test = _evaluate(module, test_set, recipe, dev, rank, world)
                extra = {"test_top1": test["top1"], "test_loss": test["loss"], "test_images": len(test_set)}
            if rank == 0:
                # Figures once per call (they cost seconds); the tables every epoch.
                _save_epoch(
                    run_dir,
                    module,
                    optimizer,
                    scheduler,
                    recipe,
                    loss_fn,
                    done,
                    num_updates,
                    world,
                    log,
                    extra,
                    data.classes,
                    title,
                    plots=done == stop,
                )
                if not quiet:
                    _print_epoch(title, log, done, recipe.epochs)
            if world > 1:
                dist.barrier()

    record = _read_json_record(run_dir) if rank == 0 else {}
    epochs_done = max(start_epoch, stop)
    return TrainResult(
        run_dir=run_dir,
        family=family,
        value=float(value),
        recipe=recipe.name,
        epochs_done=epochs_done,
        epochs=recipe.epochs,
        test_top1=record.get("test_top1"),
        last_test=last_test,
        model=model,
    )


def _read_json_record(run_dir: Path) -> dict[str, Any]:
    try:
        return read_record(run_dir)
    except ZooRankError:
        return {}


def _save_epoch(
    run_dir: Path,
    module: FeaturesAndLogits,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    recipe: Recipe,
    loss_fn: FamilyLoss,
    done: int,
    num_updates: int,
    world: int,
    log: TrackingLog,
    extra: dict[str, Any],
    classes: list[str],
    title: str,
    *,
    plots: bool,
) -> None:
    model = module.model
    _export(model, run_dir, recipe, loss_fn, _record(recipe, loss_fn, done, world, extra), classes)
    state = {
        "format": _RESUME_FORMAT,
        "family": loss_fn.family,
        "value": loss_fn.value,
        "recipe": recipe.to_dict(),
        "epoch": done,
        "num_updates": num_updates,
        "world_size": world,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "logs": log.state(),
    }
    _atomic_torch_save(state, run_dir / RESUME_FILE)
    log.write(run_dir, title, plots=plots)


def _print_epoch(title: str, log: TrackingLog, done: int, epochs: int) -> None:
    h = log.history[-1]
    line = f"{title} epoch {done}/{epochs}: loss {h['loss']:.4f}  train top-1 {h['train_top1']:.3f}  {h['seconds']:.1f}s"
    test = [r for r in log.tracking if r["epoch"] == done and r["split"] == "test"]
    if test:
        r = test[0]
        line += f"  | test top-1 {r['top1']:.3f}  VCI {r['vci']:.3f}  cos-dist {r['cosine_distance']:.3f}"
    err_console().print(line, highlight=False)


def _load_resume(
    path: Path, recipe: Recipe, loss_fn: FamilyLoss, resume: bool, device: torch.device, world: int
) -> dict[str, Any] | None:
    """The resume checkpoint when resuming, after checking it belongs to this recipe and knob."""
    if not path.is_file():
        if not resume and (path.parent / "config.json").is_file():
            raise ZooRankError(
                f"{path.parent} already holds a trained model; pass --resume to continue it or choose another --out."
            )
        return None
    if not resume:
        raise ZooRankError(
            f"{path.parent} already holds a run; pass --resume to continue it or choose another --out."
        )
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    if checkpoint.get("format") != _RESUME_FORMAT:
        raise ZooRankError(
            f"{path} has checkpoint format {checkpoint.get('format')}, expected {_RESUME_FORMAT}; start a new --out."
        )
    if (
        checkpoint["recipe"] != recipe.to_dict()
        or checkpoint["family"] != loss_fn.family
        or not math.isclose(checkpoint["value"], loss_fn.value)
    ):
        changed = sorted(k for k, v in recipe.to_dict().items() if checkpoint["recipe"].get(k) != v)
        raise ZooRankError(
            f"{path} was written by another recipe or knob (differs in: {', '.join(changed) or 'family/value'}); "
            "resume with the same settings, or choose another --out."
        )
    if checkpoint["world_size"] != world:
        from zoo_rank._console import warn

        warn(
            f"resuming a {checkpoint['world_size']}-process run with {world} processes: the data order changes from here on."
        )
    return checkpoint


def train_family(
    recipe: str | Recipe,
    family: str,
    values: list[float],
    out_dir: str | Path,
    **kwargs: Any,
) -> list[TrainResult]:
    """`train` for every value of the family, one after another, into out_dir/<family>-<value>/.

    Also writes out_dir/<family>.png comparing the members' collapse curves (test split).
    """
    if not values:
        raise ZooRankError(f"no values given for family {family!r}; pass e.g. --values 0.1,0.5,1.0.")
    for v in values:
        make_loss(family, v)  # fail on a bad value before any training starts
    results = [train(recipe, family, v, out_dir, **kwargs) for v in values]
    figure = Path(out_dir) / f"{family}.png"
    trained_now = any(r.model is not None for r in results)
    if (trained_now or not figure.is_file()) and (not dist.is_initialized() or dist.get_rank() == 0):
        from zoo_rank.train.tracking import plot_family

        plot_family(
            [r.run_dir for r in results],
            [run_name(family, r.value) for r in results],
            figure,
        )
    return results


def print_results(results: list[TrainResult]) -> None:
    """A rich table of trained family members (rank 0 only under torchrun)."""
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    from rich.table import Table

    from zoo_rank._console import console

    table = Table(title="trained models (zoo entries: local-dir:FOLDER)")
    for column in ("model", "epochs", "test top-1", "VCI", "cos-dist", "folder"):
        table.add_column(column, justify="left" if column in ("model", "folder") else "right")
    for r in results:
        last = r.last_test
        table.add_row(
            run_name(r.family, r.value),
            f"{r.epochs_done}/{r.epochs}",
            "" if r.test_top1 is None else f"{r.test_top1:.4f}",
            f"{last['vci']:.4f}" if "vci" in last else "",
            f"{last['cosine_distance']:.4f}" if "cosine_distance" in last else "",
            str(r.run_dir),
        )
    console().print(table)
