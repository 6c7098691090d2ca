"""``python -m farm.job.pod.wait inputs|results MARKER SECONDS``: wait until MARKER exists, or give up after SECONDS.

The init container waits so for the inputs the controller streams in, the collector for the controller to take the
job's results: a controller that died leaves a pod that ends on its own.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

# What the controller failed to do, per waiter.
MISSED = {"inputs": "sent no inputs", "results": "took no results"}


def main(args: Sequence[str]) -> int:
    missed, marker, deadline = MISSED[args[0]], args[1], time.monotonic() + float(args[2])
    while not os.path.exists(marker):
        if time.monotonic() > deadline:
            print(f"farm: the controller {missed} in time", file=sys.stderr, flush=True)
            return 1
        time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
