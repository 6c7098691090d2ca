"""The deployment profile's job side (farm.job.profile, farm.job.evaluate.profiled): the child's answer, the heap
arithmetic under glibc, the thread counts, the server's failures, and the real job on a generated CNN on this host,
cross-checked against a high-water mark the test measures by its own code."""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from farm.images.content import job_files
from farm.job.evaluate.file import ResultFile
from farm.job.evaluate.profiled import Profiler
from farm.job.evaluate.timed import Timer
from farm.job.profile import threads as thread_counts
from farm.job.profile.answer import BadAnswer, to_profile
from farm.job.profile.child import Request
from farm.job.profile.server import ProfileFailed, ProfileServer
from farm.job.report import Profile, ThreadLatency, Variant
from farm.job.spec import Spec, Timing
from tests.modelgen import ModelData, make_cnn, write_job_spec
from tests.unit.test_job_kernels import host_target

NATIVE = host_target(saturation_risk=False)
# The CNN of the acceptance: 6 MB of fp32 weights, on 32x32 images so that it runs in milliseconds.
WIDE = (64, 128, 256, 512)
NATIVE_ANSWER = {"rss_start_kib": 100_000, "hwm_kib": 151_200, "create_ms": 12.34567, "first_run_ms": 3.5}


def test_a_native_answer_is_the_process_growth_and_its_times() -> None:
    profile = to_profile(NATIVE_ANSWER, emulated=False, threads=2, timing="masked")
    assert profile.memory == "process"
    assert profile.peak_rss_mib == 50.0  # (151200 - 100000) KiB
    assert (profile.session_create_ms, profile.first_run_ms, profile.timing) == (12.346, 3.5, "masked")
    assert profile.session_threads == 2
    assert profile.rss_upper_bound_mib is None


def test_an_emulated_answer_is_the_guest_heap_with_the_resident_growth_as_its_bound() -> None:
    answer = {"rss_start_kib": 100_000, "hwm_kib": 300_704, "heap_start": 5 << 20, "heap_end": (5 << 20) + (30 << 20)}
    profile = to_profile(answer, emulated=True, threads=1, timing="emulated")
    assert (profile.memory, profile.peak_rss_mib, profile.rss_upper_bound_mib) == ("guest-heap", 30.0, 196.0)
    assert (profile.session_create_ms, profile.first_run_ms, profile.timing) == (None, None, "none")


@pytest.mark.parametrize("broken", [{"hwm_kib": None}, {"create_ms": True}, {"rss_start_kib": "1"}])
def test_an_answer_without_a_figure_is_refused(broken: Mapping[str, Any]) -> None:
    with pytest.raises(BadAnswer):
        to_profile({**NATIVE_ANSWER, **broken}, emulated=False, threads=1, timing="measured")


def test_a_peak_read_below_the_start_is_no_growth() -> None:
    answer = {**NATIVE_ANSWER, "hwm_kib": 99_000}
    assert to_profile(answer, emulated=False, threads=1, timing="measured").peak_rss_mib == 0.0


HEAP_EXPERIMENT = """
import sys
import numpy as np
from farm.job.profile.child import heap_bytes, keep_heap_peak
if sys.argv[1] == "keep":
    keep_heap_peak()
start = heap_bytes()
array = np.ones(100 << 17)  # 100 MiB of float64
held = heap_bytes() - start
del array
print(held >> 20, (heap_bytes() - start) >> 20)
"""


@pytest.mark.parametrize(("mode", "after_free"), [("keep", 99), ("default", 0)])
def test_the_heap_figure_keeps_its_peak_only_with_mmap_and_trimming_off(mode: str, after_free: int) -> None:
    """The reasoning of child.keep_heap_peak on this host's glibc: a 100 MiB array allocated and freed still counts
    once mmap and trimming are off; by default (mmapped, given back) it leaves no trace: the control."""
    done = subprocess.run([sys.executable, "-c", HEAP_EXPERIMENT, mode], capture_output=True, text=True, check=True)
    held, after = (int(word) for word in done.stdout.split())
    assert held >= 99
    assert after >= 99 if after_free else after == 0


