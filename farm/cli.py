"""Thin Typer commands: parse flags, call the core, render. Only ``main`` turns errors into exit codes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from tabulate import tabulate

from farm import __version__, doctor, fleet
from farm.errors import FarmError, Interrupted

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="farm: how your ONNX model behaves on every hardware target, before you ship it.",
)

TargetsOpt = Annotated[
    Path | None, typer.Option("--targets", envvar="FARM_TARGETS", help="targets file [env: FARM_TARGETS]")
]
TargetOpt = Annotated[
    list[str] | None, typer.Option("--target", "-t", help="only this target (repeatable); default: all")
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", envvar="FARM_QUIET", help="plain progress lines [env: FARM_QUIET]")
]

_debug = False


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", envvar="FARM_DEBUG", help="show tracebacks [env: FARM_DEBUG]")
    ] = False,
) -> None:
    global _debug
    _debug = debug


@app.command()
def version() -> None:
    """Print farm's version."""
    typer.echo(__version__)


@app.command("doctor")
def doctor_cmd(
    fix: Annotated[bool, typer.Option("--fix", help="install and register what is missing (run as root)")] = False,
) -> None:
    """Check the engine, QEMU, binfmt, CPU flags, GPU runtime and disk, and say what to do about each."""
    if fix:
        changes = doctor.fix()
        for change in changes or ["nothing to change: everything farm installs is already here"]:
            typer.echo(f"changed: {change}" if changes else change)
    checks = doctor.diagnose()
    marks = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}
    rows = [[c.name, marks[c.level], c.detail + (f"\n  fix: {c.fix}" if c.fix else "")] for c in checks]
    typer.echo(tabulate(rows, headers=["check", "", "detail"], tablefmt="plain"))
    if any(c.level == "fail" for c in checks):
        raise typer.Exit(3)


@app.command()
def targets(
    targets_file: TargetsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List the targets with their mode on this host, reason, image tag and whether it is built."""
    rows = fleet.describe(targets_file)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    table = [
        [r.name, r.platform, r.mode + (f" ({r.cpu_model})" if r.cpu_model else ""), r.reason or "",
         r.image or "(wheels not downloaded yet)", "yes" if r.built else "no"]
        for r in rows
    ]
    typer.echo(tabulate(table, headers=["target", "platform", "mode", "reason", "image", "built"],
                        maxcolwidths=[None, None, None, 40, None, None]))


@app.command()
def build(
    targets_file: TargetsOpt = None,
    target: TargetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Build (or reuse) the image of every target this host can run; gpu targets only when named."""
    results = fleet.build(targets_file, target or [], quiet=quiet)
    rows = [[b.target, b.tag, f"{b.size_bytes / 2**20:.0f} MiB", "built" if b.built_now else "cached",
             f"{b.seconds:.1f}"] for b in results.built]
    rows += [[name, "-", "-", f"skipped: {why}", "-"] for name, why in results.skipped]
    typer.echo(tabulate(rows, headers=["target", "image", "size", "", "seconds"],
                        maxcolwidths=[None, None, None, 50, None]))


def main() -> None:
    try:
        app(standalone_mode=False)
    except FarmError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _fail(Interrupted("interrupted; every container farm started was removed"))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _fail(Interrupted("aborted"))
    except Exception as exc:  # click's usage errors and anything unexpected
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if _debug or os.environ.get("FARM_DEBUG"):
            raise
        typer.echo(f"error: {type(exc).__name__}: {exc} (this is a bug in farm; rerun with --debug and report it)",
                   err=True)
        sys.exit(1)


def _fail(exc: FarmError) -> None:
    if _debug or os.environ.get("FARM_DEBUG"):
        import traceback

        traceback.print_exc()
    typer.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)
