"""`zoo-rank rank` (extract -> score -> check -> board) and `zoo-rank leaderboard merge`."""

import functools
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from zoo_rank.board import merge, publish
from zoo_rank.cli import options as opt
from zoo_rank.jobs import rank as rank_mod
from zoo_rank.options import BoardOptions, ExtractOptions, ProbeOptions, Subset


def _say_on_interrupt(message: str) -> Callable:
    """Print `message` when the command is interrupted (typer turns Ctrl-C into exit code 130 silently)."""

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return command(*args, **kwargs)
            except KeyboardInterrupt:
                print(f"zoo-rank: interrupted; {message}", file=sys.stderr)
                raise

        return run

    return decorate


@_say_on_interrupt(
    "the result file of every finished model is kept in the board's .runs/ folder and extracted features "
    "in the cache (extraction said how many): the same command reuses them."
)
def rank_cmd(
    models: opt.models(
        "Model specs (timm name, hf-hub:, local-dir:, pip:, random-init:ARCH for a control). None: the embedded default."
    ) = None,
    models_file: opt.option(
        Optional[Path], "--models-file", help="Text file with one model spec per line ('#' comments)."
    ) = None,
    data: opt.data("Images to score (dataset spec; default: fashion-mnist, digits when absent).") = None,
    split: opt.split("Split of --data to score (default: the dataset's train split).") = None,
    mode: opt.option(
        str,
        "--mode",
        help="target: --data is your labelled target set (lower VCI better); source: the pretraining distribution (higher VCI better).",
    ) = "target",
    metrics: opt.metrics("Comma-separated metrics (default: all). See `zoo-rank metrics`.") = None,
    sort_by: opt.SortBy = None,
    probe: opt.probe(
        "Check: 'same' (test split of --data; target-mode default), 'none', or comma-separated dataset specs (train -> test)."
    ) = None,
    n_per_class: opt.n_per_class(
        "Class-balanced images per class to score (default run: 640; else all)."
    ) = None,
    probe_n_per_class: opt.option(
        Optional[int],
        "--probe-n-per-class",
        help="Images per class of each probe split (default run: 50; else all).",
    ) = None,
    probe_method: opt.option(
        Optional[str],
        "--probe-method",
        help="logistic (the paper's L-BFGS protocol; default) or ridge (closed form, quick).",
    ) = None,
    seed: opt.seed("Seed of the class-balanced subsets.") = 0,
    precision: opt.precision("auto (bf16 where faster), bf16 or fp32.") = "auto",
    device: opt.device("auto, cpu, cuda, cuda:N, mps.") = "auto",
    batch_size: opt.batch_size(
        "Extraction batch size (default: as `zoo-rank extract`; halves on out-of-memory)."
    ) = None,
    cache_dir: opt.cache_dir("Feature cache (default: $ZOO_RANK_CACHE, else the user cache folder).") = None,
    out: opt.out(
        "Board path without suffix: writes OUT.md/.csv/.json/.png and OUT.runs/ (default: leaderboards/default "
        "for the bare default run, else leaderboards/<data>-<mode>). Rows of models not rerun are kept."
    ) = None,
    replace: opt.option(
        bool,
        "--replace",
        help="Start the board over: drop the rows (and result files) of models not in this run.",
    ) = False,
    quiet: opt.Quiet = False,
    on_bad_image: opt.on_bad_image(
        "error: stop at an image that does not decode; skip: leave it out (counted on the board)."
    ) = "error",
    check: opt.option(
        str,
        "--check",
        help="probe (linear probe) or finetune (full fine-tuning, CPU budget; zoo_rank.finetune).",
    ) = "probe",
) -> None:
    """Rank backbones: extract (cached) -> score -> probe check -> leaderboard. No arguments: the offline default."""
    board, paths = _rank(
        models,
        models_file=models_file,
        data=data,
        split=split,
        mode=mode,
        probe=probe,
        check=check,
        out=out,
        replace=replace,
        subset=Subset(n_per_class=n_per_class, seed=seed),
        probe_subset=Subset(n_per_class=probe_n_per_class, seed=seed),
        probe_options=ProbeOptions(seed=seed, device=device).replace(method=probe_method),
        extract=ExtractOptions(
            precision=precision,
            device=device,
            batch_size=batch_size,
            cache_dir=cache_dir,
            on_bad_image=on_bad_image,
            quiet=quiet,
        ),
        board=BoardOptions(metrics=_tuple(opt.split_csv(metrics)), primary=sort_by),
    )
    rank_mod.print_summary(board, paths)


def _rank(
    models: Optional[list[str]],
    *,
    models_file: Optional[Path],
    data: Optional[str],
    split: Optional[str],
    mode: str,
    probe: Optional[str],
    check: str,
    out: Optional[Path],
    replace: bool,
    subset: Subset,
    probe_subset: Subset,
    probe_options: ProbeOptions,
    extract: ExtractOptions,
    board: BoardOptions,
):
    """The library call of `rank` (one place to change at merge). probe: the check's datasets."""
    options = rank_mod.RankOptions(
        mode=mode, target=probe, check=check, out=out, replace=replace, subset=subset,
        probe_subset=probe_subset, extract=extract, probe=probe_options, board=board,
    )  # fmt: skip
    specs = list(models or []) + (rank_mod.read_models_file(models_file) if models_file is not None else [])
    return rank_mod.rank(specs, data=data, split=split, options=options)


leaderboard_app = typer.Typer(help="Build leaderboards from per-run result files.", no_args_is_help=True)


@leaderboard_app.command("merge")
def leaderboard_merge(
    result_files: opt.argument(
        list[Path], "Per-run result files (NAME.runs/*.json) or NAME.runs folders, from any machines."
    ),
    out: opt.out("Board path without suffix: writes OUT.md/.csv/.json/.png."),
    metrics: opt.metrics("Comma-separated metric columns (default: all found).") = None,
    sort_by: opt.SortBy = None,
) -> None:
    """Rebuild one board from result files of one mode and dataset (e.g. runs from several machines)."""
    options = BoardOptions(
        name=out.name,
        metrics=_tuple(opt.split_csv(metrics)),
        primary=sort_by,
        command=shlex.join(["zoo-rank", *sys.argv[1:]]),
    )
    board = _merge(result_files, options)
    rank_mod.print_summary(board, publish.write(board, out))


def _merge(result_files: list[Path], options: BoardOptions):
    """The library call of `leaderboard merge` (one place to change at merge)."""
    return merge(result_files, options)


def _tuple(names: Optional[list[str]]) -> Optional[tuple[str, ...]]:
    return tuple(names) if names else None

