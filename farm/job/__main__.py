"""``python -m farm.job SPEC.json OUTDIR``.

Exit status: 0 when the stage ran to its end and wrote its file (prepare.json, result.json, tune.json or
bisect.json; failures of the target or of single variants are inside it), 2 when the arguments or the spec are
unusable (nothing is written), 1 on an unexpected crash (traceback on stderr; the file holds what was done before it).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from farm.job.spec import Spec, SpecError

USAGE = "usage: python -m farm.job SPEC.json OUTDIR"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(USAGE, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s farm.job %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    try:
        spec = Spec.from_file(Path(args[0]))
    except SpecError as exc:
        print(f"farm.job: bad spec: {exc}", file=sys.stderr)
        return 2
    out = Path(args[1])
    out.mkdir(parents=True, exist_ok=True)
    # Imported late: evaluate never needs onnxruntime.quantization, whose import is slow under QEMU.
    if spec.stage == "prepare":
        from farm.job.prepare import run_prepare

        run_prepare(spec, out)
    elif spec.stage == "tune":
        from farm.job.tune import run_tune

        run_tune(spec, out)
    elif spec.stage == "bisect":
        from farm.job.bisect import run_bisect

        run_bisect(spec, out)
    else:
        from farm.job.evaluate import run_evaluate

        run_evaluate(spec, out)
    return 0


def leave(code: int) -> NoReturn:
    """Exit without the interpreter's teardown. Every file the job writes is whole and closed by the time main
    returns, and its forked processes die with it; the teardown frees its sessions and modules one by one, which
    under QEMU took 0.5 s after the imports alone (measured in the arm64 image), a second of an emulated job."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    # An exception still ends the job as Python ends it: a traceback and status 1.
    leave(main())
