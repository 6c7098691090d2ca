"""``python -m farm.job.pod.budget SECONDS ARGV...``: run ARGV, stop it at its budget (exit 124), and exit with its
status as Docker reports one (128 + signal), since Kubernetes has no per-container deadline."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence

TIMED_OUT = 124


def main(args: Sequence[str]) -> int:
    budget, argv = float(args[0]), list(args[1:])
    child = subprocess.Popen(argv)
    # The kubelet stops a pod with SIGTERM: pass it on, so the job ends as it would in a local container.
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    try:
        code = child.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        print(f"farm: the job ran past its budget of {budget:.0f} s and was stopped", file=sys.stderr, flush=True)
        return TIMED_OUT
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
