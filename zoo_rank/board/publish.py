"""Publishing a board: one lock per board, its result files in NAME.runs/, and no file overwritten that
zoo_rank did not write.

`zoo-rank rank` computes every row first and touches the board only at the end, under the board's lock
(`filelock`, on `.NAME.zoo-rank.lock` beside it): it reads the result files already in NAME.runs/,
replaces the rows of the models it ran, keeps the others, writes the result files, then
NAME.md/.csv/.json/.png from that one set of results. So two runs on one board never interleave, a rerun
with some of the models updates their rows only, and a run in which every model failed changes nothing.
`replace=True` starts the board over on purpose. Rows share a board only when they were computed under
the same settings (`COMPARABLE`); anything else is refused with the setting that differs.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from zoo_rank import _console
from zoo_rank._validation import ZooRankError
from zoo_rank.board.files import board_paths, write_board
from zoo_rank.board.index import INDEX_NAME, foreign_index, update_index
from zoo_rank.board.model import BOARD_SCHEMA, Leaderboard
from zoo_rank.board.result import RunResult, load_result

#: Settings that must agree for two runs' rows to share a board: each changes every number on it.
COMPARABLE = ("mode", "dataset", "data_fingerprint", "split", "images_per_class", "seed", "check")
#: How long a run waits for another one writing the same board (a write takes seconds, not minutes).
LOCK_TIMEOUT_S = 300
RUN_GLOB = "rank-*__*.json"
# First bytes of the board files zoo_rank writes (render_markdown's title, the CSV's first columns).
_MD_HEAD = "# zoo_rank leaderboard:"
_CSV_HEAD = "rank,model,label,"


def lock_path(out: str | Path) -> Path:
    md = board_paths(out)["md"]
    return md.with_name(f".{md.stem}.zoo-rank.lock")


@contextlib.contextmanager
def locked(path: Path, what: str) -> Iterator[None]:
    """Hold the file lock at `path` (created if absent); a clear error after LOCK_TIMEOUT_S."""
    try:
        with FileLock(path, timeout=LOCK_TIMEOUT_S):
            yield
    except Timeout:
        raise ZooRankError(
            f"{what} has been locked by another zoo-rank process for {LOCK_TIMEOUT_S} s ({path}); "
            "wait for that run to finish, or write to another board with --out."
        ) from None


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline()
    except (OSError, UnicodeDecodeError):
        return ""


def _ours(kind: str, path: Path) -> bool:
    """Whether the file at a board path carries zoo_rank's mark."""
    if kind == "json":
        try:
            return json.loads(path.read_text(encoding="utf-8")).get("schema") == BOARD_SCHEMA
        except (OSError, ValueError, AttributeError):
            return False
    if kind == "md":
        return _first_line(path).startswith(_MD_HEAD)
    if kind == "csv":
        return _first_line(path).startswith(_CSV_HEAD)
    from PIL import Image  # only to read a PNG's text chunks

    try:
        with Image.open(path) as image:
            return str(getattr(image, "text", {}).get("Software", "")).startswith("zoo_rank")
    except OSError:
        return False


def foreign_files(out: str | Path) -> list[Path]:
    """Files at the board's paths that zoo_rank did not write (it refuses to overwrite them).

    A NAME.json that is a zoo_rank board vouches for its siblings (boards written before the PNG carried
    the tool's mark); otherwise each file must carry the mark itself.
    """
    paths = board_paths(out)
    if paths["runs"].exists() and not paths["runs"].is_dir():
        return [paths["runs"]]
    if paths["json"].is_file() and _ours("json", paths["json"]):
        return []
    return [paths[k] for k in ("json", "md", "csv", "png") if paths[k].exists() and not _ours(k, paths[k])]


def _refuse_foreign(out: str | Path) -> None:
    folder = board_paths(out)["md"].parent
    foreign = foreign_files(out)
    index = foreign_index(folder) if folder.is_dir() else None
    if index is not None:
        foreign.append(index)
    if foreign:
        raise ZooRankError(
            f"{foreign[0]} exists and was not written by zoo-rank; refusing to overwrite it. "
            "Choose another --out (or move the file away)."
        )


def check_out(out: str | Path) -> None:
    """Fail before any work when the board cannot be written: a file zoo_rank did not write is in the
    way (board files or the folder's index), or the folder cannot be created or written."""
    _refuse_foreign(out)
    paths = board_paths(out)
    try:
        paths["md"].parent.mkdir(parents=True, exist_ok=True)
        for where in (paths["md"].parent, paths["runs"]):
            if where.is_dir():
                with tempfile.TemporaryFile(dir=where):
                    pass
        with locked(lock_path(out), f"board {out}"):
            pass
    except OSError as err:
        raise ZooRankError(
            f"cannot write the board {paths['md'].with_suffix('')} ({type(err).__name__}: {err}); "
            "pass --out with a folder you can write."
        ) from None


