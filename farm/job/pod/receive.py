"""``python -m farm.job.pod.receive FOLDER MARKER``, exec'd in the init container: stdin carries an 8-byte
big-endian length, then that many bytes of tar, unpacked under FOLDER; MARKER is then created.

Length-framed because an exec session's stdin cannot be closed on every protocol version (v4 has no way to say
"end of input"), so the receiver must know where the archive ends.
"""

from __future__ import annotations

import struct
import sys
import tarfile
from collections.abc import Sequence
from typing import Any, BinaryIO


class EndedEarly(Exception):
    pass


def exactly(source: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = source.read(n - len(data))
        if not more:
            raise EndedEarly
        data += more
    return data


class Framed:
    """The next ``size`` bytes of ``source`` as a stream of their own, for tarfile's streaming mode."""

    def __init__(self, source: BinaryIO, size: int) -> None:
        self.source = source
        self.left = size

    def read(self, n: int | None = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = exactly(self.source, n) if n else b""
        self.left -= len(data)
        return data


def receive(source: BinaryIO, folder: str) -> int:
    """Unpack one framed tar from ``source`` under ``folder``; returns its size."""
    size: int = struct.unpack(">Q", exactly(source, 8))[0]
    # The "data" filter (no links out, no devices, no owners) where the image's Python has it (3.11.4 and later).
    options: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(fileobj=Framed(source, size), mode="r|") as archive:  # type: ignore[call-overload]
        archive.extractall(folder, **options)
    return size


def main(args: Sequence[str]) -> int:
    try:
        size = receive(sys.stdin.buffer, args[0])
    except EndedEarly:
        print("farm: the inputs ended early", file=sys.stderr, flush=True)
        return 1
    open(args[1], "w").close()
    print("farm-received", size, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
