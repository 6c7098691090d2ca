"""The commands that look after the host and its images: version, doctor, targets, build, clean."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from tabulate import tabulate

from farm import __version__
from farm.cli.common import to_stderr
from farm.cli.options import (
    QuietOpt,
    TargetOpt,
    TargetsOpt,
)
from farm.controller import doctor, progress
from farm.errors import BadInput


def version() -> None:
    """Print farm's version."""
    typer.echo(__version__)


def doctor_cmd(
    fix: Annotated[bool, typer.Option("--fix", help="install and register what is missing (run as root)")] = False,
    estimates: Annotated[
        bool,
        typer.Option(
            "--estimates",
            help="with --fix: also build the counting QEMU that estimates speed on emulated targets (minutes)",
        ),
    ] = False,
    targets_file: TargetsOpt = None,
) -> None:
    """Check the engine, QEMU, binfmt, CPU flags, GPU runtime, disk and speed estimates; say what to do about each."""
    if estimates and not fix:
        raise BadInput(
            "--estimates only says what `farm doctor --fix` builds", fix="run `farm doctor --fix --estimates`"
        )
    if fix:
        changes = doctor.fix(estimates=estimates)
        for change in changes or ["nothing to change: everything farm installs is already here"]:
            typer.echo(f"changed: {change}" if changes else change)
    checks = doctor.diagnose(targets_file=targets_file)
    marks = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}
    rows = [[c.name, marks[c.level], c.detail + (f"\n  fix: {c.fix}" if c.fix else "")] for c in checks]
    typer.echo(tabulate(rows, headers=["check", "", "detail"], tablefmt="plain"))
    if any(c.level == "fail" for c in checks):
        raise typer.Exit(3)


def targets(
    targets_file: TargetsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List the targets with their mode on this host, reason, image tag and whether it is built."""
    from farm.api import targets as target_rows

    rows = target_rows(targets_file=targets_file, progress=to_stderr)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    table = [
        [
            r.name,
            r.platform,
            r.backend + ("" if r.reachable else " (unreachable)"),
            r.mode + (f" ({r.cpu_model})" if r.cpu_model else ""),
            r.reason or "",
            r.image or "(wheels not downloaded yet)",
            "yes" if r.built else "no",
        ]
        for r in rows
    ]
    typer.echo(
        tabulate(
            table,
            headers=["target", "platform", "runs on", "mode", "reason", "image", "built"],
            maxcolwidths=[None, None, 24, None, 40, None, None],
        )
    )


def build(
    targets_file: TargetsOpt = None,
    target: TargetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Build (or reuse) the image of every target this host can run; gpu targets only when named."""
    from farm.api import build as build_images

    with progress.reporter(quiet) as report:
        results = build_images(targets=target or [], targets_file=targets_file, progress=report)
    # How each image got where its target runs: built, cached, tagged (same content, another name) or shipped.
    rows = [[b.target, b.tag, f"{b.size_bytes / 2**20:.0f} MiB", b.origin, f"{b.seconds:.1f}"] for b in results.built]
    rows += [[name, "-", "-", f"skipped: {why}", "-"] for name, why in results.skipped]
    typer.echo(
        tabulate(rows, headers=["target", "image", "size", "", "seconds"], maxcolwidths=[None, None, None, 50, None])
    )


def clean_cmd(
    images: Annotated[bool, typer.Option("--images", help="also farm's images (target images and bases)")] = False,
    cache: Annotated[
        bool,
        typer.Option(
            "--cache",
            help="also farm's caches (wheels, site-packages, capabilities, int8 artifacts, run folders of unknown "
            "owner)",
        ),
    ] = False,
    artifacts: Annotated[
        bool,
        typer.Option(
            "--artifacts",
            help="also the artifact cache alone: the int8 artifacts earlier runs made, which later runs reuse "
            "(FARM_ARTIFACT_CACHE_DIR)",
        ),
    ] = False,
    everything: Annotated[bool, typer.Option("--all", help="containers, run folders, images and caches")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be removed, remove nothing")] = False,
    targets_file: TargetsOpt = None,
) -> None:
    """Remove what farm left behind: containers and run folders of farm processes that are gone, and with
    --images, --cache, --artifacts or --all, farm's images and caches. What a running farm uses is kept, and said
    so."""
    from farm.backend.engine import Engine
    from farm.controller import clean
    from farm.report._format import size
    from farm.targets.config import load_config

    engine = Engine.connect()
    plan = clean.plan(
        engine,
        load_config(targets_file),
        images=images or everything,
        cache=cache or everything,
        artifacts=artifacts,
    )
    verb = "would remove" if dry_run else "removing"
    for item in plan.items:
        typer.echo(
            f"{verb} {item.kind} {item.name}"
            + (f" ({size(item.size_bytes)})" if item.size_bytes else "")
            + f": {item.why}"
        )
    for note in plan.kept:
        typer.echo(f"kept {note}")
    if not dry_run:
        clean.execute(engine, plan.items)
    typer.echo(f"{'would free' if dry_run else 'freed'} {size(plan.size_bytes)} ({len(plan.items)} item(s))")
