"""`zoo-rank train`: a tau or lambda model family (paper Sec. 6.3), under torchrun too."""

from pathlib import Path
from typing import Optional

from zoo_rank._validation import ZooRankError
from zoo_rank.cli import options as opt
from zoo_rank.train import loop


def train_cmd(
    family: opt.option(
        str,
        "--family",
        help="Family knob: 'tau' (softmax temperature) or 'lambda' (within-class cosine weight).",
    ),
    values: opt.option(
        str,
        "--values",
        help="Comma-separated knob values, e.g. 0.1,0.2,0.4,0.6,0.8,1.0 or 2.5,3.75,5,7.5,10.",
    ),
    recipe: opt.option(
        str,
        "--recipe",
        help="imagenet-resnet50, imagenet-resnet50-step, cifar10-resnet18, small-fmnist or small-cifar (see zoo_rank.train.RECIPES).",
    ) = "small-fmnist",
    out: opt.out("Output folder (default runs/<recipe>); one sub-folder per value.") = None,
    epochs: opt.epochs("Override the recipe's number of epochs.") = None,
    resume: opt.option(
        bool, "--resume", help="Continue interrupted runs from their resume.pt; finished ones are skipped."
    ) = False,
    stop_after_epoch: opt.option(
        Optional[int],
        "--stop-after-epoch",
        help="Stop (checkpointed) after this epoch, e.g. to fit a job's time limit.",
    ) = None,
    device: opt.device("auto, cpu or cuda.") = "auto",
    quiet: opt.quiet("No progress bars or per-epoch lines.") = False,
) -> None:
    """Train a tau or lambda model family (paper Sec. 6.3), tracking collapse; works under torchrun (DDP)."""
    try:
        knobs = [float(v) for v in opt.split_csv(values) or []]
    except ValueError as err:
        raise ZooRankError(
            f"--values must be comma-separated numbers, got {values!r}; e.g. --values 0.1,0.5,1.0."
        ) from err
    _train(
        recipe, family, knobs, out or Path("runs") / recipe, epochs, resume, stop_after_epoch, device, quiet
    )


def _train(
    recipe: str, family: str, knobs: list[float], out: Path, epochs, resume, stop_after_epoch, device, quiet
):
    """The library call of `train` (one place to change at merge); the process group ends even on error."""
    try:
        results = loop.train_family(
            recipe,
            family,
            knobs,
            out,
            epochs=epochs,
            resume=resume,
            stop_after_epoch=stop_after_epoch,
            device=device,
            quiet=quiet,
        )
        loop.print_results(results)
    finally:
        loop.shutdown_distributed()
