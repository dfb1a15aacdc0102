"""`zoo-rank`: a thin typer layer over the Python API. Parse, build the options, call the library, print;
no math here.

    options.py   each command-line option declared once (typer `Annotated` aliases)
    scores.py    score, metrics                 ranking.py   rank, leaderboard merge
    checks.py    probe, validate, finetune      features.py  extract, cache ls|rm, models, datasets
    training.py  train

Each command calls the library in one small function (`_rank`, `_run_probes`, ...): the place where the
command meets the Python API.
"""

import sys

import typer

from zoo_rank._validation import ZooRankError
from zoo_rank.cli import checks, features, ranking, scores, training

app = typer.Typer(
    help="Rank pretrained image backbones by how well they will transfer (Xu & Liu, ICML 2023).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# The order of registration is the order of `zoo-rank --help`.
app.command("score")(scores.score_cmd)
app.command("metrics")(scores.metrics_cmd)
app.command("rank")(ranking.rank_cmd)
app.add_typer(ranking.leaderboard_app, name="leaderboard")
app.command("train")(training.train_cmd)
app.command("probe")(checks.probe_cmd)
app.command("validate")(checks.validate_cmd)
app.command("models")(features.models_cmd)
app.command("datasets")(features.datasets_cmd)
app.command("extract")(features.extract_cmd)
app.add_typer(features.cache_app, name="cache")
app.command("finetune")(checks.finetune_cmd)


def main() -> None:
    """The console script: a ZooRankError is one line on stderr and exit code 2."""
    try:
        app()
    except ZooRankError as err:
        print(f"zoo-rank: error: {err}", file=sys.stderr)
        sys.exit(2)


__all__ = ["app", "main"]
