"""``python -m farm.job.pod.send MARKER NAME=FOLDER...``, exec'd in the collector: a tar of the folders (each under
its NAME) on stdout, its length on stderr (``farm-sent N``, for the controller to check it got all), then MARKER,
which lets the collector end."""

from __future__ import annotations

import sys
import tarfile
from collections.abc import Sequence
from typing import BinaryIO


class Counted:
    """A write-only stream that counts what passes through it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.size = out, 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


def send(sink: BinaryIO, pairs: Sequence[str]) -> int:
    """Write a tar of the NAME=FOLDER pairs to ``sink``; returns its size."""
    counted = Counted(sink)
    with tarfile.open(fileobj=counted, mode="w|") as archive:  # type: ignore[call-overload]
        for pair in pairs:
            name, folder = pair.split("=", 1)
            archive.add(folder, arcname=name)
    counted.flush()
    return counted.size


def main(args: Sequence[str]) -> int:
    size = send(sys.stdout.buffer, args[1:])
    open(args[0], "w").close()
    print("farm-sent", size, file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
