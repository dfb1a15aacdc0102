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
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from zoo_rank._console import err_console, progress
from zoo_rank._device import pick_device, resolve_precision
from zoo_rank._validation import ZooRankError
from zoo_rank.data import ImageRows as _ImageRows
from zoo_rank.data import balanced_indices
from zoo_rank.extract import _process_group
from zoo_rank.models import Backbone, RGBTransform, create_backbone
from zoo_rank.probe import accuracies, linear_probe
from zoo_rank.results import read_result, result_path, write_result

KIND = "finetune"
SCALE_FLOOR = 0.1
RESULT_FORMAT = 3  # 2: the LP-FT head never sees the validation rows; 3: floored feature scales, clipping


@dataclass(frozen=True)
class FinetuneOptions:
    """Every setting of the fine-tuning protocol. All of them go into the result file's key.

    The defaults are the CPU budget of the benchmark (few epochs, reduced input size, a capped number of
    train images per class); ``FULL`` is the usual GPU protocol.
    """

    # 3 epochs x 2 learning rates: lite0 trains at ~9 images per CPU-second at 112 px (measured on a loaded
    # machine), so this keeps the benchmark's fine-tuning to roughly an hour of 2 CPU cores.
    epochs: int = 3
    lrs: tuple[float, ...] = (1e-2, 1e-3)  # peak learning rates tried; picked on the validation rows
    opt: str = "momentum"  # timm optimizer name: SGD with momentum 0.9
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: int = 0
    batch_size: int = 16  # per process
    # "probe": LP-FT (Kumar et al., ICLR 2022), the new head starts from a logistic probe on the frozen
    # features of the fit rows (L2 chosen on the validation rows): with a few hundred images and a few
    # epochs a randomly started head gets ~12 updates and stays near chance (lite0 on food101-10: 0.17
    # where its probe gets 0.71), which would measure the budget, not the backbone. "random": a plain new head.
    head_init: str = "probe"
    # Batch norm keeps its pretrained running statistics while training (its scale and shift still learn):
    # with batches of 16 small images, train-mode statistics replaced the ImageNet ones within an epoch and
    # the LP-FT head no longer fitted its features (MobileNetV3-Small on sign-digits: validation 0.00-0.05
    # after one epoch at lr 1e-3, where the frozen-feature probe gets 0.80).
    bn_frozen_stats: bool = True
    clip_grad: float | None = 1.0  # global gradient-norm clip: the first steps on a fitted head were unstable
    img_size: int | None = 112  # cap on the input side (None: the model's own pretrained size)
    crop_scale: tuple[float, float] = (0.6, 1.0)  # RandomResizedCrop area range: light augmentation
    val_fraction: float = 0.2  # of each class's train rows (at least one row of every class with >= 2)
    n_per_class: int | None = 16  # train rows per class, class-balanced and seeded; None: all
    test_per_class: int | None = 30  # test rows per class; None: all
    seed: int = 0
    precision: str = "auto"  # CUDA: bf16 autocast; CPU: fp32 (the project's training loop does the same)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or not self.lrs or min(self.lrs) <= 0:
            raise ZooRankError(
                f"fine-tuning needs epochs >= 1, batch_size >= 2 and positive learning rates; got epochs="
                f"{self.epochs}, batch_size={self.batch_size}, lrs={self.lrs}."
            )
        if self.head_init not in ("probe", "random"):
            raise ZooRankError(f"head_init={self.head_init!r}; expected probe (LP-FT) or random.")
        if not 0 < self.val_fraction < 1:
            raise ZooRankError(f"val_fraction={self.val_fraction}; expected a fraction in (0, 1), e.g. 0.2.")

    def replace(self, **changes: Any) -> FinetuneOptions:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


