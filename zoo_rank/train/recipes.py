"""Training recipes: flat dataclasses in one registry, like timm's pretrained configs.

A recipe holds every setting that changes the trained weights except the family knob (tau or
lambda), which `zoo_rank.train.train` takes separately. Each trained model records its recipe in its
config.json, so a checkpoint says how it was made.

Batch sizes are per process; the learning rate scales with the global batch:
lr = lr_per_256 * batch_size * world_size / 256 (the paper's "0.1 x batch / 256").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from zoo_rank._validation import ZooRankError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# Fashion-MNIST is grayscale; the data layer replicates it to RGB, so its statistics are replicated too.
FMNIST_MEAN = (0.2860, 0.2860, 0.2860)
FMNIST_STD = (0.3530, 0.3530, 0.3530)

AUGMENTATIONS = ("autoaugment", "crop-flip", "none")
SCHEDULES = ("cosine", "step")


@dataclass(frozen=True)
class Recipe:
    """Every setting of one training run except the family knob. All fields are JSON-serialisable."""

    name: str
    description: str
    # ---- data (specs for zoo_rank.data.load_images: "fashion-mnist", "cifar10-local", "hf:org/name", a path) ----
    train_data: str
    test_data: str
    train_split: str | None = "train"
    test_split: str | None = "test"
    n_per_class: int | None = None  # class-balanced, seeded subset of the training split; None = all
    # ---- model (timm.create_model) and its preprocessing ----
    model: str = "resnet50"
    model_args: dict[str, Any] = field(default_factory=dict)
    img_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 1.0  # eval transform: resize to img_size / crop_pct, centre-crop img_size
    # ---- augmentation ----
    # "autoaugment": timm's RandomResizedCrop + flip + AutoAugment; "crop-flip"; "none" (eval transform)
    augment: str = "crop-flip"
    auto_augment_policy: str = "original"  # timm policy name; "original" is AutoAugment's ImageNet policy
    crop_padding: int = 4  # "crop-flip": random crop of img_size after zero-padding this many pixels
    # ---- optimisation (timm.optim.create_optimizer_v2 + timm.scheduler.create_scheduler_v2) ----
    epochs: int = 300
    batch_size: int = 256
    opt: str = "nesterov"  # timm optimizer name: "nesterov" = SGD with Nesterov momentum, "momentum" = SGD
    momentum: float = 0.9
    lr_per_256: float = 0.1
    weight_decay: float = 8e-5
    sched: str = "cosine"  # "cosine" or "step" (multiply by decay_rate every decay_epochs)
    decay_rate: float = 0.975
    decay_epochs: float = 1.0
    warmup_epochs: int = 10
    warmup_lr: float = 1e-5
    min_lr: float = 0.0
    num_workers: int = 8
    seed: int = 0
    # ---- collapse tracking (Figs. 1-6) ----
    track_every: int = 1  # epochs between measurements (the last epoch is always measured)
    # A fixed, seeded subset of the images trained on; N should be >= 5 p for an unbiased VCI.
    track_train_per_class: int = 50
    track_test_per_class: int | None = 50  # None = the whole test split
    spectrum_top: int = 64  # eigenvalues of Sigma_B and Sigma_T kept per measurement
    # Test top-1 after the last epoch, on this many images per class; None = the whole test split.
    final_test_per_class: int | None = None

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTATIONS:
            raise ZooRankError(
                f"recipe {self.name!r}: augment={self.augment!r}; expected one of {', '.join(AUGMENTATIONS)}."
            )
        if self.sched not in SCHEDULES:
            raise ZooRankError(
                f"recipe {self.name!r}: sched={self.sched!r}; expected one of {', '.join(SCHEDULES)}."
            )
        if self.epochs < 1 or self.batch_size < 1 or self.track_every < 1:
            raise ZooRankError(
                f"recipe {self.name!r}: epochs={self.epochs}, batch_size={self.batch_size}, "
                f"track_every={self.track_every}; all must be >= 1."
            )

    def lr(self, world_size: int = 1) -> float:
        """Peak learning rate for the global batch batch_size * world_size."""
        return self.lr_per_256 * self.batch_size * world_size / 256

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists), as recorded in checkpoints."""
        return _jsonable(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed; unknown field names raise a one-line error."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ZooRankError(
                f"unknown recipe field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}."
            )
        return dataclasses.replace(self, **changes)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# What every CPU-scale recipe shares (small-*, and the trained zoo of zoo_rank.train.zoo): a timm resnet10t at
# 32 px, crop-flip, SGD with Nesterov momentum at lr 0.4 x batch/256 (batch 64), a 1-epoch warm-up from 1e-3,
# decoding in the main process.
_CPU_SCALE: dict[str, Any] = {
    "model": "resnet10t",
    "img_size": 32,
    "augment": "crop-flip",
    "batch_size": 64,
    "lr_per_256": 0.4,
    "weight_decay": 5e-4,
    "warmup_epochs": 1,
    "warmup_lr": 1e-3,
    "num_workers": 0,
}


def cpu_scale_recipe(name: str, description: str, data: str, **fields: Any) -> Recipe:
    """A CPU-scale recipe that trains and tests on `data` (a zoo_rank.data spec): `_CPU_SCALE`'s settings,
    then `fields` (any Recipe field) on top."""
    return Recipe(name=name, description=description, train_data=data, test_data=data, **{**_CPU_SCALE, **fields})


