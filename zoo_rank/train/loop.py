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

The rooms beside this one: inputs.py (images, subsets, transforms), model.py (network, optimizer,
scheduler), distributed.py (process group, seeding), evaluate.py (measuring), checkpoint.py (files).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from rich.table import Table
from torch import nn

from zoo_rank._console import console, err_console, progress
from zoo_rank._validation import ZooRankError
from zoo_rank.data import ImageRows
from zoo_rank.train.checkpoint import (
    RESUME_FILE,
    RunState,
    _load_resume,
    _read_json_record,
    _save_epoch,
    read_record,
    run_name,
)
from zoo_rank.train.distributed import _distributed, _seed, is_main_process, shutdown_distributed
from zoo_rank.train.evaluate import _evaluate
from zoo_rank.train.inputs import _Data, _load_data, data_config, eval_transform, train_transform
from zoo_rank.train.losses import FamilyLoss, make_loss
from zoo_rank.train.model import FeaturesAndLogits, build_optimizer, build_scheduler, create_model
from zoo_rank.train.recipes import Recipe, get_recipe
from zoo_rank.train.tracking import TrackingLog, plot_family

__all__ = [
    "RESUME_FILE",
    "TrainResult",
    "create_model",
    "data_config",
    "print_results",
    "read_record",
    "run_name",
    "shutdown_distributed",
    "train",
    "train_family",
]


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


@dataclass
class _Run:
    """One call's training: where, what, on which process, and the state that a checkpoint keeps."""

    recipe: Recipe
    loss_fn: FamilyLoss
    run_dir: Path
    rank: int
    world: int
    device: torch.device
    data: _Data
    sampler: Any  # DistributedSampler over the training rows
    loader: Any  # DataLoader of (image batch (B, 3, H, W), labels (B,))
    eval_transform: Any
    module: FeaturesAndLogits
    ddp: nn.Module  # the module, wrapped in DistributedDataParallel under torchrun
    state: RunState
    title: str

    def track_sets(self) -> dict[str, ImageRows]:
        return {
            split: ImageRows(images, indices, labels, self.eval_transform)
            for split, (images, indices, labels) in self.data.track.items()
        }


def last_test_row(log: TrackingLog) -> dict[str, Any]:
    """The latest tracking row of the test split ({} before the first measurement)."""
    return next((r for r in reversed(log.tracking) if r["split"] == "test"), {})


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
    checkpoint = _load_resume(run_dir / RESUME_FILE, recipe, loss_fn, resume, dev, world)
    result = TrainResult(run_dir, family, float(value), recipe.name, 0, recipe.epochs)
    if checkpoint is not None and int(checkpoint["epoch"]) >= recipe.epochs:
        # Finished before: nothing to train, so don't load data or build the model.
        result.epochs_done = int(checkpoint["epoch"])
        result.test_top1 = _read_json_record(run_dir).get("test_top1")
        result.last_test = last_test_row(TrackingLog(**checkpoint["logs"]))
        return result
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    run = _start(recipe, loss_fn, run_dir, (rank, world, dev), checkpoint)
    start_epoch = run.state.epoch
    stop = recipe.epochs if stop_after_epoch is None else min(recipe.epochs, stop_after_epoch)
    last_test = last_test_row(run.state.log)
    with progress(quiet=quiet or rank != 0) as bar:
        for epoch in range(start_epoch, stop):
            last_test = _epoch(run, epoch, bar, plots=epoch + 1 == stop, quiet=quiet) or last_test
    result.epochs_done = max(start_epoch, stop)
    result.test_top1 = (_read_json_record(run_dir) if rank == 0 else {}).get("test_top1")
    result.last_test, result.model = last_test, run.state.model
    return result


def _start(
    recipe: Recipe,
    loss_fn: FamilyLoss,
    run_dir: Path,
    where: tuple[int, int, torch.device],
    checkpoint: dict[str, Any] | None,
) -> _Run:
    """Data, loader, model, optimizer and scheduler of a run (from `checkpoint` when resuming).

    where: (rank, world size, device). The order of the steps is the order of the random draws.
    """
    rank, world, dev = where
    data = _load_data(recipe)
    train_set = ImageRows(data.train_images, data.train_indices, data.train_labels, train_transform(recipe))
    sampler = torch.utils.data.DistributedSampler(
        train_set, num_replicas=world, rank=rank, shuffle=True, seed=recipe.seed
    )
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=recipe.batch_size,
        sampler=sampler,
        num_workers=recipe.num_workers,
        # Dropping the last partial batch keeps batch norm away from batches of one.
        drop_last=len(sampler) > recipe.batch_size,
        pin_memory=dev.type == "cuda",
        # Fresh workers every epoch take their seeds from that epoch's seeding: exact replay on resume.
        persistent_workers=False,
    )
    track_eval = eval_transform(recipe)
    model = create_model(recipe, len(data.classes))
    module = FeaturesAndLogits(model).to(dev)
    if dev.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(recipe, model, world)
    scheduler = build_scheduler(recipe, optimizer, len(loader))
    state = RunState(model, optimizer, scheduler, TrackingLog.empty())
    if checkpoint is not None:
        state.restore(checkpoint)
    else:
        scheduler.step_update(0)  # the warm-up learning rate from the first step
    ddp = (
        nn.parallel.DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None)
        if world > 1
        else module
    )
    title = f"{recipe.name} {loss_fn.family}={loss_fn.value:g}"
    return _Run(recipe, loss_fn, run_dir, rank, world, dev, data, sampler, loader, track_eval, module, ddp, state, title)