# The usual GPU protocol: every image, the model's own resolution, more epochs, a larger learning-rate grid.
FULL = FinetuneOptions(
    epochs=20,
    lrs=(3e-2, 1e-2, 3e-3, 1e-3),
    warmup_epochs=1,
    batch_size=64,
    head_init="random",
    bn_frozen_stats=False,
    clip_grad=None,
    img_size=None,
    n_per_class=None,
    test_per_class=None,
)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit positions, validation positions) into `labels` (N,): per class ceil(fraction * n_k) rows to
    validation (at least one, none for a class with one row), drawn with PCG64 from SeedSequence([seed, k])."""
    fit, val = [], []
    for k in np.unique(labels):
        rows = np.flatnonzero(labels == k)
        order = rows[np.argsort(np.random.PCG64(np.random.SeedSequence([seed, int(k)])).random_raw(len(rows)))]
        n_val = 0 if len(rows) < 2 else max(1, int(np.ceil(val_fraction * len(rows))))
        n_val = min(n_val, len(rows) - 1)
        val.append(order[:n_val])
        fit.append(order[n_val:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(val))


def transforms(backbone: Backbone, options: FinetuneOptions) -> tuple[Any, Any, dict[str, Any]]:
    """(train transform, eval transform, data config): the model's own preprocessing, its input side capped
    at options.img_size, with light augmentation for training (timm's create_transform)."""
    import timm.data

    cfg = dict(backbone.data_config)
    side = int(cfg["input_size"][-1])
    if options.img_size is not None and options.img_size < side:
        cfg["input_size"] = (3, options.img_size, options.img_size)
    common = {k: cfg[k] for k in ("input_size", "interpolation", "mean", "std")}
    train = timm.data.create_transform(
        **common, is_training=True, scale=options.crop_scale, hflip=0.0, color_jitter=None
    )
    evaluate = timm.data.create_transform(**cfg, is_training=False)
    return RGBTransform(train), RGBTransform(evaluate), cfg


def cell_key(model: str, weights_id: str, train_fp: str, test_fp: str, metric: str, options: FinetuneOptions,
             device_type: str, precision: str, world: int) -> dict[str, Any]:  # fmt: skip
    """Every input that changes a cell's number (the weights by digest, the data by fingerprint)."""
    return {
        "format": RESULT_FORMAT,
        "model": model,
        "weights": weights_id,
        "train": train_fp,
        "test": test_fp,
        "metric": metric,
        "options": options.to_dict(),
        "device": device_type,
        "precision": precision,
        "world_size": world,
    }


def cell_path(results_dir: str | Path, model: str, dataset: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return result_path(results_dir, KIND, model, f"{dataset}__{digest}")


def _decode(images: Any, rows: np.ndarray, side: int) -> list:
    """Decode the rows once per cell (not once per epoch and learning rate), shrunk so that the shorter side
    is at most 2 x the input side: the transforms then resample far fewer pixels of large photos."""
    out = []
    for r in rows:
        im = images.dataset[int(r)]["image"].convert("RGB")
        if min(im.size) > 2 * side:
            scale = 2 * side / min(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), 3)
        out.append(im)
    return out


class _Decoded:
    """Already-decoded images in the shape of an ImageSet (data.ImageRows reads `.dataset[i]["image"]`)."""

    def __init__(self, pil_images: list) -> None:
        self.dataset = [{"image": im} for im in pil_images]


def _evaluate(model: nn.Module, loader: Any, device: torch.device, bf16: bool, n_classes: int) -> dict[str, float]:
    model.eval()
    preds, targets, loss = [], [], 0.0
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x).float()
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            preds.append(logits.argmax(1).cpu().numpy())
            targets.append(y.cpu().numpy())
    pred, target = np.concatenate(preds), np.concatenate(targets)
    top1, mpc = accuracies(pred, target, n_classes)
    return {"top1": top1, "mean_per_class": mpc, "loss": loss / len(target), "n": len(target)}


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
    if metric not in ("top1", "mean_per_class"):
        raise ZooRankError(f"metric {metric!r}; expected top1 or mean_per_class.")
    dev = pick_device(device, allow_mps=False)
    bf16 = resolve_precision(options.precision, dev) == "bf16" and dev.type == "cuda"
    rank, world = _process_group(dev)
    backbone = create_backbone(model, pretrained=pretrained, seed=options.seed)
    spec = model if pretrained else f"random-init:{model}"
    key = cell_key(spec, backbone.weights_id, train_images.fingerprint, test_images.fingerprint, metric,
                   options, dev.type, "bf16" if bf16 else "fp32", world)  # fmt: skip
    path = cell_path(results_dir, spec, dataset, key)
    if skip_existing and path.is_file():
        return read_result(path)

    started, cpu_started = time.perf_counter(), time.process_time()
    train_labels, test_labels = train_images.labels, test_images.labels
    train_rows = np.arange(len(train_labels))
    if options.n_per_class is not None:
        train_rows, _ = balanced_indices(train_labels, options.n_per_class, options.seed)
    test_rows = np.arange(len(test_labels))
    if options.test_per_class is not None:
        test_rows, _ = balanced_indices(test_labels, options.test_per_class, options.seed)
    fit_pos, val_pos = stratified_split(train_labels[train_rows], options.val_fraction, options.seed)
    if len(val_pos) == 0:
        raise ZooRankError(
            f"{dataset}: no class has 2 train images, so no validation rows to pick the learning "
            "rate on; raise n_per_class or use a larger train split."
        )
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    train_tf, eval_tf, cfg = transforms(backbone, options)
    side = int(cfg["input_size"][-1])
    fit_imgs = _Decoded(_decode(train_images, train_rows[fit_pos], side))
    val_imgs = _Decoded(_decode(train_images, train_rows[val_pos], side))
    test_imgs = _Decoded(_decode(test_images, test_rows, side))
    fit_set = _ImageRows(fit_imgs, np.arange(len(fit_pos)), train_labels[train_rows[fit_pos]], train_tf)
    val_set = _ImageRows(val_imgs, np.arange(len(val_pos)), train_labels[train_rows[val_pos]], eval_tf)
    test_set = _ImageRows(test_imgs, np.arange(len(test_rows)), test_labels[test_rows], eval_tf)
    sampler = torch.utils.data.DistributedSampler(fit_set, num_replicas=world, rank=rank, seed=options.seed)
    # Dropping a last partial batch keeps batch norm away from batches of one or two.
    loader = torch.utils.data.DataLoader(
        fit_set, batch_size=options.batch_size, sampler=sampler, drop_last=len(sampler) > options.batch_size
    )
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=2 * options.batch_size)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=2 * options.batch_size)

    net = backbone.model
    net.to(dev)
    probe_l2 = None
    if options.head_init == "probe":
        fit_eval = _ImageRows(fit_imgs, np.arange(len(fit_pos)), train_labels[train_rows[fit_pos]], eval_tf)
        probe_l2 = _probe_head(backbone, fit_eval, dev, bf16, n_classes, options)
    else:
        torch.manual_seed(options.seed)  # one new head, the same for every learning rate
        net.reset_classifier(n_classes)
    initial = copy.deepcopy(net.state_dict())
    curves: list[dict[str, Any]] = []
    best: tuple[tuple[float, float, int], float, int, dict] | None = None
    total = len(options.lrs) * options.epochs * len(loader)
    with progress(quiet=quiet or rank != 0, unit="step") as bar:
        task = bar.add_task(f"fine-tune {spec} on {dataset}", total=total, rate="")
        for i, lr in enumerate(options.lrs):
            net.load_state_dict(initial)
            module = (
                nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
                if world > 1
                else net
            )
            step = _optimizer_and_schedule(net, options, lr, len(loader))
            curve = []
            for epoch in range(options.epochs):
                sampler.set_epoch(epoch)
                torch.manual_seed(options.seed * 1000 + epoch)  # augmentation draws, the same for every lr
                net.train()
                if options.bn_frozen_stats:
                    for m in net.modules():
                        if isinstance(m, nn.modules.batchnorm._BatchNorm):
                            m.eval()
                t0, seen = time.perf_counter(), 0
                for x, y in loader:
                    x, y = x.to(dev), y.to(dev)
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                        loss = nn.functional.cross_entropy(module(x).float(), y)
                    step(loss)
                    seen += len(y)
                    bar.update(task, advance=1, rate=f"lr {lr:g} ep {epoch + 1} {seen / (time.perf_counter() - t0):.0f} img/s")
                if world > 1:
                    for buffer in net.buffers():
                        dist.broadcast(buffer, 0)
                val = _evaluate(net, val_loader, dev, bf16, n_classes)
                curve.append({"epoch": epoch + 1, "val": val[metric], "val_loss": val["loss"]})
                rank_key = (val[metric], -val["loss"], -(i * options.epochs + epoch))
                if best is None or rank_key > best[0]:
                    best = (rank_key, lr, epoch + 1, copy.deepcopy(net.state_dict()))
            curves.append({"lr": lr, "curve": curve})
    assert best is not None
    net.load_state_dict(best[3])
    test = _evaluate(net, test_loader, dev, bf16, n_classes)
    record = {
        "kind": KIND,
        "model": spec,
        "dataset": dataset,
        "metric": metric,
        "accuracy": test[metric],
        "top1": test["top1"],
        "mean_per_class": test["mean_per_class"],
        "test_loss": test["loss"],
        "lr": best[1],
        "epoch": best[2],
        "val": best[0][0],
        "n_fit": len(fit_pos),
        "n_val": len(val_pos),
        "n_test": len(test_rows),
        "input_size": side,
        "probe_l2": probe_l2,
        "seconds": round(time.perf_counter() - started, 2),
        # CPU time of this process (all its threads): on a loaded machine the honest measure of the work.
        "cpu_seconds": round(time.process_time() - cpu_started, 2),
        "curves": curves,
        "key": key,
    }
    if rank == 0:
        write_result(path, record)
    if not quiet and rank == 0:
        err_console().print(
            f"{spec} fine-tuned on {dataset}: {metric} {test[metric]:.3f} (lr {best[1]:g}, epoch "
            f"{best[2]}, val {best[0][0]:.3f}) in {record['seconds']:.0f} s",
            highlight=False,
            soft_wrap=True,
        )
    return record