def test_counts_above_the_cores_are_oversubscribed_and_warned_once_each() -> None:
    p50s = thread_counts.latencies((1, 2, 4), threads=1, own_p50=2.0, other_p50={2: 1.2, 4: 1.1}, cores=2)
    assert p50s == (
        ThreadLatency(threads=1, p50_ms=2.0),
        ThreadLatency(threads=2, p50_ms=1.2),
        ThreadLatency(threads=4, p50_ms=1.1, oversubscribed=True),
    )
    warnings = thread_counts.oversubscribed((1, 2, 4, 8), cores=2)
    assert [w.split(" is above")[0] for w in warnings] == ["threads = 4", "threads = 8"]
    assert thread_counts.oversubscribed((1, 2), cores=2) == []


def test_only_counts_other_than_threads_need_sessions_and_a_lost_count_is_left_out() -> None:
    assert thread_counts.others((1, 2, 4), 2) == (1, 4)
    p50s = thread_counts.latencies((1, 2), threads=2, own_p50=1.0, other_p50={}, cores=2)
    assert p50s == (ThreadLatency(threads=2, p50_ms=1.0),)


FORKED_FILE_PAGES = """
import os
import onnxruntime
from farm.job.profile import pages
def file_kib():
    with open("/proc/self/status") as stream:
        return next(int(line.split()[1]) for line in stream if line.startswith("RssFile:"))
runs = pages.resident_file_pages()
parent = file_kib()
read, write = os.pipe()
if os.fork() == 0:
    before = file_kib()
    pages.touch(runs)
    os.write(write, f"{parent} {before} {file_kib()}".encode())
    os._exit(0)
print(os.read(read, 100).decode())
"""


def test_a_forked_child_maps_the_jobs_library_pages_again_before_it_starts() -> None:
    """fork drops most file-backed page-table entries (the control: the child's RssFile falls); touching the job's
    resident file pages brings the child's start back to the job's."""
    done = subprocess.run([sys.executable, "-c", FORKED_FILE_PAGES], capture_output=True, text=True, check=True)
    parent, before, after = (int(word) for word in done.stdout.split())
    assert before < 0.5 * parent
    assert after >= 0.95 * parent


def test_the_image_ships_the_profile_package() -> None:
    names = {name for name, _ in job_files()}
    assert {"farm/job/profile/server.py", "farm/job/evaluate/profiled.py"} <= names


# The server itself, forked from this test process.


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> ModelData:
    return make_cnn(tmp_path_factory.mktemp("cnn") / "model.onnx", size=32, samples=2)


@pytest.fixture
def server() -> Iterator[ProfileServer]:
    started = ProfileServer.start(NATIVE, timeout_s=20.0)
    yield started
    pid = started.pid
    started.close()
    with pytest.raises(ChildProcessError):  # reaped: no zombie left
        os.waitpid(pid, os.WNOHANG)


def request(path: Path, feed: Mapping[str, Any], threads: int = 1) -> Request:
    return Request(path=str(path), config={}, level="all", threads=threads, feed=feed)


class Crashes(Mapping[str, Any]):
    """A feed that kills the child when it is read (after the session was created)."""

    def __init__(self, feed: Mapping[str, Any]) -> None:
        self.feed = feed

    def __getitem__(self, key: str) -> Any:
        faulthandler.disable()  # pytest's would print the child's stack: the crash is the test's
        os.kill(os.getpid(), signal.SIGSEGV)
        return self.feed[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.feed)

    def __len__(self) -> int:
        return len(self.feed)


class Hangs(Crashes):
    """A feed whose reading never ends."""

    def __getitem__(self, key: str) -> Any:
        time.sleep(3600)
        return self.feed[key]


