from __future__ import annotations

from pathlib import Path

from farm.host.probe import Binfmt, HostInfo, Qemu, place, read_binfmt
from farm.targets.config import load_config
from tests.conftest import ROOT

TARGETS = load_config(ROOT / "targets.toml", env={})
QEMU10 = {
    "x86_64": Qemu(path="/usr/bin/qemu-x86_64", version=(10, 0, 2)),
    "aarch64": Qemu(path="/usr/bin/qemu-aarch64", version=(10, 0, 2)),
}
ARM_BINFMT = {
    "qemu-aarch64": Binfmt(
        name="qemu-aarch64", enabled=True, interpreter="/usr/libexec/qemu-binfmt/aarch64-binfmt-P", flags="POF"
    )
}
VNNI_CPU = frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"})


def host(**kw: object) -> HostInfo:
    base: dict[str, object] = {
        "arch": "x86_64",
        "cpu_flags": VNNI_CPU,
        "qemu": QEMU10,
        "binfmt": ARM_BINFMT,
        "binfmt_mounted": True,
    }
    base.update(kw)
    return HostInfo(**base)  # type: ignore[arg-type]


def modes(h: HostInfo) -> dict[str, str]:
    return {t.name: place(t, h).mode for t in TARGETS.targets}


def test_this_kind_of_host_runs_vnni_natively_and_emulates_avx2_and_arm64() -> None:
    assert modes(host()) == {
        "x86-avx2": "emulated",
        "x86-avx512": "unavailable",
        "x86-avx512-vnni": "native",
        "arm64": "emulated",
        "gpu-s8s8": "unavailable",
        "x86-ort117": "native",
    }
    placement = place(TARGETS.target("x86-avx2"), host())
    assert placement.qemu is not None and placement.cpu_model == "Haswell"
    assert "avx512f" in (placement.reason or "") and "no cpuid_fault" in (placement.reason or "")
    avx512 = place(TARGETS.target("x86-avx512"), host())
    assert "cpuid_fault" in (avx512.reason or "") and "QEMU cannot emulate AVX-512" in (avx512.reason or "")


def test_with_cpuid_fault_the_narrower_x86_tiers_are_masked() -> None:
    h = host(cpu_flags=VNNI_CPU | {"cpuid_fault", "avx512dq", "avx512vl", "avx512cd"})
    assert modes(h) == {
        "x86-avx2": "masked",
        "x86-avx512": "masked",
        "x86-avx512-vnni": "native",
        "arm64": "emulated",
        "gpu-s8s8": "unavailable",
        "x86-ort117": "native",
    }
    avx2, avx512 = place(TARGETS.target("x86-avx2"), h), place(TARGETS.target("x86-avx512"), h)
    assert avx2.qemu is None and "cpuid_fault" in (avx2.reason or "")
    # AVX2: every AVX-512 bit (leaf 7 EBX bit 16 is AVX-512 F), VNNI, AMX and the AVX-512 register state go.
    assert avx2.mask is not None and "0x7.0.ebx:" in avx2.mask and "0xd.0.eax:0x600e0" in avx2.mask
    ebx = int(avx2.mask.split("0x7.0.ebx:")[1].split(",")[0], 16)
    assert ebx & (1 << 16) and ebx & (1 << 30)
    assert {"AVX512F", "AVX512BW", "AVX512VNNI"} <= set(avx2.unseen)
    # AVX-512 without VNNI keeps AVX-512 F and BW and loses only VNNI (and AMX).
    assert avx512.mask is not None and "0x7.0.ebx" not in avx512.mask
    assert int(avx512.mask.split("0x7.0.ecx:")[1].split(",")[0], 16) == 1 << 11
    assert avx512.unseen == ("AVX512VNNI",)


def test_a_skylake_host_runs_the_avx512_tier_natively() -> None:
    skylake = frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"})
    assert place(TARGETS.target("x86-avx512"), host(cpu_flags=skylake)).mode == "native"
    assert place(TARGETS.target("x86-avx2"), host(cpu_flags=skylake)).mode == "emulated"
    assert place(TARGETS.target("x86-avx2"), host(cpu_flags=skylake | {"cpuid_fault"})).mode == "masked"
    assert place(TARGETS.target("x86-avx512-vnni"), host(cpu_flags=skylake)).mode == "unavailable"


def test_an_avx2_only_host_runs_avx2_natively_and_cannot_emulate_avx512() -> None:
    h = host(cpu_flags=frozenset({"avx2", "fma"}))
    assert place(TARGETS.target("x86-avx2"), h).mode == "native"
    vnni = place(TARGETS.target("x86-avx512-vnni"), h)
    assert vnni.mode == "unavailable"
    assert "QEMU cannot emulate AVX-512" in (vnni.reason or "")
    assert place(TARGETS.target("x86-avx512"), h).mode == "unavailable"
    # cpuid_fault cannot add ISA: masking only takes features away.
    assert place(TARGETS.target("x86-avx512"), host(cpu_flags=frozenset({"avx2", "cpuid_fault"}))).mode == "unavailable"


def test_gpu_needs_the_nvidia_runtime() -> None:
    assert "NVIDIA" in (place(TARGETS.target("gpu-s8s8"), host()).reason or "")
    assert place(TARGETS.target("gpu-s8s8"), host(gpu_runtime=True)).mode == "native"


