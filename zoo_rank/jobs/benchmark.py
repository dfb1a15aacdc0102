"""The real-zoo benchmark: models x target sets -> every registry score, linear-probe and fine-tuned accuracy.

One cell = (model, target). Its train split is capped to `train_per_class` images per class (class-balanced,
seeded: the same rows for the scores, the probe and the fine-tuning) and its test split to
`test_per_class`. Features come from the project's feature cache (zoo_rank.extract); scores are every
metric of ``zoo_rank.metrics.METRICS`` at run time (a score that needs the source model's softmax outputs
gets them from the backbone's own pretraining head, N/A where there is none); the probe is the project's
logistic probe (train -> test); fine-tuning is ``zoo_rank.finetune``. Every cell is one JSON file under
``results_dir`` keyed on what changes its numbers: a rerun reads them and computes nothing again.
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo_rank import probe as probe_module
from zoo_rank._paths import json_digest
from zoo_rank.data import load_images, shared_data_dir
from zoo_rank.extract import extract_features
from zoo_rank.finetune import FinetuneOptions, finetune
from zoo_rank.jobs.grid import Cell, Grid, error_line
from zoo_rank.jobs.memo import source_digest
from zoo_rank.jobs.rank import CONTROL_PREFIX
from zoo_rank.metrics import METRICS, compute_metrics
from zoo_rank.models import create_backbone
from zoo_rank.options import ExtractOptions, ProbeOptions, Subset
from zoo_rank.probe import linear_probe
from zoo_rank.results import matching_record, result_path, write_result
from zoo_rank.train.zoo import trained_zoo

CELL_KIND = "zoo-cell"


@dataclass(frozen=True)
class Target:
    name: str
    spec: str  # zoo_rank.data spec (":train" / ":test" appended)
    metric: str  # "top1" or "mean_per_class" (the data set's rule)
    train_per_class: int | None
    test_per_class: int | None


def _shared(name: str) -> str:
    return str(shared_data_dir() / name)


# Caps keep the default benchmark near an hour on 2 CPU cores; the small sets are used whole.
TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("cifar10", "cifar10-local", "top1", 16, 30),
        Target(
            "flowers102", _shared("flowers102"), "mean_per_class", None, None
        ),  # 4 train, 2 test per class
        Target("food101-10", _shared("food101-10"), "top1", None, None),  # 15 / 10 per class
        Target("gtsrb", _shared("gtsrb"), "top1", 10, 15),
        Target("clothing10", _shared("clothing10"), "top1", None, None),  # 10 / 5 per class
        Target("sign-digits", _shared("sign-digits"), "top1", 16, None),  # 20 / 10 per class
        Target("fashion-mnist", "fashion-mnist", "top1", 16, 30),
        Target("digits", "digits", "top1", 16, 30),
    )
}
DEFAULT_TARGETS = ("cifar10", "flowers102", "food101-10", "gtsrb", "clothing10", "sign-digits")
TINY_TARGETS = ("sign-digits",)

IMAGENET_MODELS = (
    "pip:efficientnet-lite0",
    "pip:efficientnet-lite1",
    "pip:efficientnet-lite2",
    "local-dir:" + str(shared_data_dir().parent / "models" / "mobilenetv2_100"),
    "local-dir:" + str(shared_data_dir().parent / "models" / "tf_mobilenetv3_small_100"),
)
# One random-init control per ImageNet architecture family (the trained zoo brings its own).
IMAGENET_CONTROLS = (
    f"{CONTROL_PREFIX}tf_efficientnet_lite0",
    f"{CONTROL_PREFIX}mobilenetv2_100",
    f"{CONTROL_PREFIX}tf_mobilenetv3_small_100",
)


@dataclass(frozen=True)
class Model:
    name: str  # short name on the board
    spec: str  # create_backbone spec (without the control prefix)
    pretrained: bool
    control: bool
    group: str  # "imagenet" or "tiny-imagenet"


@dataclass(frozen=True)
class Settings:
    """What a benchmark run is: the zoo, the targets, the budgets and seeds."""

    targets: tuple[str, ...] = DEFAULT_TARGETS
    finetune: FinetuneOptions = field(default_factory=FinetuneOptions)
    spread_targets: tuple[str, ...] = ("food101-10", "clothing10")  # fine-tuned again with spread_seeds
    spread_seeds: tuple[int, ...] = (
        1,
    )  # 2 seeds x 2 targets x every model: ~26 degrees of freedom for the SD
    seed: int = 0
    tiny: bool = False
    imagenet_models: tuple[str, ...] = IMAGENET_MODELS
    imagenet_controls: tuple[str, ...] = IMAGENET_CONTROLS
    extra: dict = field(default_factory=dict)


def _short(spec: str) -> str:
    return spec.split(":", 1)[-1].rstrip("/").split("/")[-1]


def build_zoo(settings: Settings, zoo_dir: Path, *, device: str, quiet: bool) -> list[Model]:
    """The ImageNet models, their controls and the Tiny-ImageNet-trained members (trained on first use)."""
    zoo = [Model(_short(s), s, True, False, "imagenet") for s in settings.imagenet_models]
    for s in settings.imagenet_controls:
        arch = s.removeprefix(CONTROL_PREFIX)
        zoo.append(Model(f"{_short(arch)} (random)", arch, False, True, "imagenet"))
    for m in trained_zoo(zoo_dir, tiny=settings.tiny, device=device, quiet=quiet):
        zoo.append(Model(m.name, m.spec, True, m.control, "tiny-imagenet"))
    return zoo


def _wants_source_probs(info: Any) -> bool:
    """A score computed from the source head's softmax (LEEP, NCE): `needs == "source_probs"` in the
    registry, or a function whose first argument is named so."""
    if getattr(info, "needs", None) == "source_probs":
        return True
    first = next(iter(inspect.signature(info.fn).parameters), "")
    return first in ("source_probs", "probs")


def source_probs(backbone: Any, features: np.ndarray) -> np.ndarray | None:
    """softmax(features @ W.T + b) (N, Z) of the backbone's own pretraining head, or None without one."""
    head = backbone.classifier()
    if head is None or head[0].shape[0] < 2:
        return None
    w = head[0].float().cpu().numpy().astype(np.float64)
    b = np.zeros(w.shape[0]) if head[1] is None else head[1].float().cpu().numpy().astype(np.float64)
    logits = features.astype(np.float64) @ w.T + b
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def all_scores(backbone: Any, features: np.ndarray, labels: np.ndarray) -> tuple[dict[str, float], list[str]]:
    """Every registry metric on (features, labels), in registry order; NaN plus a note where one cannot be
    computed (no pretraining head for LEEP/NCE, a numerical failure): an N/A cell, not a failed benchmark."""
    notes: list[str] = []
    wants = {n: _wants_source_probs(info) for n, info in METRICS.items()}
    plain = [n for n, w in wants.items() if not w]
    scores: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # one pass: the registry shares ClassStats and eigendecompositions between metrics
            values = compute_metrics(features, labels, names=plain)
            scores.update(values)
            # Undefined here (plain VCI / H-score at N <= p + 1, constant features): an N/A cell with its reason.
            notes += [f"{n}: {error_line(reason, 150)}" for n, reason in values.reasons.items()]
        except Exception:
            for n in plain:
                try:
                    scores.update(compute_metrics(features, labels, names=[n]))
                except Exception as err:
                    scores[n] = math.nan
                    notes.append(f"{n}: {error_line(err, 150)}")
        probs = source_probs(backbone, features) if any(wants.values()) else None
        for n in (n for n, w in wants.items() if w):
            try:
                scores[n] = math.nan if probs is None else float(METRICS[n].fn(probs, labels))
                if probs is None:
                    notes.append(f"{n}: N/A (no pretraining head)")
            except Exception as err:
                scores[n] = math.nan
                notes.append(f"{n}: {error_line(err, 150)}")
    return {n: float(scores[n]) for n in METRICS}, notes


