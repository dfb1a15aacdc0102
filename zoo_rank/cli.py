"""`zoo-rank`: a thin typer layer over the Python API. Parse, call the library, print; no math here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from zoo_rank._validation import ZooRankError

app = typer.Typer(
    help="Rank pretrained image backbones by how well they will transfer (Xu & Liu, ICML 2023).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _split(csv: Optional[str]) -> Optional[list[str]]:
    return [s.strip() for s in csv.split(",") if s.strip()] if csv else None


# ---- score (issue 2) -------------------------------------------------------------------------


@app.command()
def score(
    features: Path = typer.Argument(..., help="Parquet file or directory of parquet shards: a label column plus a list/array feature column."),
    metrics: Optional[str] = typer.Option(None, "--metrics", "-m", help="Comma-separated metric names (default: all). See `zoo-rank metrics`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write scores to this .json or .csv file."),
    label_column: Optional[str] = typer.Option(None, help="Label column (default: 'label', 'labels' or 'y')."),
    feature_column: Optional[str] = typer.Option(None, help="Feature column (default: the one list/array column)."),
) -> None:
    """Score bring-your-own features: VCI and the baselines from one parquet file."""
    from zoo_rank import scoring

    result = scoring.score_parquet(features, metrics=_split(metrics), label_column=label_column, feature_column=feature_column)
    scoring.print_scores(result)
    if out is not None:
        scoring.write_scores(result, out)


@app.command("metrics")
def list_metrics() -> None:
    """List the registered metrics: direction, description, citation."""
    from zoo_rank import scoring

    scoring.print_registry()


# ---- commands of later stages are registered below ------------------------------------------


# ---- rank and leaderboard (issue 5) ----------------------------------------------------------


@app.command("rank")
def rank_cmd(
    models: Optional[list[str]] = typer.Argument(
        None,
        help="Model specs (timm name, hf-hub:, local-dir:, pip:, random-init:ARCH for a control). None: the embedded default.",
    ),
    models_file: Optional[Path] = typer.Option(
        None, "--models-file", help="Text file with one model spec per line ('#' comments)."
    ),
    data: Optional[str] = typer.Option(
        None,
        "--data",
        "-d",
        help="Images to score (dataset spec; default: fashion-mnist, digits when absent).",
    ),
    split: Optional[str] = typer.Option(
        None, "--split", help="Split of --data to score (default: the dataset's train split)."
    ),
    mode: str = typer.Option(
        "target",
        "--mode",
        help="target: --data is your labelled target set (lower VCI better); source: the pretraining distribution (higher VCI better).",
    ),
    metrics: Optional[str] = typer.Option(
        None, "--metrics", "-m", help="Comma-separated metrics (default: all). See `zoo-rank metrics`."
    ),
    sort_by: Optional[str] = typer.Option(
        None, "--sort-by", help="Metric that orders the board (default: vci)."
    ),
    probe: Optional[str] = typer.Option(
        None,
        "--probe",
        help="Check: 'same' (test split of --data; target-mode default), 'none', or comma-separated dataset specs (train -> test).",
    ),
    n_per_class: Optional[int] = typer.Option(
        None, "--n-per-class", help="Class-balanced images per class to score (default run: 100; else all)."
    ),
    probe_n_per_class: Optional[int] = typer.Option(
        None, "--probe-n-per-class", help="Images per class of each probe split (default run: 50; else all)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the class-balanced subsets."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 where faster), bf16 or fp32."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N, mps."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="Extraction batch size (halves on out-of-memory)."
    ),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="Feature cache (default: $ZOO_RANK_CACHE, else the user cache folder)."
    ),
    out: Path = typer.Option(
        Path("leaderboards/default"),
        "--out",
        "-o",
        help="Board path without suffix: writes OUT.md/.csv/.json/.png and OUT.runs/.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Rank backbones: extract (cached) -> score -> probe check -> leaderboard. No arguments: the offline default."""
    from zoo_rank import rank as rank_mod

    board, paths = rank_mod.rank(
        models,
        models_file=models_file,
        data=data,
        split=split,
        mode=mode,
        metrics=_split(metrics),
        sort_by=sort_by,
        probe=probe,
        n_per_class=n_per_class,
        probe_n_per_class=probe_n_per_class,
        seed=seed,
        precision=precision,
        device=device,
        batch_size=batch_size,
        cache_dir=cache_dir,
        out=out,
        quiet=quiet,
    )
    rank_mod.print_summary(board, paths)


leaderboard_app = typer.Typer(help="Build leaderboards from per-run result files.", no_args_is_help=True)
app.add_typer(leaderboard_app, name="leaderboard")


@leaderboard_app.command("merge")
def leaderboard_merge(
    result_files: list[Path] = typer.Argument(
        ..., help="Per-run result files (NAME.runs/*.json) or NAME.runs folders, from any machines."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Board path without suffix: writes OUT.md/.csv/.json/.png."
    ),
    metrics: Optional[str] = typer.Option(
        None, "--metrics", "-m", help="Comma-separated metric columns (default: all found)."
    ),
    sort_by: Optional[str] = typer.Option(
        None, "--sort-by", help="Metric that orders the board (default: vci)."
    ),
) -> None:
    """Rebuild one board from result files of one mode and dataset (e.g. runs from several machines)."""
    import shlex

    from zoo_rank import leaderboard
    from zoo_rank import rank as rank_mod

    board = leaderboard.merge(
        result_files,
        name=out.name,
        metrics=_split(metrics),
        primary=sort_by,
        command=shlex.join(["zoo-rank", *sys.argv[1:]]),
    )
    rank_mod.print_summary(board, leaderboard.write_board(board, out))


def main() -> None:
    try:
        app()
    except ZooRankError as err:
        print(f"zoo-rank: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
