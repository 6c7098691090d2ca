"""Small helpers on the host's files that several modules share."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

# Where a long step sends each line of a tool's output (a build, a download, a bootstrap) for live progress.
LineSink = Callable[[str], None]


def file_sha256(path: Path) -> str:
    """The file's SHA-256 in hex, read in 1 MiB blocks so that models and wheels of gigabytes stay out of memory."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
