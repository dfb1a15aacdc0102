"""The command-line options, each declared once as a typer `Annotated` alias.

An option that several commands share keeps one declaration of its flags and type here. Its help text is
part of the command-line interface and says what the option means for that command (which default batch
size, which devices), so most aliases take the help text from the command:

    def extract_cmd(..., device: opt.device("auto, cpu, cuda, cuda:N, mps.") = "auto", quiet: opt.Quiet = False)

Where every command says the same thing, the alias is complete (`Quiet`, `SortBy`, `CacheRoot`,
`SkipExisting`). Defaults stay in the signatures, where typer wants them with `Annotated`; an alias with
no default in the signature is required.

The command modules do not use `from __future__ import annotations`: typer reads these annotations, and
calls such as `opt.device(...)` must run when the command is defined.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer


def option(kind: Any, *flags: str, help: str) -> Any:
    """One option of one command: its type, flags (none: from the parameter's name) and help text."""
    return Annotated[kind, typer.Option(*flags, help=help)]


def argument(kind: Any, help: str) -> Any:
    """A positional argument (model specs, files): its type and help text."""
    return Annotated[kind, typer.Argument(help=help)]


def _shared(kind: Any, *flags: str) -> Callable[[str], Any]:
    """An option several commands take: type and flags fixed here, the help text given by each command."""
    return lambda help: option(kind, *flags, help=help)


# ---- what to run on --------------------------------------------------------------------------------------
def models(help: str) -> Any:
    """Model specs, positional; required where the command gives no default."""
    return argument(Optional[list[str]], help)


data = _shared(Optional[str], "--data", "-d")
datasets = _shared(Optional[str], "--datasets", "-d")
split = _shared(Optional[str], "--split")
n_per_class = _shared(Optional[int], "--n-per-class")
seed = _shared(int, "--seed")

# ---- how features are computed ---------------------------------------------------------------------------
precision = _shared(str, "--precision")
device = _shared(str, "--device")
batch_size = _shared(Optional[int], "--batch-size")
on_bad_image = _shared(str, "--on-bad-image")

# ---- what is scored, probed, shown -----------------------------------------------------------------------
metrics = _shared(Optional[str], "--metrics", "-m")
probe = _shared(Optional[str], "--probe")
epochs = _shared(Optional[int], "--epochs")

# ---- where results go ------------------------------------------------------------------------------------
out = _shared(Optional[Path], "--out", "-o")
results_dir = _shared(Path, "--results-dir")
cache_dir = _shared(Optional[Path], "--cache-dir")
quiet = _shared(bool, "--quiet", "-q")
skip_existing = _shared(bool, "--skip-existing/--no-skip-existing")

# ---- complete aliases: the same text for every command that takes them ------------------------------------
Quiet = quiet("No progress bars.")
SortBy = option(
    Optional[str],
    "--sort-by",
    help="Metric that orders the board (default: vci; vci_lw in target mode below N = 5p).",
)
CacheRoot = cache_dir("Cache root (default: $ZOO_RANK_CACHE, else the user cache folder).")
SkipExisting = skip_existing(
    "Skip cells already computed with exactly these settings (resume); other settings are computed anew."
)


def split_csv(csv: Optional[str]) -> Optional[list[str]]:
    """'a, b,,c' -> ['a', 'b', 'c']; None or '' -> None (the library's default)."""
    return [s.strip() for s in csv.split(",") if s.strip()] if csv else None
