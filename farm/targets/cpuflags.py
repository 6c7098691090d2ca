"""The x86 ISA features a tier may name, as CPUID bits: which a tier clears (its ``cpu_excludes`` and every feature
that depends on one of them: no AVX-512 BW without AVX-512 F), and the rules farm's CPUID mask applies for them
(farm/host/masking.py builds and preloads the library; this module is the facts alone, which targets.toml is checked
against).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# Linux's /proc/cpuinfo name -> (leaf, subleaf, register, bit) of the CPUID bit that announces it.
FEATURE_BITS: Mapping[str, tuple[int, int, str, int]] = {
    "avx512f": (7, 0, "ebx", 16),
    "avx512dq": (7, 0, "ebx", 17),
    "avx512ifma": (7, 0, "ebx", 21),
    "avx512pf": (7, 0, "ebx", 26),
    "avx512er": (7, 0, "ebx", 27),
    "avx512cd": (7, 0, "ebx", 28),
    "avx512bw": (7, 0, "ebx", 30),
    "avx512vl": (7, 0, "ebx", 31),
    "avx512vbmi": (7, 0, "ecx", 1),
    "avx512_vbmi2": (7, 0, "ecx", 6),
    "avx512_vnni": (7, 0, "ecx", 11),
    "avx512_bitalg": (7, 0, "ecx", 12),
    "avx512_vpopcntdq": (7, 0, "ecx", 14),
    "avx512_4vnniw": (7, 0, "edx", 2),
    "avx512_4fmaps": (7, 0, "edx", 3),
    "avx512_vp2intersect": (7, 0, "edx", 8),
    "amx_bf16": (7, 0, "edx", 22),
    "avx512_fp16": (7, 0, "edx", 23),
    "amx_tile": (7, 0, "edx", 24),
    "amx_int8": (7, 0, "edx", 25),
    "avx_vnni": (7, 1, "eax", 4),
    "avx512_bf16": (7, 1, "eax", 5),
    "amx_fp16": (7, 1, "eax", 21),
    "avx_ifma": (7, 1, "eax", 23),
    "avx_vnni_int8": (7, 1, "edx", 4),
    # AVX10 announces 512-bit vectors on its own (leaf 7.1 EDX 19, details in leaf 0x24): it goes with AVX-512 F.
    "avx10": (7, 1, "edx", 19),
}
# Clearing a feature clears what needs it; the register state bits of leaf 0xD go with the instruction sets.
_DEPENDENTS: Mapping[str, tuple[str, ...]] = {
    "avx512f": (*(f for f in FEATURE_BITS if f.startswith("avx512") and f != "avx512f"), "avx10"),
    "avx512_vnni": (),
    "avx_vnni": ("avx_vnni_int8",),
    "amx_int8": ("amx_tile", "amx_bf16", "amx_fp16"),
    "amx_tile": ("amx_int8", "amx_bf16", "amx_fp16"),
}
# XCR0 state components that leaf 0xD subleaf 0 announces: opmask, ZMM_Hi256, Hi16_ZMM (5-7); AMX tiles (17-18).
_STATE_BITS: Mapping[str, int] = {"avx512f": 0b111 << 5, "amx_tile": 0b11 << 17}
# numpy's names for the features it can see (numpy._core._multiarray_umath.__cpu_features__), for the proof that
# the mask took; the others (VNNI outside AVX-512, AMX) numpy does not report.
NUMPY_NAMES: Mapping[str, str] = {
    "avx512f": "AVX512F", "avx512cd": "AVX512CD", "avx512dq": "AVX512DQ", "avx512bw": "AVX512BW",
    "avx512vl": "AVX512VL", "avx512ifma": "AVX512IFMA", "avx512vbmi": "AVX512VBMI", "avx512_vnni": "AVX512VNNI",
    "avx512_vbmi2": "AVX512VBMI2", "avx512_bitalg": "AVX512BITALG", "avx512_vpopcntdq": "AVX512VPOPCNTDQ",
    "avx512_fp16": "AVX512FP16", "avx512_bf16": "AVX512BF16", "avx512_4vnniw": "AVX5124VNNIW",
    "avx512_4fmaps": "AVX5124FMAPS",
}  # fmt: skip


# Other x86 and arm64 flag names a targets.toml may name (as /proc/cpuinfo spells them), beside FEATURE_BITS.
OTHER_FLAGS = frozenset({
    "sse", "sse2", "ssse3", "sse4_1", "sse4_2", "popcnt", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "aes",
    "vaes", "gfni", "vpclmulqdq", "sha_ni", "movbe", "cpuid_fault",
    "asimd", "asimddp", "asimdhp", "asimdfhm", "fphp", "sve", "sve2", "i8mm", "bf16", "sme",
})  # fmt: skip
KNOWN_FLAGS = frozenset(FEATURE_BITS) | OTHER_FLAGS


def maskable(features: Iterable[str]) -> bool:
    """Whether CPUID masking can hide every one of these (it knows their bits)."""
    return all(f in FEATURE_BITS for f in features)


def cleared_features(excludes: Iterable[str]) -> tuple[str, ...]:
    """Every feature a tier with these ``cpu_excludes`` must not see, in FEATURE_BITS order."""
    cleared: set[str] = set()
    for feature in excludes:
        cleared |= {feature, *_DEPENDENTS.get(feature, ())}
        if feature.startswith("amx"):
            cleared |= {"amx_tile", *_DEPENDENTS["amx_tile"]}
    return tuple(f for f in FEATURE_BITS if f in cleared)


def mask_rules(features: Iterable[str]) -> str:
    """FARM_CPUID_MASK for the library: ``leaf.subleaf.register:mask`` rules, one per register."""
    masks: dict[tuple[int, int, str], int] = {}
    for feature in features:
        leaf, subleaf, register, bit = FEATURE_BITS[feature]
        masks[(leaf, subleaf, register)] = masks.get((leaf, subleaf, register), 0) | (1 << bit)
        if feature in _STATE_BITS:
            masks[(0xD, 0, "eax")] = masks.get((0xD, 0, "eax"), 0) | _STATE_BITS[feature]
    return ",".join(f"{leaf:#x}.{sub}.{reg}:{mask:#x}" for (leaf, sub, reg), mask in sorted(masks.items()))


def unseen(features: Iterable[str]) -> tuple[str, ...]:
    """numpy's names of the cleared features it reports: what the job checks it no longer sees."""
    return tuple(NUMPY_NAMES[f] for f in features if f in NUMPY_NAMES)