def _features(backbone: Backbone, loader: Any, device: torch.device, bf16: bool) -> tuple[np.ndarray, np.ndarray]:
    backbone.model.eval()
    xs, ys = [], []
    with torch.inference_mode():
        for x, y in loader:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                xs.append(backbone.features(x.to(device)).float().cpu().numpy())
            ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def _probe_head(backbone: Backbone, fit_set: Any, device: torch.device, bf16: bool, n_classes: int,
                options: FinetuneOptions) -> float:  # fmt: skip
    """Replace the classifier by a linear layer holding a logistic probe fitted on the frozen features
    (LP-FT's first stage), fitted on the fit rows only; returns the probe's L2 strength. The probe acts on standardised features
    z = (h - m) / s with z @ C + c, so the layer on raw h gets W = (C / s[:, None]).T, b = c - (m / s) @ C
    (s floored at SCALE_FLOOR x its median);
    a class absent from the fit rows gets a zero row."""
    fit_loader = torch.utils.data.DataLoader(fit_set, batch_size=2 * options.batch_size)
    fit_x, fit_y = _features(backbone, fit_loader, device, bf16)
    # The probe picks its L2 on its own split of the fit rows and refits on all of them: the validation
    # rows that later pick the learning rate and epoch stay unseen (given to linear_probe as its
    # validation set, they would be refit on, and score ~0.97 where the test split gets ~0.45).
    # 25 L2 values, not the probe check's 97: a starting head, picked in a quarter of the time.
    res = linear_probe(fit_x, fit_y, fit_x, fit_y, l2_grid=np.logspace(-6, 6, 25), seed=options.seed, device="cpu")
    # A feature that barely varies gets weight C/s with a tiny s: its huge weights sent huge gradients into
    # the backbone and the first steps blew it up (validation loss ~2e3). Spreads below a tenth of the median
    # are floored there, which damps only those features' votes.
    scale = np.maximum(res.feature_scale, SCALE_FLOOR * np.median(res.feature_scale))
    coef = res.coef / scale[:, None]  # (p, K')
    bias = res.intercept - (res.feature_mean / scale) @ res.coef
    weight = np.zeros((n_classes, coef.shape[0]))
    full_bias = np.zeros(n_classes)
    weight[res.classes.astype(np.int64)] = coef.T
    full_bias[res.classes.astype(np.int64)] = bias
    backbone.model.reset_classifier(n_classes)
    head = backbone.model.get_classifier()
    if not isinstance(head, nn.Linear):
        raise ZooRankError(f"{backbone.name}: its classifier is {type(head).__name__}, not one linear layer; use head_init='random'.")
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(full_bias, dtype=head.bias.dtype))
    head.to(device)
    return float(res.l2)


def _optimizer_and_schedule(net: nn.Module, options: FinetuneOptions, lr: float, steps_per_epoch: int):
    """timm's optimizer and per-update cosine schedule; returns step(loss) doing one update."""
    import timm.optim
    import timm.scheduler

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


def as_check(record: dict[str, Any], dataset: str) -> dict[str, Any]:
    """A fine-tuning result in the shape of a board's probe check (``leaderboard.RunResult.probes``)."""
    return {
        "dataset": f"{dataset} (fine-tuned)",
        "method": "finetune",
        "top1": float(record["top1"]),
        "mean_per_class": float(record["mean_per_class"]),
        "lr": float(record["lr"]),
        "n_train": int(record["n_fit"] + record["n_val"]),
        "n_test": int(record["n_test"]),
    }
