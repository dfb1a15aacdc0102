"""Boards: run results -> one ranked board as markdown, CSV, JSON and a PNG scatter, published under a lock.

Bottom to top (each module imports only those above it in this list):

* `table`     cells, titles and the one markdown table renderer (also the merged result tables)
* `result`    RunResult: one (model, dataset) run, its result file `zoo_rank.result/1`
* `regime`    N vs p: N/A cells, marks, estimator notes, the sort key's fallback
* `evidence`  correlations with the check, the recommendation, the notes
* `model`     Leaderboard (`zoo_rank.leaderboard/1`), build_board, merge (result files -> board)
* `markdown`, `plot`, `index`   NAME.md, NAME.png, INDEX.zoo-rank.md
* `files`     board_paths, CSV / JSON read and write, write_board, read_board
* `publish`   the board lock, rows kept on a rerun, --replace, no foreign file overwritten
* `zoo`       the zoo benchmark's board (its own analysis and files)
"""

from zoo_rank.board.files import board_paths, column_type, read_board, read_csv, write_board, write_csv
from zoo_rank.board.index import INDEX_MARKER, INDEX_NAME, foreign_index, update_index
from zoo_rank.board.markdown import correlation_line, correlation_table, render_markdown, statistics_text
from zoo_rank.board.model import (
    BOARD_SCHEMA,
    DEFAULT_PRIMARY,
    MODE_TEXT,
    N_BOOT,
    Leaderboard,
    build_board,
    merge,
)
from zoo_rank.board.plot import plot_board
from zoo_rank.board.result import RESULT_SCHEMA, RunResult, load_result
from zoo_rank.board.table import (
    arrow,
    format_value,
    markdown_table,
    metric_title,
    print_table,
    target_title,
    to_markdown,
    write_table,
)

__all__ = [
    "BOARD_SCHEMA",
    "DEFAULT_PRIMARY",
    "INDEX_MARKER",
    "INDEX_NAME",
    "MODE_TEXT",
    "N_BOOT",
    "RESULT_SCHEMA",
    "Leaderboard",
    "RunResult",
    "arrow",
    "board_paths",
    "build_board",
    "column_type",
    "correlation_line",
    "correlation_table",
    "foreign_index",
    "format_value",
    "load_result",
    "markdown_table",
    "merge",
    "metric_title",
    "plot_board",
    "print_table",
    "read_board",
    "read_csv",
    "render_markdown",
    "statistics_text",
    "target_title",
    "to_markdown",
    "update_index",
    "write_board",
    "write_csv",
    "write_table",
]
