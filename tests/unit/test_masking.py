"""farm's CPUID mask: the rules a tier clears, the preload library's parsing and bit clearing (on any x86 host with
a C compiler), and the library at work in a process, its fork and its exec (only on a CPU with cpuid_fault)."""

from __future__ import annotations

import ctypes
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from farm.host import masking
from farm.host.masking import ensure_library
from farm.job import cpu
from farm.targets.cpuflags import cleared_features, mask_rules
from tests.conftest import missing

HOST_FLAGS = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
X86 = platform.machine() == "x86_64"
HAS_CPUID_FAULT = " cpuid_fault" in HOST_FLAGS


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not X86:
        pytest.skip(f"the CPUID mask is x86 only; this host is {platform.machine()}")
    if masking.compiler() is None:
        missing("no C compiler to build farm's CPUID preload library (scripts/setup installs gcc)")
    return ensure_library(tmp_path_factory.mktemp("cpuid"))


def test_tiers_clear_what_depends_on_what_they_exclude() -> None:
    avx2 = cleared_features(["avx512f", "avx_vnni", "avx512_vnni", "amx_int8"])
    assert {
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_fp16",
        "avx_vnni",
        "avx_vnni_int8",
        "amx_tile",
        "amx_int8",
        "amx_bf16",
    } <= set(avx2)
    assert cleared_features(["avx512_vnni"]) == ("avx512_vnni",)
    assert mask_rules(["avx512_vnni"]) == "0x7.0.ecx:0x800"
    # AVX-512 F takes its register state (leaf 0xD) with it.
    assert mask_rules(["avx512f"]) == "0x7.0.ebx:0x10000,0xd.0.eax:0xe0"