def read_runs(out: str | Path) -> dict[str, tuple[Path, RunResult]]:
    """{label: (file, result)} of every result file in NAME.runs/; a file that cannot be read is an error."""
    runs = board_paths(out)["runs"]
    found: dict[str, tuple[Path, RunResult]] = {}
    for f in sorted(runs.glob(RUN_GLOB)) if runs.is_dir() else []:
        try:
            result = load_result(f)
        except ZooRankError as err:
            raise ZooRankError(
                f"the board {out} cannot be updated: {err} Move {f.name} out of {runs}, or write a new board with --out."
            ) from None
        found[result.label] = (f, result)
    return found


def settings_of(mode: str, dataset: str, conditions: dict[str, Any]) -> dict[str, Any]:
    """The COMPARABLE settings of a run (conditions it lacks are None)."""
    return {"mode": mode, "dataset": dataset, **{k: conditions.get(k) for k in COMPARABLE[2:]}}


def check_compatible(
    kept: Iterable[RunResult], settings: dict[str, Any], metrics: Sequence[str], out: str | Path
) -> None:
    """Refuse to put rows computed under other COMPARABLE settings (or without a board metric) beside this run's."""
    how = "pass --replace to start the board over, or write a new board with --out"
    for r in kept:
        theirs = settings_of(r.mode, r.dataset, r.conditions)
        for k in COMPARABLE:
            if theirs[k] != settings.get(k):
                raise ZooRankError(
                    f"board {out} holds {r.label} computed with {k} = {theirs[k]!r}, this run has "
                    f"{settings.get(k)!r}, so their rows would not be comparable; rerun every model of the "
                    f"board with these settings, {how}."
                )
        missing = [m for m in metrics if r.error is None and m not in r.metrics]
        if missing:
            raise ZooRankError(
                f"board {out} holds {r.label} without {', '.join(missing)}; rerun it with these metrics, {how}."
            )


def publish(
    results: Sequence[RunResult],
    *,
    out: str | Path,
    settings: dict[str, Any],
    metrics: Sequence[str],
    build: Callable[[list[RunResult]], Leaderboard],
    replace: bool = False,
) -> tuple[Leaderboard, dict[str, Path]]:
    """Merge this run's `results` into the board at `out` and write it; returns the board and its files.

    Without `replace`, rows of models this run did not run stay (their result files untouched), and a model
    that failed here keeps an earlier good row (with a warning). With `replace`, the board holds this run's
    results only and the other result files in NAME.runs/ are removed. `build(results) -> Leaderboard`.
    Raises, changing nothing, when every model failed.
    """
    if all(r.error is not None for r in results):
        errors = "; ".join(f"{r.label}: {r.error}" for r in results[:3])
        raise ZooRankError(f"every model failed ({errors}); the board {out} was left as it was.")
    paths = board_paths(out)
    with locked(lock_path(out), f"board {out}"):
        _refuse_foreign(out)  # again: a file may have appeared while the models ran
        old = read_runs(out)
        rows = {} if replace else {label: r for label, (_, r) in old.items()}
        ran: list[RunResult] = []
        for r in results:
            before = rows.get(r.label)
            if r.error is not None and before is not None and before.error is None:
                _console.warn(
                    f"{r.label} failed in this run ({r.error}); the board keeps its earlier result "
                    f"(from {before.conditions.get('date', 'an undated run')})."
                )
                continue
            rows[r.label] = r
            ran.append(r)
        ran_ids = {id(r) for r in ran}
        check_compatible([r for r in rows.values() if id(r) not in ran_ids], settings, metrics, out)
        board = build(list(rows.values()))
        # Result files first: if anything stops here, NAME.runs/ holds the truth and a rerun rebuilds the board.
        saved = {r.save(paths["runs"]) for r in ran}
        if replace:
            for f, _ in old.values():
                if f not in saved:
                    f.unlink(missing_ok=True)
        written = write_board(board, out, index=False)
    written["index"] = write_index(paths["md"].parent)
    return board, written


def write(board: Leaderboard, out: str | Path) -> dict[str, Path]:
    """Write a board built elsewhere (e.g. `zoo-rank leaderboard merge`) under its lock, then the index."""
    check_out(out)
    with locked(lock_path(out), f"board {out}"):
        _refuse_foreign(out)
        written = write_board(board, out, index=False)
    written["index"] = write_index(board_paths(out)["md"].parent)
    return written


def write_index(folder: Path) -> Path:
    """Regenerate the folder's INDEX.zoo-rank.md under its own lock (boards of one folder share it)."""
    with locked(folder / f".{Path(INDEX_NAME).stem}.lock", f"the index of {folder}"):
        return update_index(folder)
