"""A board's files: NAME.md / .csv / .json / .png beside NAME.runs/, written atomically and read back.

NAME.json and NAME.csv share one schema: the CSV's columns are the JSON's `rows` (`Leaderboard.columns`),
with the same types both ways (`column_type`). A plain writer: `zoo_rank.board.publish` adds the board
lock, the result files in NAME.runs/ and the refusal to overwrite files zoo_rank did not write.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from zoo_rank._paths import write_text_atomic
from zoo_rank._validation import ZooRankError
from zoo_rank.board.index import update_index
from zoo_rank.board.markdown import render_markdown
from zoo_rank.board.model import Leaderboard
from zoo_rank.board.plot import plot_board

SUFFIXES = (".md", ".csv", ".json", ".png")


def board_paths(out: str | Path) -> dict[str, Path]:
    """out = 'leaderboards/NAME' (a suffix is ignored) -> the paths of NAME.md/.csv/.json/.png and NAME.runs/."""
    out = Path(out)
    if out.suffix in SUFFIXES:
        out = out.with_suffix("")
    return {
        **{suffix[1:]: out.with_suffix(suffix) for suffix in SUFFIXES},
        "runs": out.parent / f"{out.name}.runs",
    }


def column_type(column: str) -> Any:
    """The polars dtype of a board column (shared by the CSV writer and reader, so types round-trip)."""
    if column in {"rank", "n_params", "feature_dim"}:
        return pl.Int64
    if column == "control":
        return pl.Boolean
    if column in {"model", "label", "dataset", "mode", "error"} or column.startswith("probe_error:"):
        return pl.String
    return pl.Float64  # metrics and probe columns


def write_csv(board: Leaderboard, path: str | Path) -> Path:
    """NAME.csv: `board.rows()` with `board.columns()` typed by `column_type`."""
    schema = {c: column_type(c) for c in board.columns()}
    df = pl.DataFrame(board.rows(), schema=schema, orient="row")
    path = Path(path)
    write_text_atomic(path, df.write_csv())
    return path


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a board's CSV with the board's column types (the same dicts as `rows` in NAME.json)."""
    columns = pl.read_csv(Path(path), n_rows=0).columns
    return pl.read_csv(Path(path), schema={c: column_type(c) for c in columns}).to_dicts()


def write_board(board: Leaderboard, out: str | Path, *, index: bool = True) -> dict[str, Path]:
    """Write NAME.md, NAME.csv, NAME.json and NAME.png (each atomically); regenerate the folder's index.

    A plain writer: `zoo_rank.board.publish` adds the board lock, the result files and the foreign-file checks."""
    paths = board_paths(out)
    write_text_atomic(
        paths["json"], json.dumps(board.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    )
    write_csv(board, paths["csv"])
    write_text_atomic(paths["md"], render_markdown(board))
    plot_board(board, paths["png"])
    written = {k: v for k, v in paths.items() if k != "runs"}
    if index:
        written["index"] = update_index(paths["md"].parent)
    return written


def read_board(path: str | Path) -> Leaderboard:
    """A board back from NAME.json (or NAME, NAME.md: the sibling JSON is read)."""
    p = board_paths(path)["json"]
    if not p.is_file():
        raise ZooRankError(
            f"board {p} does not exist; write it with `zoo-rank rank ... --out {p.with_suffix('')}`."
        )
    return Leaderboard.from_dict(json.loads(p.read_text(encoding="utf-8")))
