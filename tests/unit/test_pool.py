"""The worker pool (farm.job.pool) and its size (farm.job.capacity), without an engine: tasks handed out in order,
every answer heard, and a worker that dies (it exits, is killed, segfaults) or a task that raises costing that task
only; the cores and memory room read from cgroup v1 and v2 files."""

from __future__ import annotations

import faulthandler
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from farm.job import capacity
from farm.job.pool import Answer, Lost, run_pool


def run(count: int, tasks: list[Callable[[], bytes]]) -> tuple[list[int], dict[int, Answer]]:
    started: list[int] = []
    answers: dict[int, Answer] = {}
    run_pool(count, tasks, on_start=started.append, on_done=answers.__setitem__)
    return started, answers


def answer(value: int) -> Callable[[], bytes]:
    return lambda: f"{value} from {os.getpid()}".encode()


def dies(how: Callable[[], None]) -> Callable[[], bytes]:
    def task() -> bytes:
        how()
        return b"never"

    return task


def test_every_task_is_handed_out_in_order_and_answered_by_workers() -> None:
    started, answers = run(3, [answer(index) for index in range(7)])
    assert started == list(range(7))
    assert sorted(answers) == list(range(7))
    texts = [answers[index] for index in range(7)]
    assert all(isinstance(text, bytes) for text in texts)
    assert [bytes(text).split()[0] for text in texts] == [str(index).encode() for index in range(7)]  # type: ignore[arg-type]
    pids = {int(bytes(text).split()[-1]) for text in texts}  # type: ignore[arg-type]
    assert os.getpid() not in pids
    assert 1 < len(pids) <= 3


def segfault() -> None:
    faulthandler.disable()  # pytest's would print the worker's stack: the crash is the test's
    os.kill(os.getpid(), signal.SIGSEGV)


@pytest.mark.parametrize(
    ("how", "said"),
    [
        (lambda: os._exit(3), "exited (3) before it answered"),
        (lambda: os.kill(os.getpid(), signal.SIGKILL), "was killed (SIGKILL) before it answered"),
        (segfault, "died of signal 11 (SIGSEGV) before it answered"),
    ],
)
def test_a_worker_that_dies_costs_its_task_only(how: Callable[[], None], said: str) -> None:
    tasks = [answer(0), dies(how), answer(2), answer(3), dies(how), answer(5)]
    started, answers = run(2, tasks)
    assert started == list(range(6))
    for index in (1, 4):
        lost = answers[index]
        assert isinstance(lost, Lost)
        assert lost.why.startswith("the worker process running it ") and said in lost.why
    for index in (0, 2, 3, 5):
        assert bytes(answers[index]).startswith(str(index).encode())  # type: ignore[arg-type]


def test_a_task_that_raises_is_lost_with_its_error_and_the_worker_goes_on() -> None:
    def broken() -> bytes:
        raise ValueError("no such tensor")

    _, answers = run(2, [broken, answer(1), answer(2)])
    lost = answers[0]
    assert isinstance(lost, Lost) and lost.why == "it raised no such tensor"
    assert bytes(answers[1]).startswith(b"1") and bytes(answers[2]).startswith(b"2")  # type: ignore[arg-type]


def test_where_no_worker_can_fork_the_tasks_run_in_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refuse)
    started, answers = run(2, [answer(index) for index in range(3)])
    assert started == [0, 1, 2]
    assert all(bytes(answers[i]).endswith(str(os.getpid()).encode()) for i in range(3))  # type: ignore[arg-type]


def test_the_workers_do_not_hold_the_descriptors_they_are_told_to_close() -> None:
    read, write = os.pipe()

    def holds() -> bytes:
        try:
            os.fstat(write)
        except OSError:
            return b"closed"
        return b"open"

    try:
        _, answers = run(2, [holds, holds])
    finally:
        os.close(read)
        os.close(write)
    assert answers == {0: b"open", 1: b"open"}
    read, write = os.pipe()
    try:
        answers = {}
        run_pool(2, [holds, holds], on_start=lambda _: None, on_done=answers.__setitem__, close_in_worker=[write])
    finally:
        os.close(read)
        os.close(write)
    assert answers == {0: b"closed", 1: b"closed"}


def cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return root


def meminfo(tmp_path: Path, available_kib: int) -> Path:
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal: 99999999 kB\nMemAvailable: {available_kib} kB\n")
    return path


def test_cgroup_v2_quota_and_memory(tmp_path: Path) -> None:
    root = cgroup(
        tmp_path / "v2", {"cpu.max": "150000 100000", "memory.max": str(4 << 30), "memory.current": str(1 << 30)}
    )
    assert capacity.cpu_quota(root) == 1.5
    assert capacity.usable_cores(root) == min(2, len(os.sched_getaffinity(0)))
    assert capacity.memory_room(root, meminfo(tmp_path, 64 << 20)) == 3 << 30
    assert capacity.memory_room(root, meminfo(tmp_path, 1 << 20)) == 1 << 30  # the host has less left
    unlimited = cgroup(tmp_path / "free", {"cpu.max": "max 100000", "memory.max": "max", "memory.current": "5"})
    assert capacity.cpu_quota(unlimited) is None
    assert capacity.memory_room(unlimited, tmp_path / "none") is None


def test_cgroup_v1_quota_and_memory(tmp_path: Path) -> None:
    root = cgroup(
        tmp_path,
        {
            "cpu/cpu.cfs_quota_us": "100000",
            "cpu/cpu.cfs_period_us": "100000",
            "memory/memory.limit_in_bytes": str(2 << 30),
            "memory/memory.usage_in_bytes": str(512 << 20),
        },
    )
    assert capacity.usable_cores(root) == 1
    assert capacity.memory_room(root, tmp_path / "none") == 1536 << 20
    (root / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (root / "memory" / "memory.limit_in_bytes").write_text(str(9223372036854771712))
    assert capacity.cpu_quota(root) is None
    assert capacity.memory_room(root, tmp_path / "none") is None


def test_the_worker_count_is_the_least_of_cores_tasks_and_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(capacity.WORKERS_ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(8)))
    root = cgroup(tmp_path, {"memory.max": str(4 << 30), "memory.current": str(1 << 30)})
    room = tmp_path / "none"
    assert capacity.worker_count(5, per_worker=100 << 20, root=root, meminfo=room)[0] == 5
    assert capacity.worker_count(20, per_worker=100 << 20, root=root, meminfo=room)[0] == 8
    # 3 GiB free, 1 GiB kept for the profile process: two workers of 1 GiB.
    count, rule = capacity.worker_count(20, per_worker=1 << 30, reserve=1 << 30, root=root, meminfo=room)
    assert count == 2 and rule == "8 core(s), 20 task(s), 3072 MiB free, 1024 MiB a worker"
    assert capacity.worker_count(20, per_worker=8 << 30, root=root, meminfo=room)[0] == 1
    monkeypatch.setenv(capacity.WORKERS_ENV, "3")
    assert capacity.worker_count(20, per_worker=8 << 30, root=root, meminfo=room) == (3, "FARM_JOB_WORKERS=3")
    assert capacity.worker_count(2, per_worker=1, root=root, meminfo=room)[0] == 2


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_workers_value_is_refused_with_the_fix(value: str) -> None:
    with pytest.raises(capacity.BadWorkers, match="FARM_JOB_WORKERS must be a whole number of at least 1"):
        capacity.workers_override({capacity.WORKERS_ENV: value})
    assert capacity.workers_override({}) is None
    assert capacity.workers_override({capacity.WORKERS_ENV: " 4 "}) == 4