_SMALL_FMNIST = cpu_scale_recipe(
    "small-fmnist",
    (
        "CPU-scale family member: a narrow timm resnet10t (1.2M parameters, 256-d features) on 3,000 "
        "Fashion-MNIST training images (300 per class) at 32 px, crop-flip, 6 epochs."
    ),
    "fashion-mnist",
    n_per_class=300,
    model_args={"channels": (32, 64, 128, 256), "stem_width": 16},
    mean=FMNIST_MEAN,
    std=FMNIST_STD,
    epochs=6,
    track_every=2,
    # 1,500 images: VCI needs N well above p = 256 (metrics.MIN_SAMPLES_PER_DIM).
    track_train_per_class=150,
    track_test_per_class=150,
    spectrum_top=32,
)

# The Sec. 6.3 reproduction's source at CPU scale (scripts/reproduce_sec63.py): K = 200 real ImageNet classes,
# so Sigma_B has rank up to 199 in a 128-d feature space, the regime of the paper's claim (K = 1000, p = 2048:
# Sigma_B spans a large part of the features). 32 px: Tiny ImageNet's 64 px images downsampled 2x; 64 px costs 4x
# the convolutions, which 2 shared CPU cores cannot afford for ~20 models; the script's CUDA setting trains at 64 px.
# p = 128 keeps the source metrics' N = 2,000 images at 15 p, well above the 5 p where VCI's bias shows.
_SMALL_TINYIMAGENET = _SMALL_FMNIST.replace(
    name="small-tinyimagenet",
    description=(
        "CPU-scale Sec. 6.3 source: a narrow timm resnet10t (0.34M parameters, 128-d features) on Tiny ImageNet "
        "(200 classes, ../shared/data) at 32 px, crop-flip, SGD with Nesterov momentum, cosine schedule after a "
        "1-epoch warm-up; pretraining accuracy on the whole validation split (4,000 images)."
    ),
    train_data="tiny-imagenet",
    test_data="tiny-imagenet",
    train_split="train",
    test_split="validation",
    n_per_class=None,
    model_args={"channels": (16, 32, 64, 128), "stem_width": 16},
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    epochs=8,
    batch_size=128,
    lr_per_256=0.4,
    track_every=8,
    # 8 + 4 per class = 1,600 + 800 images, above 5 p = 640 (metrics.MIN_SAMPLES_PER_DIM).
    track_train_per_class=8,
    track_test_per_class=4,
    final_test_per_class=None,
)

_IMAGENET_RESNET50 = Recipe(
    name="imagenet-resnet50",
    description=(
        "The paper's ImageNet recipe (Sec. 6.3, after Kornblith et al. 2021): ResNet50, SGD with Nesterov "
        "momentum 0.9, lr 0.1 x batch/256, 10 warm-up epochs from 1e-5 then cosine decay, weight decay "
        "8e-5, AutoAugment, batch 256 per GPU, 300 epochs."
    ),
    train_data="hf:ILSVRC/imagenet-1k",
    test_data="hf:ILSVRC/imagenet-1k",
    train_split="train",
    test_split="validation",
    model="resnet50",
    img_size=224,
    crop_pct=0.875,
    augment="autoaugment",
    epochs=300,
    batch_size=256,
    track_every=10,
    # 20,000 images, about 10 x p = 2048.
    track_train_per_class=20,
    track_test_per_class=20,
)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        _IMAGENET_RESNET50,
        _IMAGENET_RESNET50.replace(
            name="imagenet-resnet50-step",
            description="As imagenet-resnet50, with the paper's alternative schedule: lr x 0.975 every epoch after warm-up.",
            sched="step",
        ),
        Recipe(
            name="cifar10-resnet18",
            description=(
                "The paper's CIFAR-10 recipe for the collapse curves (Figs. 1-6): ResNet18, random 32x32 crop "
                "after 4-pixel zero padding + horizontal flip; SGD momentum 0.9, lr 0.1 at batch 128, weight decay "
                "5e-4, cosine over 200 epochs (the common CIFAR-10 ResNet18 settings). timm's resnet18 keeps its "
                "ImageNet stem (stride 4), unlike the 3x3-stem CIFAR variant."
            ),
            train_data="cifar10",
            test_data="cifar10",
            model="resnet18",
            img_size=32,
            mean=CIFAR10_MEAN,
            std=CIFAR10_STD,
            augment="crop-flip",
            opt="momentum",
            lr_per_256=0.2,
            weight_decay=5e-4,
            warmup_epochs=0,
            epochs=200,
            batch_size=128,
            track_every=5,
            track_train_per_class=500,
            track_test_per_class=None,
        ),
        _SMALL_FMNIST,
        _SMALL_FMNIST.replace(
            name="small-cifar",
            description=(
                "CPU-scale family member on the CIFAR-10 images of ../shared/data (zoo_rank.data's cifar10-local): the "
                "small-fmnist network and schedule on 3,000 training images (300 per class)."
            ),
            train_data="cifar10-local",
            test_data="cifar10-local",
            mean=CIFAR10_MEAN,
            std=CIFAR10_STD,
        ),
        _SMALL_TINYIMAGENET,
    )
}


def get_recipe(recipe: str | Recipe, **overrides: Any) -> Recipe:
    """A registered recipe by name (or a Recipe as is), with `overrides` applied (None values ignored)."""
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ZooRankError(f"unknown recipe {recipe!r}; expected one of {', '.join(RECIPES)}.")
        recipe = RECIPES[recipe]
    changes = {k: v for k, v in overrides.items() if v is not None}
    return recipe.replace(**changes) if changes else recipe
