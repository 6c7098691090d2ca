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


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name (field 2) may hold spaces and parentheses, so count from its end.
    return stat.rsplit(")", 1)[1].split()[19]


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
    parts = owner.split()
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    host, boot, pid, started = parts
    if host != socket.gethostname():
        return None
    if boot != _boot_id():
        return True  # rebooted since: every process of that boot is gone
    return _start_time(int(pid)) != started
