"""Thin Typer commands: parse flags, call the core, render. Only ``main`` turns errors into exit codes.

The commands live by what they do (manage, evaluate, release); this module registers them, in the order
`farm --help` lists them, and holds the one place that exits."""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated

import typer

from farm.cli import bisect, evaluate, manage, release
from farm.errors import FarmError, Interrupted

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="farm: how your ONNX model behaves on every hardware target, before you ship it.",
)
app.command()(manage.version)
app.command("doctor")(manage.doctor_cmd)
app.command()(manage.targets)
app.command()(manage.build)
app.command()(evaluate.matrix)
app.command()(evaluate.tune)
app.command()(bisect.bisect)
app.command()(evaluate.inspect)
app.command()(evaluate.optimize)
app.command()(release.gate)
app.command("report")(release.report_cmd)
app.command("clean")(manage.clean_cmd)

_debug = False


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", envvar="FARM_DEBUG", help="show tracebacks")] = False,
) -> None:
    global _debug
    _debug = debug


def _terminated(signum: int, frame: object) -> None:
    # `timeout`, a cancelled CI job and `docker stop` send SIGTERM: clean up exactly as for Ctrl-C.
    raise KeyboardInterrupt


def main() -> None:
    from farm.backend.engine import ENGINE_ERRORS, engine_lost

    signal.signal(signal.SIGTERM, _terminated)
    # A background job of a non-interactive shell (a CI step's `farm matrix &`) starts with SIGINT ignored, and
    # Python then keeps ignoring it: a `kill -INT` would leave the run going instead of cleaning up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        # Without standalone mode click returns the code of a typer.Exit instead of exiting with it, and typer
        # turns Ctrl-C into a returned 130 after the command's context managers have removed its containers.
        code = app(standalone_mode=False)
        if code == Interrupted.exit_code:
            _fail(Interrupted("interrupted; every container farm started was removed"))
        sys.exit(code if isinstance(code, int) else 0)
    except FarmError as exc:
        _fail(exc)
    except KeyboardInterrupt:  # pressed outside a command, e.g. while typer parses the arguments
        _fail(Interrupted("interrupted; every container farm started was removed"))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _fail(Interrupted("aborted"))
    except ENGINE_ERRORS as exc:  # the engine went away outside a container run (a build, a listing)
        _fail(engine_lost("talking to the engine", os.environ.get("DOCKER_HOST") or "the default socket", exc))
    except Exception as exc:  # click's usage errors and anything unexpected
        if _is_usage_error(exc):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        if _debug or os.environ.get("FARM_DEBUG"):
            raise
        typer.echo(
            f"error: {type(exc).__name__}: {exc} (this is a bug in farm; rerun with --debug and report it)", err=True
        )
        sys.exit(1)


def _is_usage_error(exc: Exception) -> bool:
    """click's ClickException, whichever click raised it: typer 0.29 vendors its own (typer._click) and no longer
    installs click, so farm recognises the class by its name and shape rather than by importing click."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return (
        "ClickException" in names
        and callable(getattr(exc, "show", None))
        and isinstance(getattr(exc, "exit_code", None), int)
    )


def _fail(exc: FarmError) -> None:
    if _debug or os.environ.get("FARM_DEBUG"):
        import traceback

        traceback.print_exc()
    typer.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)
