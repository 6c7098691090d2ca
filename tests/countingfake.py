"""A counting QEMU bundle as farm.host.counting describes one, for unit tests that only need its paths."""

from __future__ import annotations

from pathlib import Path

from farm.host.counting import CountingQemu


def fake_counting(bundle: Path, reserves: tuple[str, ...] = ("aarch64", "x86_64")) -> CountingQemu:
    return CountingQemu(
        bundle=bundle,
        qemu_version="1:10.0.2",
        source_sha256="a" * 64,
        plugin_sha256="b" * 64,
        build_seconds=1.0,
        loader="ld-linux-x86-64.so.2",
        reserves=reserves,
    )
