"""farm as a library in a pipeline: evaluate a model on every target, pick each target's variant, and fail the job
when the gate finds a regression against a baseline report.

    .venv/bin/python examples/pipeline.py [MODEL] [--target NAME ...] [--baseline DIR] [--out DIR]

Without a baseline the run becomes one (its report is written to --out); run it again with --baseline pointing there.
The tests run it on the bundled model (tests/integration/test_api.py).
"""

from __future__ import annotations

import argparse
import sys

import farm.api as farm
from farm.errors import FarmError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="the ONNX model; default: farm's bundled digits classifier")
    parser.add_argument("--target", action="append", default=[], help="only this target (repeatable)")
    parser.add_argument("--baseline", help="an earlier report.json, or the folder that holds it")
    parser.add_argument("--out", default="farm-report", help="where this run's report goes")
    args = parser.parse_args()
    try:
        report = farm.matrix(args.model, targets=args.target, out=args.out, progress=print)
    except FarmError as error:  # bad input, no engine, a build that failed: one line, and the CLI's exit code
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    # Each target's pick, and why: what a deployment step would read.
    for target in report.targets:
        print(f"{target.name}: {target.status}, ship {target.recommended or 'nothing'}")
    if args.baseline is None:
        return 0
    result = farm.gate(args.out, baseline=args.baseline)
    for check in result.having("failed"):
        print(f"gate: {check.message}", file=sys.stderr)
    return 0 if result.passed else 6


if __name__ == "__main__":
    sys.exit(main())
