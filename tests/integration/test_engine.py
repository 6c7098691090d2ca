"""The engine on the real Docker daemon: how a container's end is reported, and that none is ever left behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from farm.backend.engine import Engine, RunSpec
from farm.controller.fleet import BuildResults
from tests.integration.conftest import image_of

pytestmark = pytest.mark.docker


def python(
    built: BuildResults,
    code: str,
    *,
    timeout_s: float = 600.0,
    memory: str = "1g",
    labels: dict[str, str] | None = None,
) -> RunSpec:
    return RunSpec(
        image=image_of(built, "x86-avx2"),
        command=["/opt/farm/bin/python3", "-c", code],
        timeout_s=timeout_s,
        memory=memory,
        labels=labels or {},
    )


def test_a_clean_exit_has_no_failure_and_keeps_the_output(engine: Engine, built: BuildResults) -> None:
    result = engine.run(python(built, "print('hello from', __import__('os').getuid())"))
    assert (result.exit_code, result.failure) == (0, None)
    # Hardened: an unprivileged user, whatever user farm runs as.
    assert result.log_tail.startswith("hello from ") and not result.log_tail.endswith(" 0")


def test_the_network_is_off_and_the_root_file_system_read_only(engine: Engine, built: BuildResults) -> None:
    code = (
        "import socket, pathlib\n"
        "print('interfaces', sorted(n for _, n in socket.if_nameindex()))\n"
        "try:\n    pathlib.Path('/opt/farm/x').write_text('x')\nexcept OSError as e:\n    print('write', e.errno)\n"
    )
    result = engine.run(python(built, code))
    assert result.exit_code == 0, result.log_tail
    assert "interfaces ['lo']" in result.log_tail
    assert "write 30" in result.log_tail  # EROFS


def test_a_timeout_stops_the_container_and_says_so(
    engine: Engine, new_containers: Callable[[], list[str]], built: BuildResults
) -> None:
    result = engine.run(python(built, "import time; time.sleep(60)", timeout_s=2.0))
    assert result.timed_out
    assert result.failure is not None and result.failure.startswith("timed out after")
    assert not new_containers()


def test_running_out_of_memory_is_named(engine: Engine, built: BuildResults) -> None:
    result = engine.run(python(built, "x = bytearray(512 * 2**20); print(len(x))", memory="128m"))
    assert result.oom_killed, result
    assert result.failure is not None and "out of memory" in result.failure


# Fills its cgroup with memory it holds, to within a few MiB of the limit, then reads onnxruntime's 29 MiB library
# page by page without read-ahead, over and over: its clean pages can always be reclaimed, so the kernel never kills
# it, and it faults thousands of pages a second for as long as it runs (measured here: 17,000 a second at 64 MiB).
THRASHER = """
import glob, mmap, os
def read(*names):
    return next(int(open(name).read()) for name in names if os.path.exists(name))
def usage():
    return read('/sys/fs/cgroup/memory.current', '/sys/fs/cgroup/memory/memory.usage_in_bytes')
limit = read('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes')
held = []
while usage() < limit - 6 * 2**20:
    held.append(bytearray(2**20))
code = max(glob.glob('/opt/farm/site-packages/onnxruntime/capi/*.so'), key=os.path.getsize)
with open(code, 'rb') as f:
    pages = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    pages.madvise(mmap.MADV_RANDOM)
    print('holding', len(held), 'MiB; reading', len(pages) >> 20, 'MiB over and over', flush=True)
    while True:
        sum(pages[i] for i in range(0, len(pages), 4096))
"""


def test_thrashing_at_the_memory_limit_is_out_of_memory_not_a_timeout(
    engine: Engine, new_containers: Callable[[], list[str]], built: BuildResults
) -> None:
    result = engine.run(python(built, THRASHER, memory="64m", timeout_s=120.0))
    assert "reading 29 MiB over and over" in result.log_tail, result.log_tail
    assert result.thrashed is not None and not result.timed_out, result
    assert result.failure is not None and result.failure.startswith(
        "ran out of memory: it thrashed at its memory limit of 64 MiB"
    ), result.failure
    # Stopped once it had thrashed for the whole window, long before its timeout.
    assert result.duration_s < 60, result.duration_s
    assert not new_containers()


def test_a_missing_image_fails_this_run_only(engine: Engine, new_containers: Callable[[], list[str]]) -> None:
    result = engine.run(RunSpec(image="farm/no-such-target:0000000000000000", command=["python3"]))
    assert result.failure is not None and result.failure.startswith("could not be started")
    assert not new_containers()


def test_a_container_removed_from_outside_is_reported(
    engine: Engine, new_containers: Callable[[], list[str]], built: BuildResults
) -> None:
    spec = python(built, "import time; time.sleep(60)", labels={"farm.test": "removed-from-outside"})

    def remove_when_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for container in engine.client.containers.list(filters={"label": "farm.test=removed-from-outside"}):
                container.remove(force=True)
                return
            time.sleep(0.1)

    remover = threading.Thread(target=remove_when_running)
    remover.start()
    result = engine.run(spec)
    remover.join()
    # `docker rm -f` kills first: farm sees either the kill or the removal, depending on which it meets first.
    assert result.failure in ("was removed from outside while it ran", "was killed (SIGKILL, exit 137) from outside")
    assert not new_containers()
