"""INDEX.zoo-rank.md: one line per board of a folder and the commands that made them, regenerated
whenever a board in that folder is written. A file of that name without the tool's marker line is
someone else's and is never overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zoo_rank._paths import write_text_atomic
from zoo_rank._validation import ZooRankError
from zoo_rank.board.model import BOARD_SCHEMA
from zoo_rank.board.table import format_condition, markdown_table, metric_title, target_title

INDEX_NAME = "INDEX.zoo-rank.md"
INDEX_MARKER = "<!-- zoo_rank board index: regenerated whenever a board in this folder is written; edits are overwritten -->"
_HEADER = (
    "board",
    "mode",
    "data",
    "models",
    "sorted by",
    "recommended",
    "check",
    "Spearman ρ of sort metric",
    "built",
)


def foreign_index(folder: str | Path) -> Path | None:
    """FOLDER's index path when a file by that name exists that zoo_rank did not write (it is never overwritten)."""
    path = Path(folder) / INDEX_NAME
    if not path.exists():
        return None
    try:
        head = path.read_text(encoding="utf-8").splitlines()[:3]
    except (OSError, UnicodeDecodeError):
        return path
    return None if INDEX_MARKER in head else path


def update_index(folder: str | Path) -> Path:
    """Regenerate FOLDER/INDEX.zoo-rank.md: one line per board (NAME.json) in the folder and the commands
    that made them. Refuses (ZooRankError) to overwrite a file of that name without the tool's marker line."""
    folder = Path(folder)
    foreign = foreign_index(folder)
    if foreign is not None:
        raise ZooRankError(
            f"{foreign} exists and was not written by zoo-rank (no index marker line); refusing to overwrite it. "
            "Move it, or write boards to another folder with --out."
        )
    boards = _boards(folder)
    lines = [
        "# Leaderboards in this folder",
        INDEX_MARKER,
        "",
        "Each board has four siblings: `NAME.md` (read this), `NAME.csv` and `NAME.json` (one schema, machine readable),",
        "`NAME.png` (each metric against the check, the paper's Figure 7 layout); `NAME.runs/` holds one result file",
        "per (model, dataset) run, from which `zoo-rank leaderboard merge NAME.runs/*.json --out NAME` rebuilds the board.",
        "",
        *markdown_table(_HEADER, (_board_row(p, d) for p, d in boards), "lllrlllrl"),
        *_other_pages(folder, {p.with_suffix(".md").name for p, _ in boards}),
        "",
        "## How each board was made",
        "",
    ]
    for p, d in boards:
        lines += [f"`{p.stem}`:", "", "```bash", d.get("command") or "(command not recorded)", "```", ""]
    path = folder / INDEX_NAME
    write_text_atomic(path, "\n".join(lines))
    return path


def _boards(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(path, content) of every board JSON in the folder, by name; other JSON files are skipped."""
    boards = []
    for p in sorted(folder.glob("*.json")):
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(d, dict) and d.get("schema") == BOARD_SCHEMA:
            boards.append((p, d))
    return boards


def _board_row(p: Path, d: dict[str, Any]) -> list[str]:
    """A board's row of the index, read from its JSON (never rebuilt: the index must not recompute boards)."""
    rows = d.get("rows", [])
    data = d.get("conditions", {}).get("data", rows[0].get("dataset", "")) if rows else ""
    primary = d.get("primary", "")
    sign = next((m["arrow"] for m in d.get("metrics", []) if m["name"] == primary), "")
    first = next((r["label"] for r in rows if r.get("rank") and not r.get("control")), "—")
    corr = d.get("correlations", {})
    rho = corr.get("metrics", {}).get(primary, {}).get("spearman") if isinstance(corr, dict) else None
    return [
        f"[{d.get('name', p.stem)}]({p.stem}.md)",
        d.get("mode", ""),
        format_condition(data),
        str(len(rows)),
        f"{metric_title(primary)} {sign}",
        f"`{first}`",
        target_title(d.get("target")) or "—",
        "—" if rho is None else f"{rho:+.2f}",
        d.get("created", ""),
    ]


def _other_pages(folder: Path, board_pages: set[str]) -> list[str]:
    """Pages written by other tools (e.g. the paper reproduction): listed with their title, not parsed."""
    others = [
        p
        for p in sorted(folder.glob("*.md"))
        if p.name not in {"README.md", INDEX_NAME} and p.name not in board_pages
    ]
    if not others:
        return []
    lines = ["", "Other pages in this folder:", ""]
    for p in others:
        first = p.read_text(encoding="utf-8").lstrip().splitlines()[:1]
        title = first[0].lstrip("# ").strip() if first else p.stem
        lines.append(f"- [{p.stem}]({p.name}): {title}")
    return lines
