"""The commands that read reports only: gate and report (no engine, no onnx)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from farm.errors import BadInput


def gate(
    report: Annotated[Path, typer.Argument(help="report.json of farm matrix, or the folder that holds it")],
    baseline: Annotated[
        Path | None, typer.Option(help="an earlier report.json (or its folder) to compare with")
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            envvar="FARM_GATE_POLICY", help="gate.toml; default: the default policy (docs/contracts.md section 5)"
        ),
    ] = None,
    junit: Annotated[Path | None, typer.Option(help="also write JUnit XML: one testcase per rule and target")] = None,
    markdown: Annotated[
        Path | None, typer.Option(help="also write Markdown; $GITHUB_STEP_SUMMARY, when set, gets it appended")
    ] = None,
) -> None:
    """Gate a release on a report: required targets ran, accuracy holds, and against --baseline no accuracy drop,
    latency regression beyond noise, new failure or unannounced change of recommendation.

    Exits 0 when every rule holds, 6 when one fails, 2 on bad input.
    """
    from farm.api import gate as run_gate
    from farm.errors import GateFailed
    from farm.gate import render_markdown, render_text

    result = run_gate(report, baseline=baseline, policy=policy, junit=junit, markdown=markdown)
    summary = render_markdown(result)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as stream:
            stream.write(summary)
    sys.stdout.write(render_text(result))
    if not result.passed:
        failed = result.having("failed")
        raise GateFailed(
            f"the gate failed on {len(failed)} check(s), the first: {failed[0].message}",
            fix="fix the model or the targets, or change the policy (--policy gate.toml) if the change is intended",
        )


def report_cmd(
    paths: Annotated[list[Path], typer.Argument(help="report.json files, or folders searched for them (a history)")],
    out: Annotated[Path, typer.Option(help="where index.html, trend.json and summary.md go")] = Path("farm-trend"),
    policy: Annotated[
        Path | None,
        typer.Option(envvar="FARM_GATE_POLICY", help="the gate policy that judges the changes since the run before"),
    ] = None,
) -> None:
    """One report over many runs: the latest matrix, what changed since the run before, and per target and
    variant the trend of accuracy and latency (index.html, self-contained; trend.json; summary.md)."""
    from farm.gate import Policy
    from farm.gate.trend import collect, write_trend

    rules = Policy.load(policy)
    history = collect(paths)
    for source, why in history.unreadable:
        typer.echo(f"note: left out {source}: {why}", err=True)
    changes = history.changes(rules)
    try:
        written = write_trend(history, out, changes)
    except OSError as exc:
        raise BadInput(
            f"writing the trend report to {out} failed because {exc.strerror or exc}",
            fix="pass --out a writable folder",
        ) from None
    failed = [] if changes is None else changes.having("failed")
    typer.echo(
        f"{len(history.runs)} run(s), latest {history.latest.name}: "
        + ("first run" if changes is None else f"{len(failed)} regression(s) since the run before")
        + f"; wrote {', '.join(str(p) for p in written)}"
    )