def test_the_library_parses_rules_and_clears_only_their_bits(library: Path) -> None:
    lib = ctypes.CDLL(str(library))
    assert lib.farm_cpuid_parse(b"0x7.0.ebx:0x10020,0xd.0.eax:0xe0") == 2
    regs = (ctypes.c_uint32 * 4)(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    lib.farm_cpuid_apply(7, 0, regs)
    assert list(regs) == [0xFFFFFFFF, 0xFFFFFFFF & ~0x10020, 0xFFFFFFFF, 0xFFFFFFFF]
    other = (ctypes.c_uint32 * 4)(1, 2, 3, 4)
    lib.farm_cpuid_apply(7, 1, other)  # another subleaf: untouched
    assert list(other) == [1, 2, 3, 4]
    for bad in (b"7.0.xyz:1", b"7.0.ebx", b"7.0.ebx:1;8.0.ecx:2"):
        assert lib.farm_cpuid_parse(bad) == -1


def test_an_empty_mask_is_refused_rather_than_reported_active(library: Path) -> None:
    probe = "import os; print(os.environ.get('FARM_CPUID_MASK_STATUS'))"
    status = subprocess.run(
        ["python3", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LD_PRELOAD": str(library), "FARM_CPUID_MASK": ""},
    ).stdout
    assert status.startswith("failed: FARM_CPUID_MASK is empty"), status


def test_the_library_needs_nothing_newer_than_the_images_glibc(library: Path) -> None:
    # The images are Debian bookworm (glibc 2.36); a newer host glibc redirects some calls to newer symbols.
    if shutil.which("objdump") is None:
        missing("objdump (binutils, which gcc brings) is not installed")
    symbols = subprocess.run(["objdump", "-T", str(library)], capture_output=True, text=True, check=True).stdout
    versions = {tuple(int(p) for p in v.split(".")) for v in re.findall(r"GLIBC_(\d+\.\d+)", symbols)}
    assert versions and max(versions) <= (2, 36), sorted(versions)


def test_unknown_or_unmaskable_flags_never_make_a_tier_masked() -> None:
    from farm.host.probe import HostInfo, place
    from farm.targets.config import Target

    avx_tier = Target(name="x86-avx", platform="linux/amd64", cpu_excludes=("avx2",), emulate_cpu="SandyBridge")
    placement = place(avx_tier, HostInfo(arch="x86_64", cpu_flags=frozenset({"avx", "avx2", "cpuid_fault"})))
    assert placement.mode != "masked"  # no CPUID bit known for avx2: masking would hide nothing


def test_without_cpuid_fault_the_library_says_so_and_the_job_refuses_to_run(library: Path) -> None:
    if HAS_CPUID_FAULT:
        pytest.skip("this CPU has cpuid_fault, so the mask takes (the tests below cover that)")
    probe = "import os; print(os.environ.get('FARM_CPUID_MASK_STATUS'))"
    status = subprocess.run(
        ["python3", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LD_PRELOAD": str(library), "FARM_CPUID_MASK": "0x7.0.ebx:0x20"},
    )
    assert status.stdout.startswith("failed: arch_prctl(ARCH_SET_CPUID) refused"), status.stdout
    os.environ[cpu.STATUS_ENV] = status.stdout.strip()
    try:
        problem = cpu.mask_problem(["AVX2"], ["AVX", "AVX2"])
    finally:
        del os.environ[cpu.STATUS_ENV]
    assert problem is not None and "did not take" in problem and "no cpuid_fault" in problem


def test_a_mask_that_leaks_a_feature_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cpu.STATUS_ENV, cpu.ACTIVE)
    assert cpu.mask_problem(["AVX512F"], ["AVX2"]) is None
    assert "still sees AVX512F" in (cpu.mask_problem(["AVX512F"], ["AVX2", "AVX512F"]) or "")
    monkeypatch.delenv(cpu.STATUS_ENV)
    assert "did not run" in (cpu.mask_problem([], ["AVX2"]) or "")


# The library's own test: CPUID leaf 7 EBX in a process, in its fork and after an exec, with the AVX2 bit (5) masked.
PROBE = r"""
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static unsigned ebx7(void) { unsigned a, b, c, d; __cpuid_count(7, 0, a, b, c, d); return b; }
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "raise") == 0) { raise(SIGSEGV); return 0; }  /* must not be swallowed */
    printf("%s %u\n", argc > 1 ? argv[1] : "process", (ebx7() >> 5) & 1);
    fflush(stdout);
    if (argc > 1) return 0;
    pid_t child = fork();
    if (child == 0) { printf("fork %u\n", (ebx7() >> 5) & 1); fflush(stdout); _exit(0); }
    waitpid(child, NULL, 0);
    execl(argv[0], argv[0], "exec", (char *)NULL);
    return 1;
}
"""


def test_the_mask_holds_in_the_process_its_fork_and_its_exec(library: Path, tmp_path: Path) -> None:
    if not HAS_CPUID_FAULT:
        pytest.skip(
            "needs a CPU with the cpuid_fault flag (Intel since Ivy Bridge, also in some KVM guests); "
            "this one lacks it, so CPUID cannot be masked here"
        )
    if "avx2" not in HOST_FLAGS.split():
        pytest.skip("the probe masks AVX2, which this CPU lacks")
    (tmp_path / "probe.c").write_text(PROBE)
    assert masking.compiler() is not None
    subprocess.run(
        [masking.compiler() or "cc", "-O1", "-o", str(tmp_path / "probe"), str(tmp_path / "probe.c")], check=True
    )
    plain = subprocess.run([str(tmp_path / "probe")], capture_output=True, text=True, check=True).stdout
    assert plain.split() == ["process", "1", "fork", "1", "exec", "1"]
    masked = subprocess.run(
        [str(tmp_path / "probe")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LD_PRELOAD": str(library), "FARM_CPUID_MASK": "0x7.0.ebx:0x20"},
    ).stdout
    assert masked.split() == ["process", "0", "fork", "0", "exec", "0"]
    # A SIGSEGV that software sends is not a CPUID trap: it still ends the process, as without the library.
    raised = subprocess.run(
        [str(tmp_path / "probe"), "raise"],
        capture_output=True,
        env={**os.environ, "LD_PRELOAD": str(library), "FARM_CPUID_MASK": "0x7.0.ebx:0x20"},
    )
    assert raised.returncode == -11
