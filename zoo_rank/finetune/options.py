"""The fine-tuning protocol's settings: every field goes into the result file's key."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from zoo_rank._validation import ZooRankError

#: The `kind` of a fine-tuning result file (zoo_rank.results).
KIND = "finetune"
#: Part of every result key: 2: the LP-FT head never sees the validation rows; 3: floored feature scales, clipping.
RESULT_FORMAT = 3
#: The accuracy a cell can report (a data set's rule: top-1, or mean per-class accuracy).
METRICS = ("top1", "mean_per_class")


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
        """A copy with `changes`; a change to None keeps the current value (an unset CLI option)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON values (tuples -> lists), as they enter the result key."""
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
