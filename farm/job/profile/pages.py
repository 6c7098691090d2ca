"""The library pages a forked child must map again to start where a fresh process after its imports starts.

fork copies no page-table entries for file mappings that hold no private pages (the kernel lets faults fill them
later): the child's resident memory at start lacks most of the code and read-only data of the libraries the server
has touched (onnxruntime's, numpy's, Python's), and the child would count their faulting back in as the variant's
growth (7 MiB of a 45 MiB figure for a 6 MB CNN here). So the job lists its resident file-backed pages just before
it forks the server, and each child reads one byte of each before it reads VmRSS: its start is then the job's resident
set at that moment, as a fresh process's after its imports would be.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from typing import BinaryIO

PAGE = mmap.PAGESIZE
_PRESENT = 1 << 63


def resident_file_pages() -> list[tuple[int, int]]:
    """``(address, length)`` runs of this process's readable file-mapped pages that are resident now; empty where
    /proc/self/pagemap cannot be read."""
    runs: list[tuple[int, int]] = []
    try:
        with open("/proc/self/maps", encoding="ascii") as maps, open("/proc/self/pagemap", "rb") as pagemap:
            for line in maps:
                fields = line.split()
                if len(fields) < 6 or not fields[5].startswith("/") or not fields[1].startswith("r"):
                    continue
                start, end = (int(bound, 16) for bound in fields[0].split("-"))
                runs += _present(pagemap, start, end)
    except (OSError, ValueError):
        return []
    return runs


def _present(pagemap: BinaryIO, start: int, end: int) -> list[tuple[int, int]]:
    """The resident runs of one mapping (pagemap: 8 bytes per virtual page, bit 63 set when present)."""
    count = (end - start) // PAGE
    pagemap.seek(start // PAGE * 8)
    entries = struct.unpack(f"{count}Q", pagemap.read(count * 8))
    runs: list[tuple[int, int]] = []
    for index, entry in enumerate(entries):
        if not entry & _PRESENT:
            continue
        address = start + index * PAGE
        if runs and runs[-1][0] + runs[-1][1] == address:
            runs[-1] = (runs[-1][0], runs[-1][1] + PAGE)
        else:
            runs.append((address, PAGE))
    return runs


def touch(runs: list[tuple[int, int]]) -> None:
    """Read one byte of every page of ``runs`` (mapped as they were in the server, so readable)."""
    for address, length in runs:
        _ = (ctypes.c_char * length).from_address(address)[::PAGE]
