"""The fine-tuning check: full fine-tuning of a backbone with a new head, its test accuracy as ground truth.

One cell = (model, target data set, FinetuneOptions). The train split is split once, class-stratified and
seeded, into fit / validation rows; for each learning rate of the grid the whole network (backbone + a new
linear head) is trained for a fixed number of epochs with timm's optimizer (``create_optimizer_v2``) and
scheduler (``create_scheduler_v2``, cosine, stepped every update) on the model's own train transform with
light augmentation (``timm.data.create_transform(is_training=True)``: a mild random-resized crop, no flip,
no colour jitter: flips change the meaning of traffic signs and digits). After every epoch the validation
rows are scored; the (learning rate, epoch) with the best validation metric (ties: lower validation
cross-entropy, then the earlier point) is the selected checkpoint, and its accuracy on the test split is
the cell's result ("best-val checkpoint": no refit, so the test rows are touched exactly once).

The metric follows the data set's rule: top-1, or mean per-class accuracy (Flowers-102, Pets, ...).

Devices: CPU (fp32), CUDA (bf16 autocast), torchrun DDP (DistributedSampler; every rank scores the small
validation and test sets itself; batch-norm buffers are taken from rank 0 after every epoch). Each cell
writes one JSON result file atomically (``zoo_rank.results``), named from a digest of every setting that
changes the number, so an interrupted benchmark resumes at the next unfinished cell.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm.optim
import timm.scheduler
import torch
import torch.distributed as dist
from torch import nn

from zoo_rank._console import err_console, progress
from zoo_rank._device import pick_device, resolve_precision
from zoo_rank._validation import ZooRankError
from zoo_rank.extract import process_group
from zoo_rank.finetune.data import CellData, cell_data
from zoo_rank.finetune.head import probe_head
from zoo_rank.finetune.options import KIND, METRICS, FinetuneOptions
from zoo_rank.finetune.record import cell_key, cell_path
from zoo_rank.models import Backbone, create_backbone
from zoo_rank.probe import accuracies
from zoo_rank.results import read_result, write_result


@dataclass(frozen=True)
class _Runtime:
    """Where a cell runs: the device, bf16 autocast or not, this process's rank and the world size."""

    device: torch.device
    bf16: bool
    rank: int
    world: int


@dataclass
class _Best:
    """The selected checkpoint so far: its ranking (val metric, -val loss, -step), lr, epoch and weights."""

    rank_key: tuple[float, float, int]
    lr: float
    epoch: int
    state: dict


