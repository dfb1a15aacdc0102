"""The one place that builds rich consoles and progress bars; quiet when output is not a terminal."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

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


class SpeedColumn(ProgressColumn):
    """rich's own moving estimate of the speed (`task.speed`, over the last 30 s) in the bar's unit:
    '412 img/s', or '3.2 s/cell' below one unit a second. Work resumed at `add_task(completed=...)` does not
    count: the speed and the ETA are those of this run."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("")
        shown = f"{speed:.0f} {self.unit}/s" if speed >= 1 else f"{1 / speed:.1f} s/{self.unit}"
        return Text(shown, style="progress.data.speed")


class NoteColumn(ProgressColumn):
    """The task's free-text note: the `rate` field callers pass to add_task / update (what is being worked
    on, e.g. 'resnet50 on cifar10'); empty when a task has none."""

    def render(self, task: Task) -> Text:
        return Text(str(task.fields.get("rate", "")))


def progress(*, quiet: bool = False, unit: str | None = None) -> Progress:
    """A progress bar with rich's speed and ETA; disabled when quiet or when stderr is not a terminal.

    unit: what one step of `advance` counts ('img', 'cell', 'step', ...): the speed column shows it per
    second; None: no speed column (a bar whose steps are not one kind of thing). Callers may still put a
    note in the task's `rate` field (`add_task(..., rate="")`, `update(task, rate="...")`).
    """
    disable = quiet or not sys.stderr.isatty()
    speed = [SpeedColumn(unit)] if unit else []
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *speed,
        NoteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console(),
        disable=disable,
        transient=False,
    )


def warn(message: str) -> None:
    err_console().print(f"[yellow]warning:[/yellow] {message}", highlight=False)
