"""What the commands share beyond their options: the fleet opened after the sweep of what killed farm processes
left, and an output file written with a usage error rather than a traceback."""

from __future__ import annotations

from pathlib import Path

import typer

from farm.controller import fleet
from farm.errors import BadInput


def open_fleet(targets_file: Path | None) -> fleet.Fleet:
    """The fleet, after removing what farm processes that are gone (killed with SIGKILL) left behind."""
    from farm.controller import clean
    from farm.report._format import size

    opened = fleet.Fleet.open(targets_file)
    orphans = clean.plan(opened.engine, opened.config)
    if orphans.items:
        clean.execute(opened.engine, orphans.items)
        kinds = sorted({i.kind for i in orphans.items})
        typer.echo(
            f"note: removed {len(orphans.items)} {' and '.join(kinds)}(s) that farm processes which are gone "
            f"left behind ({size(orphans.size_bytes)})",
            err=True,
        )
    for backend in {id(b): b for b in opened.backends.values() if b.reach.remote}.values():
        for removed in backend.sweep():
            typer.echo(f"note: removed {removed}, left behind by a farm process that is gone", err=True)
    return opened


def write_output(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BadInput(
            f"writing {path} failed because {exc.strerror or exc}", fix="pass a path in a writable folder"
        ) from None