def _cell_key(model: Model, target: Target, settings: Settings, weights: str, fps: tuple[str, str]) -> dict:
    return {
        "model": model.spec, "pretrained": model.pretrained, "weights": weights, "target": target.name,
        "train_per_class": target.train_per_class, "test_per_class": target.test_per_class,
        "metric": target.metric, "seed": settings.seed, "data": fps, "metrics": sorted(METRICS),
        # the probe's accuracy is part of the cell: a solver that selects differently is another cell
        "probe_code": source_digest(probe_module),
    }  # fmt: skip


def run_cell(model: Model, target: Target, settings: Settings, results_dir: Path, *, device: str,
             quiet: bool) -> dict[str, Any]:  # fmt: skip
    """Scores + probe + fine-tuning (+ the seed repeats where asked) of one (model, target) cell."""
    train = load_images(f"{target.spec}:train")
    test = load_images(f"{target.spec}:test")
    backbone = create_backbone(model.spec, pretrained=model.pretrained, seed=settings.seed)
    key = _cell_key(model, target, settings, backbone.weights_id, (train.fingerprint, test.fingerprint))
    # json.dumps' default separators: the digest names the cell files already on disk.
    digest = json_digest(key, 12, separators=None)
    path = result_path(results_dir, CELL_KIND, model.name, f"{target.name}__{digest}")
    record = matching_record(path, key, field="key")  # a true match only: its stored key is this one
    if record is None:
        t0, cpu0 = time.perf_counter(), time.process_time()
        options = ExtractOptions(device=device, quiet=True)
        tr = extract_features(
            backbone, train, subset=Subset(target.train_per_class, settings.seed), options=options
        )
        te = extract_features(
            backbone, test, subset=Subset(target.test_per_class, settings.seed), options=options
        )
        t_extract = time.perf_counter() - t0
        scores, notes = all_scores(backbone, tr.features, tr.labels)
        t0 = time.perf_counter()
        probe = linear_probe(
            tr.features,
            tr.labels,
            te.features,
            te.labels,
            options=ProbeOptions(seed=settings.seed, device="cpu"),
        )
        record = {
            "kind": CELL_KIND, "model": model.name, "spec": model.spec, "control": model.control,
            "group": model.group, "target": target.name, "metric": target.metric, "scores": scores,
            "notes": notes, "feature_dim": int(tr.features.shape[1]), "n_train": len(tr.labels),
            "n_test": len(te.labels), "n_classes": len(np.unique(tr.labels)),
            "probe": probe.mean_per_class if target.metric == "mean_per_class" else probe.top1,
            "probe_l2": probe.l2, "seconds": {"extract": round(t_extract, 2), "probe": round(time.perf_counter() - t0, 2)},
            "cpu_seconds": round(time.process_time() - cpu0, 2),
            "key": key,
        }  # fmt: skip
        write_result(path, record)
    seeds = (settings.seed, *(settings.spread_seeds if target.name in settings.spread_targets else ()))
    options = settings.finetune.replace(
        n_per_class=target.train_per_class, test_per_class=target.test_per_class
    )
    runs = []
    for seed in seeds:
        ft = finetune(model.spec, train, test, options=options.replace(seed=seed), metric=target.metric,
                      pretrained=model.pretrained, dataset=target.name, results_dir=results_dir / "finetune",
                      device=device, quiet=quiet)  # fmt: skip
        runs.append({"seed": seed, "accuracy": ft["accuracy"], "lr": ft["lr"], "epoch": ft["epoch"],
                     "seconds": ft["seconds"], "cpu_seconds": ft.get("cpu_seconds")})  # fmt: skip
    return {**record, "finetune": runs[0]["accuracy"], "finetune_runs": runs}


def _failed_cell(cell: Cell, err: Exception) -> dict[str, Any]:
    return {"model": cell.model, "target": cell.dataset, "error": f"{type(err).__name__}: {err}"}


def run_grid(
    settings: Settings, out_dir: Path, *, device: str = "auto", quiet: bool = False
) -> tuple[list[Model], list[dict]]:
    """Every (model, target) cell, target-major; a failed cell is reported and kept as its error record."""
    zoo = build_zoo(settings, out_dir / "zoo", device=device, quiet=quiet)
    # The cell's key needs the built backbone's weights id: run_cell keys, finds and writes its own file.
    grid = Grid(CELL_KIND, out_dir / "cells")
    cells = [Cell(m.name, t.name, item=(m, t)) for t in (TARGETS[n] for n in settings.targets) for m in zoo]
    records = grid.run(
        cells,
        lambda c: run_cell(*c.item, settings, grid.results_dir, device=device, quiet=quiet),
        label="zoo benchmark",
        quiet=quiet,
        failed=_failed_cell,
        done=lambda c, r: f"{c.model} on {c.dataset}: probe {r['probe']:.3f}, fine-tuned {r['finetune']:.3f}",
        echo=True,
    )
    return zoo, records
