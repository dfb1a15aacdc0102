"""One board writer for tests/test_leaderboard.py: publishes one model's result into a board, drawing the
PNG slowly, so that writers overlapping in time would interleave their files without the board lock."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from zoo_rank.board import RunResult, build_board, files, publish
from zoo_rank.options import BoardOptions

out, label, value = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
draw = files.plot_board


def slow_plot(board, path):
    time.sleep(1.0)
    return draw(board, path)


files.plot_board = slow_plot
conditions = {"data_fingerprint": "f", "split": "train", "images_per_class": 5, "seed": 0, "check": "none"}
result = RunResult(
    model=label,
    dataset="digits",
    mode="target",
    metrics={"vci": value, "logme": -value},
    conditions=conditions,
)
publish.publish(
    [result],
    out=out,
    settings=publish.settings_of("target", "digits", conditions),
    metrics=["vci", "logme"],
    build=lambda rows: build_board(rows, BoardOptions(name=out.name, n_boot=0)),
)
