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


def main() -> None:
    try:
        app()
    except ZooRankError as err:
        print(f"zoo-rank: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