def finetune(
    model: str,
    train_images: Any,
    test_images: Any,
    *,
    options: FinetuneOptions = FinetuneOptions(),
    metric: str | None = None,
    pretrained: bool = True,
    dataset: str | None = None,
    results_dir: str | Path = "results",
    device: str = "auto",
    skip_existing: bool = True,
    quiet: bool = False,
) -> dict[str, Any]:
    """Fine-tune `model` (a create_backbone spec; pretrained=False: random init, a control) on train_images
    (an ImageSet) and test it on test_images; returns the cell's result record (also written to a file).

    metric: "top1" or "mean_per_class" (None: the data set's own rule, ImageSet.metric). dataset: the
    name in the result file (None: the ImageSet's name). The record holds
    `accuracy` (by that metric), `top1`, `mean_per_class`, the chosen learning rate and epoch, every
    learning rate's validation curve, the sizes, the seconds spent and the key.
    """
    dataset = dataset or train_images.name
    metric = metric or getattr(train_images, "metric", "top1")
    if metric not in METRICS:
        raise ZooRankError(f"metric {metric!r}; expected top1 or mean_per_class.")
    dev = pick_device(device, allow_mps=False)
    bf16 = resolve_precision(options.precision, dev) == "bf16" and dev.type == "cuda"
    rt = _Runtime(dev, bf16, *process_group(dev))
    backbone = create_backbone(model, pretrained=pretrained, seed=options.seed)
    spec = model if pretrained else f"random-init:{model}"
    key = cell_key(spec, backbone.weights_id, train_images.fingerprint, test_images.fingerprint, metric,
                   options, dev.type, "bf16" if bf16 else "fp32", rt.world)  # fmt: skip
    path = cell_path(results_dir, spec, dataset, key)
    if skip_existing and path.is_file():
        return read_result(path)

    started, cpu_started = time.perf_counter(), time.process_time()
    cell = cell_data(backbone, train_images, test_images, options, dataset)
    backbone.model.to(dev)
    probe_l2 = _init_head(backbone, cell, rt, options)
    label = f"fine-tune {spec} on {dataset}"
    best, curves = _train_grid(backbone.model, cell, rt, options, metric, label, quiet=quiet or rt.rank != 0)
    backbone.model.load_state_dict(best.state)
    test = _evaluate(backbone.model, _loader(cell.test, 2 * options.batch_size), rt, cell.n_classes)
    record = {
        "kind": KIND,
        "model": spec,
        "dataset": dataset,
        "metric": metric,
        "accuracy": test[metric],
        "top1": test["top1"],
        "mean_per_class": test["mean_per_class"],
        "test_loss": test["loss"],
        "lr": best.lr,
        "epoch": best.epoch,
        "val": best.rank_key[0],
        "n_fit": len(cell.fit),
        "n_val": len(cell.val),
        "n_test": len(cell.test),
        "input_size": cell.side,
        "probe_l2": probe_l2,
        "seconds": round(time.perf_counter() - started, 2),
        # CPU time of this process (all its threads): on a loaded machine the honest measure of the work.
        "cpu_seconds": round(time.process_time() - cpu_started, 2),
        "curves": curves,
        "key": key,
    }
    if rt.rank == 0:
        write_result(path, record)
        if not quiet:
            _report(record)
    return record


def _init_head(backbone: Backbone, cell: CellData, rt: _Runtime, options: FinetuneOptions) -> float | None:
    """The new head: LP-FT's probe (returns its L2) or a seeded random layer (returns None)."""
    if options.head_init == "probe":
        return probe_head(backbone, cell.fit_eval, rt.device, rt.bf16, cell.n_classes, options)
    torch.manual_seed(options.seed)  # one new head, the same for every learning rate
    backbone.model.reset_classifier(cell.n_classes)
    return None


def _train_grid(net: nn.Module, cell: CellData, rt: _Runtime, options: FinetuneOptions, metric: str, label: str,
                *, quiet: bool) -> tuple[_Best, list[dict[str, Any]]]:  # fmt: skip
    """Train from the same start for each learning rate, scoring the validation rows after every epoch;
    returns the best (lr, epoch) checkpoint and every learning rate's validation curve."""
    sampler = torch.utils.data.DistributedSampler(
        cell.fit, num_replicas=rt.world, rank=rt.rank, seed=options.seed
    )
    # Dropping a last partial batch keeps batch norm away from batches of one or two.
    loader = torch.utils.data.DataLoader(
        cell.fit, batch_size=options.batch_size, sampler=sampler, drop_last=len(sampler) > options.batch_size
    )
    val_loader = _loader(cell.val, 2 * options.batch_size)
    initial = copy.deepcopy(net.state_dict())
    curves: list[dict[str, Any]] = []
    best: _Best | None = None
    with progress(quiet=quiet, unit="step") as bar:
        task = bar.add_task(label, total=len(options.lrs) * options.epochs * len(loader), rate="")
        for i, lr in enumerate(options.lrs):
            net.load_state_dict(initial)
            module = _parallel(net, rt)
            step = _optimizer_and_schedule(net, options, lr, len(loader))
            curve = []
            for epoch in range(options.epochs):
                sampler.set_epoch(epoch)

                def advance(rate: float, lr: float = lr, epoch: int = epoch) -> None:
                    bar.update(task, advance=1, rate=f"lr {lr:g} ep {epoch + 1} {rate:.0f} img/s")

                _train_epoch(net, module, loader, step, rt, options, epoch, advance)
                val = _evaluate(net, val_loader, rt, cell.n_classes)
                curve.append({"epoch": epoch + 1, "val": val[metric], "val_loss": val["loss"]})
                rank_key = (val[metric], -val["loss"], -(i * options.epochs + epoch))
                if best is None or rank_key > best.rank_key:
                    best = _Best(rank_key, lr, epoch + 1, copy.deepcopy(net.state_dict()))
            curves.append({"lr": lr, "curve": curve})
    assert best is not None  # options.lrs and options.epochs are never empty
    return best, curves