def test_arm64_needs_binfmt_with_the_f_flag_and_a_recent_qemu() -> None:
    arm = TARGETS.target("arm64")
    assert "not registered" in (place(arm, host(binfmt={})).reason or "")
    no_f = {"qemu-aarch64": Binfmt(name="qemu-aarch64", enabled=True, interpreter="/x", flags="PO")}
    assert "without the F flag" in (place(arm, host(binfmt=no_f)).reason or "")
    old = {**QEMU10, "aarch64": Qemu(path="/usr/bin/qemu-aarch64-static", version=(7, 2))}
    assert "QEMU 7.2 crashes onnxruntime" in (place(arm, host(qemu=old)).reason or "")


def test_avx2_without_qemu_is_unavailable_with_the_fix() -> None:
    placement = place(TARGETS.target("x86-avx2"), host(qemu={}))
    assert placement.mode == "unavailable"
    assert "farm doctor --fix" in (placement.reason or "")


def test_read_binfmt_parses_the_kernel_entries(tmp_path: Path) -> None:
    (tmp_path / "register").write_text("")
    (tmp_path / "qemu-aarch64").write_text(
        "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\nmagic 7f45\n"
    )
    entries = read_binfmt(tmp_path)
    assert entries["qemu-aarch64"].works_in_containers


def test_an_arm64_host_never_passes_avx2_off_as_the_vnni_tier() -> None:
    amd64_binfmt = {
        "qemu-x86_64": Binfmt(
            name="qemu-x86_64", enabled=True, interpreter="/usr/libexec/qemu-binfmt/x86_64-binfmt-P", flags="POF"
        )
    }
    arm_host = host(arch="aarch64", cpu_flags=frozenset({"asimd", "asimddp"}), binfmt=amd64_binfmt)
    vnni = place(TARGETS.target("x86-avx512-vnni"), arm_host)
    assert vnni.mode == "unavailable"
    assert "QEMU cannot emulate AVX-512" in (vnni.reason or "")
    assert place(TARGETS.target("x86-avx2"), arm_host).mode == "emulated"
    assert place(TARGETS.target("arm64"), arm_host).mode == "native"


def test_amx_hosts_mask_it_from_the_vnni_tier_or_give_it_up() -> None:
    sapphire = VNNI_CPU | {"amx_int8", "amx_tile", "amx_bf16"}
    vnni = TARGETS.target("x86-avx512-vnni")
    masked = place(vnni, host(cpu_flags=sapphire | {"cpuid_fault"}))
    assert masked.mode == "masked" and masked.mask is not None and "0x7.0.edx:" in masked.mask
    assert masked.unseen == ()  # numpy does not report AMX; the library's status is the proof there
    without = place(vnni, host(cpu_flags=sapphire))
    assert without.mode == "unavailable" and "amx_int8" in (without.reason or "")


def test_a_foreign_target_without_emulate_cpu_never_runs_on_qemus_max_cpu(tmp_path: Path) -> None:
    import pytest

    from farm.backend import runner
    from farm.errors import ConfigError
    from farm.host.probe import Placement

    bare = tmp_path / "targets.toml"
    bare.write_text('[targets.edge]\nplatform = "linux/arm64"\nruntime = "onnxruntime==1.31.1"\n')
    edge = load_config(bare, env={}).target("edge")
    assert edge.emulate_cpu is None
    placement = place(edge, host())
    # QEMU's default "max" made a U8U8 MatMul wrong; a target that names no model gets a safe one.
    assert placement.mode == "emulated" and placement.cpu_model == "neoverse-n1"
    spec = runner.run_spec(edge, placement, "farm/edge:0", ["-V"])
    assert spec.environment["QEMU_CPU"] == "neoverse-n1"
    with pytest.raises(ValueError, match="without a CPU model"):
        runner.run_spec(edge, Placement(mode="emulated"), "farm/edge:0", ["-V"])
    bare.write_text('[targets.edge]\nplatform = "linux/arm64"\nruntime = "onnxruntime==1.31.1"\nemulate_cpu = "max"\n')
    with pytest.raises(ConfigError, match="emulate_cpu = 'max'"):
        load_config(bare, env={})


def test_a_forced_tier_runs_emulated_on_any_cpu_and_one_qemu_cannot_run_stays_unavailable() -> None:
    # On each CPU kind we see, x86-avx2 is native (Zen 1), masked (cpuid_fault) or emulated; forced, it is emulated.
    for flags in (frozenset({"avx2", "fma"}), VNNI_CPU | {"cpuid_fault"}, VNNI_CPU):
        h = host(cpu_flags=flags, force_emulated=frozenset({"x86-avx2", "x86-avx512"}))
        placement = place(TARGETS.target("x86-avx2"), h)
        assert (placement.mode, placement.cpu_model) == ("emulated", "Haswell")
        assert "FARM_FORCE_EMULATED names x86-avx2" in (placement.reason or "")
        assert place(TARGETS.target("x86-avx512"), h).mode == "unavailable"
        assert place(TARGETS.target("x86-avx512-vnni"), h).mode != "emulated"