def test_the_server_profiles_a_model_and_survives_its_childrens_failures(
    server: ProfileServer, cnn: ModelData, tmp_path: Path
) -> None:
    feed = {"x": cnn.inputs["x"][0]}
    with pytest.raises(ProfileFailed, match=r"nothing\.onnx"):
        server.ask(request(tmp_path / "nothing.onnx", feed))
    with pytest.raises(ProfileFailed, match="died of signal 11"):
        server.ask(request(cnn.path, Crashes(feed)))
    answer = server.ask(request(cnn.path, feed))
    profile = to_profile(answer, emulated=False, threads=1, timing="measured")
    # Forked from pytest, whose heap has room from earlier tests' sessions, the figure may be near zero: the job
    # forks its server before any session (the tests below measure that one).
    assert profile.peak_rss_mib is not None and profile.peak_rss_mib >= 0
    assert profile.session_create_ms is not None and profile.session_create_ms > 0


def test_a_hung_child_is_stopped_at_the_timeout(cnn: ModelData) -> None:
    server = ProfileServer.start(NATIVE, timeout_s=2.0)
    try:
        with pytest.raises(ProfileFailed, match="longer than 2 s"):
            server.ask(request(cnn.path, Hangs({"x": cnn.inputs["x"][0]})))
        assert "rss_start_kib" in server.ask(request(cnn.path, {"x": cnn.inputs["x"][0]}))
    finally:
        server.close()


class WaitsFor(Crashes):
    """A feed read only once ``path`` exists."""

    def __init__(self, feed: Mapping[str, Any], path: Path) -> None:
        super().__init__(feed)
        self.path = path

    def __getitem__(self, key: str) -> Any:
        while not self.path.exists():
            time.sleep(0.01)
        return self.feed[key]


class Touches(WaitsFor):
    """A feed that makes ``path`` when it is read."""

    def __getitem__(self, key: str) -> Any:
        self.path.touch()
        return self.feed[key]


def test_a_parallel_servers_children_run_side_by_side_and_answer_in_the_order_asked(
    cnn: ModelData, tmp_path: Path
) -> None:
    """The first child can answer only once the third has run: one child at a time, it would hang to the timeout."""
    server = ProfileServer.start(NATIVE, timeout_s=20.0, parallel=2)
    feed, third_ran = {"x": cnn.inputs["x"][0]}, tmp_path / "third-ran"
    try:
        server.submit(request(cnn.path, WaitsFor(feed, third_ran)))
        server.submit(request(tmp_path / "nothing.onnx", feed))
        server.submit(request(cnn.path, Touches(feed, third_ran)))
        assert "rss_start_kib" in server.answer()
        with pytest.raises(ProfileFailed, match=r"nothing\.onnx"):
            server.answer()
        assert "rss_start_kib" in server.answer()
    finally:
        server.close()


KILLED_JOB = """
import sys
import time
from farm.job.profile.server import ProfileServer
from farm.job.spec import SpecTarget
server = ProfileServer.start(eval(sys.argv[1]))
print(server.pid, flush=True)
time.sleep(60)
"""


def test_no_profile_process_outlives_a_job_ended_by_sigterm() -> None:
    job = subprocess.Popen([sys.executable, "-c", KILLED_JOB, repr(NATIVE)], stdout=subprocess.PIPE, text=True)
    assert job.stdout is not None
    server = int(job.stdout.readline())
    assert _running(server)
    job.send_signal(signal.SIGTERM)
    assert job.wait(10) == -signal.SIGTERM
    deadline = time.monotonic() + 10
    while _running(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(server)


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie whose new parent never reaps it holds no memory and runs nothing)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# The real job on this host: prepare, then evaluate with a profile, as a container runs it.


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], ModelData]:
    folder = tmp_path_factory.mktemp("profiled")
    data = make_cnn(folder / "model.onnx", size=32, samples=4, widths=WIDE)
    assert data.path.stat().st_size >= 5_000_000
    data.save(folder)
    settings: dict[str, Any] = {"candidates": ["u8s8-qdq"], "mitigations": []}
    _job(write_job_spec(folder, stage="prepare", name="prepare.json", **settings), folder)
    counts = sorted({1, 2, thread_counts.cores() + 1})
    timing = {"warmup": 1, "iterations": 6, "rounds": 3}
    _job(write_job_spec(folder, profile={"threads": counts}, timing=timing, **settings), folder / "out")
    result = json.loads((folder / "out" / "result.json").read_text(encoding="utf-8"))
    assert result["status"] == "ok", result
    return result, data