def _epoch(run: _Run, epoch: int, bar: Any, *, plots: bool, quiet: bool) -> dict[str, Any]:
    """Train epoch `epoch` (0-based), measure, save (rank 0); returns this epoch's test tracking row or {}."""
    recipe, state = run.recipe, run.state
    _seed(recipe.seed, epoch, run.rank)
    run.sampler.set_epoch(epoch)
    run.ddp.train()
    task = bar.add_task(f"{run.title} epoch {epoch + 1}/{recipe.epochs}", total=len(run.loader), rate="")
    started = time.perf_counter()
    sums, seen = _steps(run, bar, task, started)
    state.scheduler.step(epoch + 1)
    seconds = time.perf_counter() - started
    counts = torch.tensor([float(seen)], dtype=torch.float64, device=run.device)
    if run.world > 1:
        dist.all_reduce(sums)
        dist.all_reduce(counts)
        # DDP broadcasts buffers before each forward, so after the last step the ranks' batch-norm
        # statistics differ by one update: make rank 0's the common ones.
        for buffer in run.module.buffers():
            dist.broadcast(buffer, 0)
    n = max(float(counts[0]), 1.0)
    loss_sum, ce_sum, dist_sum, correct = sums.tolist()
    state.epoch = done = epoch + 1
    state.log.history.append(
        {
            "epoch": done,
            "lr": float(state.optimizer.param_groups[0]["lr"]),
            "loss": loss_sum / n,
            "cross_entropy": ce_sum / n,
            "cosine_distance": dist_sum / n,
            "train_top1": correct / n,
            "images": int(n),
            "seconds": seconds,
        }
    )
    last_test, extra = _measure(run, done)
    if run.rank == 0:
        # Figures once per call (they cost seconds); the tables every epoch.
        _save_epoch(run.run_dir, state, recipe, run.loss_fn, run.world, extra, run.data.classes, run.title, plots=plots)
        if not quiet:
            _print_epoch(run.title, state.log, done, recipe.epochs)
    if run.world > 1:
        dist.barrier()
    return last_test


def _steps(run: _Run, bar: Any, task: Any, started: float) -> tuple[torch.Tensor, int]:
    """One pass over the loader: ((4,) float64 batch-weighted sums of loss, cross-entropy, cosine distance
    and the number correct, images seen by this process)."""
    dev, state = run.device, run.state
    sums = torch.zeros(4, dtype=torch.float64, device=dev)
    seen = 0
    for x, y in run.loader:
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            features, logits = run.ddp(x)
        parts = run.loss_fn(logits, features, y)
        state.optimizer.zero_grad(set_to_none=True)
        parts.loss.backward()
        state.optimizer.step()
        state.num_updates += 1
        state.scheduler.step_update(num_updates=state.num_updates)
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
        bar.update(task, advance=1, rate=f"{seen * run.world / max(elapsed, 1e-9):.0f} img/s")
    return sums, seen


def _measure(run: _Run, done: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Collapse tracking when due, and the final test accuracy after the last epoch.

    Returns (the test split's new tracking row or {}, the record's extra fields: test_top1, ... or {}).
    """
    recipe, last_test, extra = run.recipe, {}, {}
    if done % recipe.track_every == 0 or done == recipe.epochs:
        for split, dataset in run.track_sets().items():
            stats, scores = _evaluate(run.module, dataset, recipe, run.device, run.rank, run.world)
            if run.rank == 0:
                row = run.state.log.add_measurement(done, split, stats, scores, recipe.spectrum_top)
                if split == "test":
                    last_test = row
    if done == recipe.epochs:
        data = run.data
        test_set = ImageRows(data.test_images, data.final_test, data.test_labels, run.eval_transform)
        _, test = _evaluate(run.module, test_set, recipe, run.device, run.rank, run.world)
        extra = {"test_top1": test["top1"], "test_loss": test["loss"], "test_images": len(test_set)}
    return last_test, extra


def _print_epoch(title: str, log: TrackingLog, done: int, epochs: int) -> None:
    h = log.history[-1]
    line = f"{title} epoch {done}/{epochs}: loss {h['loss']:.4f}  train top-1 {h['train_top1']:.3f}  {h['seconds']:.1f}s"
    test = [r for r in log.tracking if r["epoch"] == done and r["split"] == "test"]
    if test:
        r = test[0]
        line += f"  | test top-1 {r['top1']:.3f}  VCI {r['vci']:.3f}  cos-dist {r['cosine_distance']:.3f}"
    err_console().print(line, highlight=False)


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
    if (trained_now or not figure.is_file()) and is_main_process():
        plot_family([r.run_dir for r in results], [run_name(family, r.value) for r in results], figure)
    return results


def print_results(results: list[TrainResult]) -> None:
    """A rich table of trained family members (rank 0 only under torchrun)."""
    if not is_main_process():
        return
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
