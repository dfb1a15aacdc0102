"""The one runner of the models x datasets grids (`zoo-rank probe`, `zoo-rank validate`, the zoo benchmark).

CLIP_benchmark's shape: one result file per cell (zoo_rank.results), keyed on every setting that changes
its number; skip-existing skips a cell only when its file holds exactly these settings (a true match:
another run's number is never returned); the cells left run under one progress bar with an ETA; a cell
that fails is reported and kept as a record with its error (or stops the grid, for jobs whose cells
depend on each other's inputs); the merge step reads every file of the grid back into one table.

    grid = Grid("probe-ridge", Path("results"))
    cells = [Cell(m, d.name, settings=key(m, d), item=d) for m in models for d in plans]
    grid.run(grid.pending(cells, skip_existing=True), compute, label="probe", unit="probe")
    table = grid.merge(["model", "dataset", "score"], where=run_settings)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo_rank import results
from zoo_rank._console import err_console, progress, warn


@dataclass(frozen=True)
class Cell:
    """One (model, dataset) cell: the names its result file is named by, its full result key (None: the
    job keys and writes the cell itself, e.g. when the key needs the built backbone), and the job's own
    object for it (a DatasetPlan, a benchmark Target, ...)."""

    model: str
    dataset: str
    settings: dict[str, Any] | None = None
    item: Any = None


def error_line(err: BaseException, limit: int | None = None) -> str:
    """'Type: first line of the message' (cut to `limit` characters; 'Type' alone for an empty message),
    for a table cell, a note or a warning."""
    text = str(err).strip().splitlines()
    first = text[0][:limit] if text else ""
    return f"{type(err).__name__}: {first}".rstrip(": ")


@dataclass(frozen=True)
class Grid:
    """The result files of one `kind` of cell in `results_dir`."""

    kind: str
    results_dir: Path

    @classmethod
    def at(cls, kind: str, results_dir: str | Path | None) -> Grid:
        """The grid of `kind` in `results_dir` (None: ./results, `results.DEFAULT_RESULTS_DIR`)."""
        return cls(kind, Path(results_dir) if results_dir is not None else results.DEFAULT_RESULTS_DIR)

    def find(self, cell: Cell) -> dict[str, Any] | None:
        """The cell's stored record when a file with exactly its settings exists, else None."""
        return results.find_result(self.results_dir, self.kind, cell.model, cell.dataset, cell.settings)

    def pending(self, cells: Iterable[Cell], *, skip_existing: bool) -> list[Cell]:
        """The cells to compute: all of them, or (skip_existing) those without a true match on disk."""
        return [c for c in cells if not (skip_existing and self.find(c) is not None)]

    def write(self, cell: Cell, record: dict[str, Any]) -> Path:
        """Write the cell's record keyed on its settings (stored in the file for `find` and `merge`)."""
        return results.write_keyed_result(
            self.results_dir, self.kind, cell.model, cell.dataset, cell.settings, record
        )

    def run(
        self,
        cells: list[Cell],
        compute: Callable[[Cell], dict[str, Any]],
        *,
        label: str,
        unit: str = "cell",
        quiet: bool = False,
        failed: Callable[[Cell, Exception], dict[str, Any]] | None = None,
        done: Callable[[Cell, dict[str, Any]], str] | None = None,
        echo: bool = False,
    ) -> list[dict[str, Any]]:
        """compute(cell) -> record for every cell, in order, under one progress bar (ETA); records of cells
        with settings are written keyed on them. Returns the records in the order of `cells`.

        failed(cell, err) -> the record kept for a cell that raised (with its "error"); the grid warns and
        goes on. None: the error stops the grid (cells already written stay on disk).
        done(cell, record) -> a short text shown beside the bar, and as a line on stderr when that is not a
        terminal (the bar is off), or always with `echo`.
        """
        out: list[dict[str, Any]] = []
        with progress(quiet=quiet, unit=unit) as bar:
            task = bar.add_task(label, total=len(cells), rate="")
            for cell in cells:
                bar.update(task, rate=f"{cell.model} on {cell.dataset}")
                try:
                    record = compute(cell)
                except Exception as err:  # one cell's failure is a record of the grid, not the end of it
                    if failed is None:
                        raise
                    record = failed(cell, err)
                    warn(f"{cell.model} on {cell.dataset} failed: {record['error']}")
                else:
                    if cell.settings is not None:
                        self.write(cell, record)
                out.append(record)
                text = done(cell, record) if done is not None and "error" not in record else ""
                bar.update(task, advance=1, rate=text)
                if text and not quiet and (echo or not err_console().is_terminal):
                    err_console().print(text, highlight=False)
        return out

    def merge(self, columns: list[str] | None = None, *, where: dict[str, Any] | None = None):
        """Every result file of the grid as one polars table (see results.merge_results)."""
        return results.merge_results(self.results_dir, self.kind, columns, where=where)


__all__ = ["Cell", "Grid", "error_line"]