def _job(spec: Path, out: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "farm.job", str(spec), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_every_ok_variant_has_every_profile_figure(profiled: tuple[dict[str, Any], ModelData]) -> None:
    result, _ = profiled
    variants = {v["name"]: v for v in result["variants"] if v["status"] == "ok"}
    assert {"fp32", "optimized", "u8s8-qdq"} <= set(variants)
    cores = thread_counts.cores()
    for name, variant in variants.items():
        profile = variant["profile"]
        assert profile["memory"] == "process", name
        assert profile["peak_rss_mib"] > 0 and profile["session_create_ms"] > 0 and profile["first_run_ms"] > 0
        assert (profile["timing"], profile["session_threads"]) == ("measured", 1)
        timed = {t["threads"]: t for t in profile["threads"]}
        assert sorted(timed) == sorted({1, 2, cores + 1})
        assert timed[1]["p50_ms"] == variant["latency_ms"]["p50"]  # --threads' own figure
        assert all(timed[count]["oversubscribed"] == (count > cores) for count in timed)
    assert any(f"threads = {cores + 1} is above the {cores} cores" in w for w in result["warnings"])


def test_int8_qdq_peaks_below_fp32(profiled: tuple[dict[str, Any], ModelData]) -> None:
    peaks = {v["name"]: v["profile"]["peak_rss_mib"] for v in profiled[0]["variants"] if v["status"] == "ok"}
    print("peak_rss_mib:", peaks)
    assert peaks["u8s8-qdq"] < peaks["fp32"]


OWN_MEASURE = """
import sys
import numpy as np
import onnxruntime as ort
feed = {"x": np.load(sys.argv[2])["x"][0]}
with open("/proc/self/status") as stream:
    print(next(line.split()[1] for line in stream if line.startswith("VmRSS:")), flush=True)
sys.stdin.readline()
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(sys.argv[1], sess_options=options, providers=["CPUExecutionProvider"])
session.run(None, feed)
"""


# The parent of OWN_MEASURE: a bare interpreter. Not pytest itself: the kernel carries a process's high-water mark
# across exec, and subprocess forks (vforks) the child from pytest's far larger memory, so ru_maxrss would be
# pytest's. Started from this small parent, the child's own peak is above anything it inherited.
PARENT = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", *sys.argv[1:]], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
after_imports = int(child.stdout.readline())
child.stdin.write(b"go\\n")
child.stdin.close()
_, status, usage = os.wait4(child.pid, 0)
print(after_imports, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def test_the_peak_agrees_with_the_high_water_mark_measured_from_the_parent(
    profiled: tuple[dict[str, Any], ModelData],
) -> None:
    """The acceptance's cross-check, by this test's own code: a fresh interpreter imports numpy and onnxruntime,
    says its resident memory, then opens fp32 as the job does and runs it once; its parent reads its high-water
    mark from wait4's rusage (ru_maxrss, KiB)."""
    result, data = profiled
    arguments = [OWN_MEASURE, str(data.path), str(data.path.parent / "inputs.npz")]
    done = subprocess.run([sys.executable, "-c", PARENT, *arguments], capture_output=True, text=True, check=True)
    after_imports, maxrss, code = (int(word) for word in done.stdout.split())
    assert code == 0
    own = (maxrss - after_imports) / 1024.0
    farm = next(v for v in result["variants"] if v["name"] == "fp32")["profile"]["peak_rss_mib"]
    print(f"fp32 peak: farm {farm} MiB, the parent's own figure {own:.3f} MiB")
    assert abs(farm - own) <= 0.2 * own


def test_an_emulated_targets_profiles_are_collected_after_the_job_went_on(cnn: ModelData, tmp_path: Path) -> None:
    """Under emulation the job sends each request and goes on; ``collect`` puts each answer into its ok variant, in
    the order sent, and a failed child costs only its own variant's profile."""
    spec_path = write_job_spec(tmp_path, target={"mode": "emulated", "cpu_model": "Haswell"}, profile={"threads": [1]})
    spec = Spec.from_file(spec_path)
    assert spec.target.emulated
    file = ResultFile(spec.target, tmp_path / "out")
    server = ProfileServer.start(spec.target, timeout_s=60.0)
    try:
        profiler = Profiler(spec=spec, server=server, feed={"x": cnn.inputs["x"][0]}, file=file)
        for name, path in (("fp32", cnn.path), ("lost", tmp_path / "nothing.onnx"), ("again", cnn.path)):
            file.add(Variant(name=name, status="ok"))
            assert profiler.profile(name, path, None, "all") is None  # not waited for
        assert profiler.pending == ["fp32", "lost", "again"]
        profiler.collect()
    finally:
        server.close()
    profiles = {v.name: v.profile for v in file.result.variants}
    assert profiles["lost"] is None
    assert any(w.startswith("lost has no deployment profile") for w in file.result.warnings)
    for name in ("fp32", "again"):
        profile = profiles[name]
        assert profile is not None and profile.memory == "guest-heap", (name, profile)
        assert profile.peak_rss_mib is not None and profile.rss_upper_bound_mib is not None
        assert profile.session_create_ms is None and profile.timing == "none"


class Sleeps:
    """A session whose run takes ``seconds``: which session a figure came from shows in the figure."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def run(self, outputs: Any, feed: Any) -> list[Any]:
        time.sleep(self.seconds)
        return []


def test_the_latency_the_recommendation_uses_is_the_threads_sessions_and_the_others_are_profile_only(
    tmp_path: Path,
) -> None:
    """--threads 2 with threads [1, 2]: latency_ms comes from the variant's own session (2 threads, here 1 ms a run),
    the p50 at 1 thread from the session opened for the profile (here 10 ms), each in its place."""
    file = ResultFile(NATIVE, tmp_path)
    profile = Profile(memory="process", peak_rss_mib=1.0, session_threads=2, timing="measured")
    file.add(Variant(name="v", status="ok", profile=profile))
    timer = Timer(
        timing=Timing(warmup=0, iterations=6, rounds=3), target=NATIVE, feeds=[{}], file=file, threads=2, counts=(1, 2)
    )
    opened: list[int] = []

    def opener(count: int) -> Sleeps:
        opened.append(count)
        return Sleeps(0.010)

    assert timer.keep("v", Sleeps(0.001), 1, opener) is None
    assert opened == [1]
    timer.time_kept()
    [variant] = file.result.variants
    assert variant.latency_ms is not None and variant.latency_ms.p50 < 0.005 * 1000
    assert variant.profile is not None
    p50 = {t.threads: t.p50_ms for t in variant.profile.threads}
    assert sorted(p50) == [1, 2]
    assert p50[2] == pytest.approx(variant.latency_ms.p50)
    assert p50[1] > 5 * p50[2]


class TellsOomScore(Crashes):
    """A feed whose reading fails with the child's OOM score adjustment as the error."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("oom_score_adj " + Path("/proc/self/oom_score_adj").read_text().strip())


def test_a_profile_process_offers_itself_first_to_the_oom_killer(server: ProfileServer, cnn: ModelData) -> None:
    with pytest.raises(ProfileFailed, match="oom_score_adj 1000"):
        server.ask(request(cnn.path, TellsOomScore({"x": cnn.inputs["x"][0]})))


def test_no_profile_is_waited_for_past_the_deadline(server: ProfileServer, cnn: ModelData) -> None:
    feed = {"x": cnn.inputs["x"][0]}
    late = Request(path=str(cnn.path), config={}, level="all", threads=1, feed=feed, deadline=time.monotonic() - 1)
    with pytest.raises(ProfileFailed, match="share of its time budget"):
        server.ask(late)
    assert "rss_start_kib" in server.ask(request(cnn.path, feed))
