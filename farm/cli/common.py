"""What the commands share beyond their options: the fleet opened after the sweep of what killed farm processes
left (its notes on stderr)."""

from __future__ import annotations

from pathlib import Path

import typer

from farm.controller import fleet


def open_fleet(targets_file: Path | None) -> fleet.Fleet:
    """The fleet, after removing what farm processes that are gone (killed with SIGKILL) left behind: said on
    stderr."""
    from farm.api import open_fleet as opened

    return opened(targets_file, note=lambda text: to_stderr(f"note: {text}"))


def to_stderr(line: str) -> None:
    """A line on stderr: where the commands put notes and progress (farm.api's ``progress=``)."""
    typer.echo(line, err=True)
