"""`zoo-rank score` (bring-your-own features) and `zoo-rank metrics` (the registry)."""

from pathlib import Path
from typing import Optional

from zoo_rank.cli import options as opt
from zoo_rank.jobs import scoring


def score_cmd(
    features: opt.argument(
        Path, "Parquet file or directory of parquet shards: a label column plus a list/array feature column."
    ),
    metrics: opt.metrics("Comma-separated metric names (default: all). See `zoo-rank metrics`.") = None,
    out: opt.out("Write scores to this .json or .csv file.") = None,
    label_column: opt.option(Optional[str], help="Label column (default: 'label', 'labels' or 'y').") = None,
    feature_column: opt.option(
        Optional[str], help="Feature column (default: the one list/array column)."
    ) = None,
) -> None:
    """Score bring-your-own features: VCI and the baselines from one parquet file."""
    result = _score(features, opt.split_csv(metrics), label_column, feature_column)
    scoring.print_scores(result)
    if out is not None:
        scoring.write_scores(result, out)


def _score(features: Path, metrics: Optional[list[str]], label_column, feature_column):
    """The library call of `score` (one place to change at merge)."""
    return scoring.score_parquet(
        features, metrics=metrics, label_column=label_column, feature_column=feature_column
    )


def metrics_cmd() -> None:
    """List the registered metrics: direction, description, citation."""
    scoring.print_registry()
