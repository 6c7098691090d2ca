"""Length-framed messages on pipes between the job, the profile server and its children: 8 bytes of length, then
the payload. Reads wait at most until a deadline, so a hung peer costs a timeout, never the job."""

from __future__ import annotations

import os
import select
import struct
import time

_HEADER = struct.Struct("!Q")


def send(fd: int, payload: bytes) -> None:
    """Write one message (the pipe may take it in parts)."""
    data = memoryview(_HEADER.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data) :]


def receive(fd: int, timeout_s: float | None = None) -> bytes | None:
    """One message; None when the writer closed the pipe (or died) first. Raises TimeoutError past ``timeout_s``."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    header = _read(fd, _HEADER.size, deadline)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    return _read(fd, length, deadline)


def _read(fd: int, count: int, deadline: float | None) -> bytes | None:
    parts: list[bytes] = []
    while count > 0:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        part = os.read(fd, min(count, 1 << 20))
        if not part:
            return None
        parts.append(part)
        count -= len(part)
    return b"".join(parts)
