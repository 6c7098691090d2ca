"""Small helpers on the host's files that several modules share."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# Where a long step sends each line of a tool's output (a build, a download, a bootstrap) for live progress.
LineSink = Callable[[str], None]
# The folder of lock files in farm's cache folder; `farm clean --cache` keeps it, since a running farm may hold one.
LOCKS_DIR = "locks"


def file_sha256(path: Path) -> str:
    """The file's SHA-256 in hex, read in 1 MiB blocks so that models and wheels of gigabytes stay out of memory."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def exclusive(lock: Path, *, waiting: str, on_wait: LineSink | None = None) -> Iterator[None]:
    """Hold ``lock`` (an flock on a file) for the block: one farm process at a time makes a shared thing.

    Two farm runs on one host share the cache folder and the engine's images. The second to want something the
    first is making waits here and then finds it made, rather than making it again or reading half of it. The
    kernel releases an flock when its process dies, even by SIGKILL, so a killed run never blocks the next.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(f"waiting for another farm process that is {waiting}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def lock_path(cache_dir: Path, kind: str, key: str) -> Path:
    """Where the lock of one shared thing lives: beside farm's caches, one file per thing."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    return cache_dir / LOCKS_DIR / f"{kind}-{safe}.lock"


def root_readable(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """A tar member owned by root and readable (folders enterable) by all, writable by its owner only: what an image
    or a remote job's input volume holds, which the container's unprivileged user must read and never change."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = (info.mode | 0o444 | (0o111 if info.isdir() else 0)) & 0o755
    return info
