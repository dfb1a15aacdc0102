"""Train the paper's tau and lambda model families and track collapse while training (Sec. 6.3).

    from zoo_rank.train import train, train_family, RECIPES
    train_family("small-fmnist", "tau", [0.1, 0.5, 1.0], "runs/fmnist")

Each trained model is a timm local-dir folder: `zoo_rank.models.create_backbone("local-dir:PATH")`.
"""

from zoo_rank.train.checkpoint import read_record, run_name
from zoo_rank.train.distributed import shutdown_distributed
from zoo_rank.train.loop import TrainResult, train, train_family
from zoo_rank.train.losses import (
    FAMILIES,
    CosineRegularisedCrossEntropy,
    TemperatureCrossEntropy,
    make_loss,
    within_class_cosine,
)
from zoo_rank.train.recipes import RECIPES, Recipe, get_recipe
from zoo_rank.train.tracking import WithinSplit, spectra, within_class_split

__all__ = [
    "FAMILIES",
    "RECIPES",
    "CosineRegularisedCrossEntropy",
    "Recipe",
    "TemperatureCrossEntropy",
    "TrainResult",
    "WithinSplit",
    "get_recipe",
    "make_loss",
    "read_record",
    "run_name",
    "shutdown_distributed",
    "spectra",
    "train",
    "train_family",
    "within_class_cosine",
    "within_class_split",
]