def _train_epoch(net: nn.Module, module: nn.Module, loader: Any, step: Callable[[torch.Tensor], None],
                 rt: _Runtime, options: FinetuneOptions, epoch: int, advance: Callable[[float], None]) -> None:  # fmt: skip
    """One pass over the fit rows; `module` is `net` or its DDP wrapper; advance(images per second) per step."""
    # Augmentation draws, the same for every lr: torch's generator and Python's `random`, which timm's
    # RandomResizedCrop draws from (unseeded, a rerun from an empty cache gave other numbers).
    torch.manual_seed(options.seed * 1000 + epoch)
    random.seed(options.seed * 1000 + epoch)
    net.train()
    if options.bn_frozen_stats:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    t0, seen = time.perf_counter(), 0
    for x, y in loader:
        x, y = x.to(rt.device), y.to(rt.device)
        with torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=rt.bf16):
            loss = nn.functional.cross_entropy(module(x).float(), y)
        step(loss)
        seen += len(y)
        advance(seen / (time.perf_counter() - t0))
    if rt.world > 1:
        for buffer in net.buffers():
            dist.broadcast(buffer, 0)


def _parallel(net: nn.Module, rt: _Runtime) -> nn.Module:
    """`net` wrapped in DistributedDataParallel under torchrun, else `net` itself."""
    if rt.world == 1:
        return net
    return nn.parallel.DistributedDataParallel(
        net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
    )


def _loader(dataset: Any, batch_size: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size)


def _evaluate(model: nn.Module, loader: Any, rt: _Runtime, n_classes: int) -> dict[str, float]:
    """top1, mean_per_class, mean cross-entropy `loss` and the number `n` of rows of `loader`, eval mode."""
    model.eval()
    preds, targets, loss = [], [], 0.0
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(rt.device), y.to(rt.device)
            with torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=rt.bf16):
                logits = model(x).float()
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            preds.append(logits.argmax(1).cpu().numpy())
            targets.append(y.cpu().numpy())
    pred, target = np.concatenate(preds), np.concatenate(targets)
    top1, mpc = accuracies(pred, target, n_classes)
    return {"top1": top1, "mean_per_class": mpc, "loss": loss / len(target), "n": len(target)}


def _optimizer_and_schedule(net: nn.Module, options: FinetuneOptions, lr: float, steps_per_epoch: int):
    """timm's optimizer and per-update cosine schedule; returns step(loss) doing one update."""
    optimizer = timm.optim.create_optimizer_v2(
        net, opt=options.opt, lr=lr, weight_decay=options.weight_decay, momentum=options.momentum
    )
    scheduler, _ = timm.scheduler.create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=options.epochs,
        warmup_epochs=options.warmup_epochs,
        warmup_lr=lr / 100,
        min_lr=0.0,
        step_on_epochs=False,
        updates_per_epoch=max(1, steps_per_epoch),
    )
    scheduler.step_update(0)
    updates = 0

    def step(loss: torch.Tensor) -> None:
        nonlocal updates
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if options.clip_grad is not None:
            nn.utils.clip_grad_norm_(net.parameters(), options.clip_grad)
        optimizer.step()
        updates += 1
        scheduler.step_update(num_updates=updates)

    return step


def _report(record: dict[str, Any]) -> None:
    err_console().print(
        f"{record['model']} fine-tuned on {record['dataset']}: {record['metric']} {record['accuracy']:.3f} "
        f"(lr {record['lr']:g}, epoch {record['epoch']}, val {record['val']:.3f}) in {record['seconds']:.0f} s",
        highlight=False,
        soft_wrap=True,
    )
