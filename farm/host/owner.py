"""Which farm process owns a container, so that what a killed controller left behind can be told from what a running
one still uses.

Each container farm starts carries ``farm.host.owner = "<host> <boot id> <pid> <start time>"``. The boot id and the
process's start time (in clock ticks since boot) make a reused PID, or a reboot, read as "gone" rather than "alive".
"""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path

OWNER_LABEL = "farm.host.owner"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, from field 3 on (None: no such process). The name
    (field 2) may hold spaces and parentheses, so they are counted from its end."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return None if fields is None else fields[19]  # field 22, starttime


def parent_of(pid: int) -> int | None:
    """The parent of process ``pid`` (field 4), or None when it is gone."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def owner_pid(owner: str) -> int | None:
    """The PID an owner label names, or None for a label this farm did not write."""
    parts = owner.split()
    return int(parts[2]) if len(parts) == 4 and parts[2].isdigit() else None


def of_process(pid: int) -> str:
    """The owner label value of the process ``pid`` on this machine."""
    return f"{socket.gethostname()} {_boot_id()} {pid} {_start_time(pid) or '?'}"


@cache
def this_process() -> str:
    """This process's owner label value."""
    return of_process(os.getpid())


def is_gone(owner: str) -> bool | None:
    """Whether the process named by ``owner`` has ended: True, False, or None when this machine cannot tell (another
    host, as with a remote engine, or a label it cannot read)."""
    pid = owner_pid(owner)
    if pid is None:
        return None
    host, boot, _, started = owner.split()
    if host != socket.gethostname():
        return None
    if boot != _boot_id():
        return True  # rebooted since: every process of that boot is gone
    return _start_time(pid) != started
