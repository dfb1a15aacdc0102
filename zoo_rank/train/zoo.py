"""The backbones zoo_rank trains itself for the benchmark: Tiny ImageNet (200 classes, ../shared/data).

Members differ in ways that matter for transfer: width, depth and training length (two checkpoints of one
run), plus one randomly initialised control of the family, exported with the same preprocessing. Every
member is a timm local-dir folder (``local-dir:PATH``), trained by ``zoo_rank.train.train`` with the
plain cross-entropy (tau = 1) and reused when present: the first benchmark run trains, later runs load.

    members = trained_zoo("~/.cache/zoo_rank/zoo")          # [ZooMember(name, spec, control, about)]
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from zoo_rank._paths import atomic_path, json_digest
from zoo_rank.data import shared_data_dir
from zoo_rank.train.inputs import data_config
from zoo_rank.train.loop import train
from zoo_rank.train.model import create_model
from zoo_rank.train.recipes import Recipe, cpu_scale_recipe

NARROW = {"channels": (32, 64, 128, 256), "stem_width": 16}
WIDE = {"channels": (64, 128, 256, 512), "stem_width": 32}
DEEP = {**NARROW, "layers": (2, 2, 2, 2)}  # resnet10t's basic blocks, twice as many: an 18-layer network


def tiny_imagenet_recipe(name: str, model_args: dict, epochs: int, *, n_per_class: int = 50,
                         test_per_class: int | None = None) -> Recipe:  # fmt: skip
    """A CPU-scale recipe on Tiny ImageNet: timm resnet10t variants at 32 px, crop-flip, SGD + cosine."""
    return cpu_scale_recipe(
        name,
        (
            f"resnet10t {model_args} on {n_per_class} Tiny ImageNet images per class ({200 * n_per_class} of "
            f"../shared/data/tiny-imagenet) at 32 px, crop-flip, SGD Nesterov, lr 0.4 x batch/256, {epochs} epochs."
        ),
        str(shared_data_dir() / "tiny-imagenet"),
        train_split="train",
        test_split="validation",
        n_per_class=n_per_class,
        model_args=model_args,
        epochs=epochs,
        track_every=epochs,
        track_train_per_class=5,
        track_test_per_class=5,
        spectrum_top=16,
        final_test_per_class=test_per_class,
    )


@dataclass(frozen=True)
class ZooMember:
    name: str
    spec: str  # local-dir:PATH
    control: bool
    about: str


# (recipe, epochs at which the run's weights are kept as members of their own)
def _plan(tiny: bool) -> list[tuple[Recipe, tuple[int, ...]]]:
    if tiny:  # the benchmark's --tiny: one short run, seconds on a CPU
        return [(tiny_imagenet_recipe("tin-narrow-tiny", NARROW, 1, n_per_class=4, test_per_class=2), (1,))]
    return [
        (tiny_imagenet_recipe("tin-narrow", NARROW, 8), (2, 8)),
        (tiny_imagenet_recipe("tin-wide", WIDE, 8), (8,)),
        (tiny_imagenet_recipe("tin-deep", DEEP, 8), (8,)),
    ]


def _folder(recipe: Recipe) -> str:
    """recipe name + digest of every recipe field: a changed recipe trains anew instead of reusing weights."""
    fields = {k: v for k, v in recipe.to_dict().items() if k not in ("train_data", "test_data")}  # paths: where, not what
    digest = json_digest(fields, 8, separators=None)  # json.dumps' default separators: existing folders
    return f"{recipe.name}-{digest}"


def _copy_weights(run_dir: Path, dest: Path) -> None:
    """The run's exported local-dir (config.json + model.safetensors) as its own folder, atomically."""
    with atomic_path(dest) as tmp:
        tmp.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            shutil.copy2(run_dir / name, tmp / name)


def _export_random(recipe: Recipe, dest: Path, seed: int = 0) -> None:
    """A randomly initialised member of the recipe's architecture, with the recipe's preprocessing."""
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model = create_model(recipe.replace(seed=seed), num_classes=200)
    with atomic_path(dest) as tmp:
        save_for_hf(
            model,
            tmp,
            model_config={"pretrained_cfg": {"tag": "zoo_rank_random_init"}, "zoo_rank": {"random_init_seed": seed}},
            safe_serialization=True,
            data_config=data_config(recipe),
        )


def trained_zoo(out_dir: str | Path, *, tiny: bool = False, device: str = "auto", quiet: bool = False) -> list[ZooMember]:
    """Train (or find) the members under out_dir; returns them, controls last."""
    out = Path(out_dir).expanduser()
    members: list[ZooMember] = []
    plan = _plan(tiny)
    for recipe, keep in plan:
        for epoch in keep:
            dest = out / f"{_folder(recipe)}-ep{epoch}"
            if not (dest / "model.safetensors").is_file():
                result = train(recipe, "tau", 1.0, out / "runs" / _folder(recipe), resume=True,
                               stop_after_epoch=epoch, device=device, quiet=quiet)  # fmt: skip
                _copy_weights(result.run_dir, dest)
            members.append(ZooMember(f"{recipe.name}-ep{epoch}", f"local-dir:{dest}", False,
                                     f"{recipe.description} Weights after epoch {epoch}."))  # fmt: skip
    recipe = plan[0][0]
    dest = out / f"{_folder(recipe)}-random"
    if not (dest / "model.safetensors").is_file():
        _export_random(recipe, dest)
    members.append(ZooMember(f"{recipe.name}-random", f"local-dir:{dest}", True,
                             f"control: {recipe.model} {recipe.model_args}, random init, same preprocessing."))  # fmt: skip
    return members
