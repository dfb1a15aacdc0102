"""What a run writes: the exported model (timm local-dir: config.json + model.safetensors, the recipe
and knob recorded in config.json["zoo_rank"]), resume.pt each epoch, and the checks on resuming.

Every file is replaced atomically: a reader (or a resumed run) sees the previous epoch's or this one's.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo_rank import __version__
from zoo_rank._console import warn
from zoo_rank._paths import atomic_path
from zoo_rank._validation import ZooRankError
from zoo_rank.train.inputs import data_config
from zoo_rank.train.losses import FamilyLoss
from zoo_rank.train.recipes import Recipe
from zoo_rank.train.tracking import TrackingLog

RESUME_FILE = "resume.pt"
_RESUME_FORMAT = 1


def run_name(family: str, value: float) -> str:
    """Folder name of one family member, e.g. "tau-0.1", "lambda-2.5"."""
    return f"{family}-{value:g}"


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

    tag = f"zoo_rank_{run_name(loss.family, loss.value)}"
    # safetensors stores contiguous tensors only; CUDA training keeps conv weights channels_last.
    model = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format)
    # Two files replace the previous epoch's, so each is renamed from a staging folder beside them (not
    # `atomic_path`, which renames one path): weights first, then the config that describes them.
    with tempfile.TemporaryDirectory(dir=run_dir, prefix=".export-") as staging:
        save_for_hf(
            model,
            staging,
            model_config={
                "pretrained_cfg": {"tag": tag, "origin_url": None, "license": None},
                "label_names": [str(c) for c in classes],
                "zoo_rank": record,
            },
            safe_serialization=True,
            data_config=data_config(recipe),
        )
        for name in ("model.safetensors", "config.json"):
            os.replace(Path(staging) / name, run_dir / name)


def _record(recipe: Recipe, loss: FamilyLoss, epoch: int, world: int, extra: dict[str, Any]) -> dict[str, Any]:
    import timm

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


def _read_json_record(run_dir: Path) -> dict[str, Any]:
    try:
        return read_record(run_dir)
    except ZooRankError:
        return {}


@dataclass
class RunState:
    """What changes while a run trains and resume.pt holds: weights, optimizer, schedule, logs, counters."""

    model: nn.Module  # the timm model (FeaturesAndLogits.model)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    log: TrackingLog
    epoch: int = 0  # epochs done
    num_updates: int = 0  # optimizer steps done

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a resume checkpoint (`_load_resume`)."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.epoch, self.num_updates = int(checkpoint["epoch"]), int(checkpoint["num_updates"])
        self.log = TrackingLog(**checkpoint["logs"])


def _save_epoch(
    run_dir: Path,
    state: RunState,
    recipe: Recipe,
    loss_fn: FamilyLoss,
    world: int,
    extra: dict[str, Any],
    classes: list[str],
    title: str,
    *,
    plots: bool,
) -> None:
    """After an epoch (state.epoch done): the exported model, resume.pt, the logs (figures with `plots`)."""
    record = _record(recipe, loss_fn, state.epoch, world, extra)
    _export(state.model, run_dir, recipe, loss_fn, record, classes)
    checkpoint = {
        "format": _RESUME_FORMAT,
        "family": loss_fn.family,
        "value": loss_fn.value,
        "recipe": recipe.to_dict(),
        "epoch": state.epoch,
        "num_updates": state.num_updates,
        "world_size": world,
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "logs": state.log.state(),
    }
    with atomic_path(run_dir / RESUME_FILE) as tmp:
        torch.save(checkpoint, tmp)
    state.log.write(run_dir, title, plots=plots)


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
        warn(
            f"resuming a {checkpoint['world_size']}-process run with {world} processes: the data order changes from here on."
        )
    return checkpoint
