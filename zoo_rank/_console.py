"""The one place that builds rich consoles and progress bars; quiet when output is not a terminal."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_console: Console | None = None
_err_console: Console | None = None


def console() -> Console:
    """Console for results (stdout)."""
    global _console
    if _console is None:
        _console = Console()
    return _console


def err_console() -> Console:
    """Console for progress, warnings and errors (stderr), so stdout stays machine-readable."""
    global _err_console
    if _err_console is None:
        _err_console = Console(stderr=True)
    return _err_console


def progress(*, quiet: bool = False, unit: str = "img") -> Progress:
    """A progress bar with throughput and ETA; disabled when quiet or when stderr is not a terminal."""
    disable = quiet or not sys.stderr.isatty()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console(),
        disable=disable,
        transient=False,
    )


def warn(message: str) -> None:
    err_console().print(f"[yellow]warning:[/yellow] {message}", highlight=False)
