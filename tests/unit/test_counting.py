"""The counting QEMU's Python side: which Debian source it builds, how it finds a bundle offline, what it copies into
the bundle, how it reads the plugin's counts, and that a host it cannot build on gets one line with the fix."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from farm.errors import EnvironmentProblem
from farm.host import counting, qemubuild, qemusource
from farm.job.estimate.costs import CLASSES
from tests.countingfake import fake_counting

SOURCES = """\
Package: qemu
Binary: qemu-system, qemu-user-static
Version: 1:10.0.2+ds-2+deb13u1~bpo12+1
Build-Depends: debhelper-compat (= 13), meson (>> 1.5.0~),
 ninja-build
Checksums-Sha256:
 a9eec32b6ddeda8f7e3472b3e9662358a0a764fb2ba9551a8c158c012072bc96 11887 qemu_10.0.2+ds-2+deb13u1~bpo12+1.dsc
 0901da33844a331bf8b3602b9c1fbd178e60b737c8e3ade678255bd090c9b9f1 39449628 qemu_10.0.2+ds.orig.tar.xz
 dd04c78b36212c1b463595028c234e8c18241ef25923e7a135671f76d8ec5547 139220 qemu_10.0.2+ds-2+deb13u1~bpo12+1.debian.tar.xz
Directory: pool/main/q/qemu

Package: qemu-web-desktop
Version: 25.1-1~bpo12+1
Directory: pool/main/q/qemu-web-desktop

Package: qemu
Version: 1:9.2.0+ds-1~bpo12+1
Checksums-Sha256:
 1111111111111111111111111111111111111111111111111111111111111111 100 qemu_9.2.0+ds.orig.tar.xz
Directory: pool/main/q/qemu
"""


def test_the_sources_index_gives_each_qemu_version_with_its_upstream_tarball() -> None:
    entries = qemusource.parse_sources(SOURCES)
    assert [e.version for e in entries] == ["1:10.0.2+ds-2+deb13u1~bpo12+1", "1:9.2.0+ds-1~bpo12+1"]
    orig = entries[0].orig
    assert orig.name == "qemu_10.0.2+ds.orig.tar.xz" and orig.size == 39449628
    assert orig.sha256.startswith("0901da33") and entries[0].directory == "pool/main/q/qemu"


def test_the_host_s_qemu_version_is_built_when_the_suite_has_it_else_the_newest() -> None:
    entries = qemusource.parse_sources(SOURCES)
    assert qemusource.choose(entries, "1:9.2.0+ds-1~bpo12+1").version == "1:9.2.0+ds-1~bpo12+1"
    assert qemusource.choose(entries, "1:8.0+gone").version.startswith("1:10.0.2")
    assert qemusource.choose(entries, None).version.startswith("1:10.0.2")
    with pytest.raises(EnvironmentProblem, match="lists no source of qemu"):
        qemusource.choose([], None)


def test_an_unreachable_mirror_is_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("apt-get") is None or not qemusource.APT_HELPER.is_file():
        pytest.skip("not a Debian host: no apt-get")
    monkeypatch.setattr(qemusource, "MIRROR", "http://127.0.0.1:9/debian")
    with pytest.raises(EnvironmentProblem) as caught:
        qemusource.fetch(tmp_path, None, lambda _: None)
    assert "127.0.0.1:9" in str(caught.value) and "\n" not in str(caught.value)


LDD = """\
\tlinux-vdso.so.1 (0x00007ffd2d3f1000)
\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007fa05b23d000)
\tlibcapstone.so.4 => /lib/x86_64-linux-gnu/libcapstone.so.4 (0x00007fa05a400000)
\tlibglib-2.0.so.0 => /lib/x86_64-linux-gnu/libglib-2.0.so.0 (0x00007fa05aac7000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fa05a21e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007fa05b26f000)
"""


def test_ldd_gives_the_loader_and_every_library_by_name() -> None:
    loader, libraries = counting.parse_ldd(LDD)
    assert loader == Path("/lib64/ld-linux-x86-64.so.2")
    assert libraries == {
        "libz.so.1": Path("/lib/x86_64-linux-gnu/libz.so.1"),
        "libcapstone.so.4": Path("/lib/x86_64-linux-gnu/libcapstone.so.4"),
        "libglib-2.0.so.0": Path("/lib/x86_64-linux-gnu/libglib-2.0.so.0"),
        "libc.so.6": Path("/lib/x86_64-linux-gnu/libc.so.6"),
    }
    with pytest.raises(EnvironmentProblem, match=r"libcapstone\.so\.4"):
        counting.parse_ldd("\tlibcapstone.so.4 => not found\n")


def test_a_bundle_holds_the_loader_and_every_library_its_binaries_need(tmp_path: Path) -> None:
    python = Path(os.path.realpath(sys.executable))
    loader = counting.assemble_libraries(tmp_path, [python])
    assert (tmp_path / loader).is_file() and loader.startswith("ld-linux")
    _, needed = counting.parse_ldd(counting._ldd(python))
    assert all((tmp_path / "lib" / name).is_file() for name in needed)
    # glibc loads libgcc_s when a thread exits; ldd does not list it, QEMU needs it all the same
    assert (tmp_path / "lib" / "libgcc_s.so.1").is_file()


def _fake_bundle(cache: Path, *, version: str, source: str, plugin: str | None = None, recipe: str = "") -> Path:
    plugin = plugin or counting.plugin_sha256()
    folder = cache / counting.CACHE_FOLDER / counting.bundle_key(source, plugin)
    folder.mkdir(parents=True)
    for name in ["ld-linux-x86-64.so.2", counting.PLUGIN_NAME, *counting.EMULATORS.values()]:
        (folder / name).write_bytes(b"\x7fELF")
    manifest = {
        "qemu_version": version,
        "source_sha256": source,
        "plugin_sha256": plugin,
        "recipe": recipe or counting.RECIPE,
        "build_seconds": 123.4,
        "loader": "ld-linux-x86-64.so.2",
        "reserves": ["aarch64", "x86_64"],
    }
    (folder / counting.MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_a_bundle_is_found_without_the_network_for_the_current_plugin_and_the_host_s_qemu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert counting.find(tmp_path) is None
    monkeypatch.setattr(counting, "host_qemu_version", lambda: "1:10.0.2")
    _fake_bundle(tmp_path, version="1:9.2.0", source="a" * 64)
    ours = _fake_bundle(tmp_path, version="1:10.0.2", source="b" * 64)
    found = counting.find(tmp_path)
    assert found is not None and found.bundle == ours and found.build_seconds == 123.4
    monkeypatch.setattr(counting, "host_qemu_version", lambda: None)
    assert counting.find(tmp_path) is not None  # no host QEMU: any bundle of this plugin


@pytest.mark.parametrize("stale", ["plugin", "recipe", "incomplete"])
def test_a_bundle_of_another_plugin_recipe_or_missing_files_is_not_used(tmp_path: Path, stale: str) -> None:
    folder = _fake_bundle(
        tmp_path,
        version="1:10.0.2",
        source="c" * 64,
        plugin="d" * 64 if stale == "plugin" else None,
        recipe="0" if stale == "recipe" else "",
    )
    if stale == "incomplete":
        (folder / "qemu-aarch64").unlink()
    assert counting.find(tmp_path) is None


def test_the_key_changes_with_the_qemu_source_and_with_the_plugin() -> None:
    key = counting.bundle_key("a" * 64, "b" * 64)
    assert key != counting.bundle_key("c" * 64, "b" * 64) and key != counting.bundle_key("a" * 64, "d" * 64)
    assert len(key) == 16


def test_the_entrypoint_runs_the_bundle_s_qemu_through_its_loader_with_the_plugin(tmp_path: Path) -> None:
    qemu = fake_counting(tmp_path)
    assert qemu.command("aarch64", "neoverse-n1", "/farm/out/c.jsonl", root="/farm-count") == [
        "/farm-count/ld-linux-x86-64.so.2",
        "--library-path",
        "/farm-count/lib",
        "/farm-count/qemu-aarch64",
        "-R",
        "0x10000000000",
        "-cpu",
        "neoverse-n1",
        "-plugin",
        "/farm-count/libinsncount.so,out=/farm/out/c.jsonl",
    ]
    assert qemu.command("x86_64", "Haswell", "/o")[0] == f"{tmp_path}/ld-linux-x86-64.so.2"
    # A bundle whose x86_64 emulator was built without farm's change runs that guest unreserved.
    assert "-R" in qemu.command("x86_64", "Haswell", "/o")
    assert "-R" not in fake_counting(tmp_path, reserves=("aarch64",)).command("x86_64", "Haswell", "/o")
    with pytest.raises(ValueError, match="riscv64"):
        qemu.command("riscv64", "rv64", "/o")


def test_the_counts_file_is_read_line_by_line_and_checked(tmp_path: Path) -> None:
    counts = dict.fromkeys(CLASSES, 2)
    path = tmp_path / "c.jsonl"
    path.write_text(
        json.dumps({"id": 3, "counts": counts, "total": 14})
        + "\n"
        + json.dumps({"id": 4, "counts": {**counts, "load": 5}, "total": 17})
        + "\n"
    )
    read = counting.read_counts(path)
    assert [(m.id, m.total, m.counts["load"]) for m in read] == [(3, 14, 2), (4, 17, 5)]
    path.write_text('{"id": 9, "error": "end without begin"}\n')
    with pytest.raises(ValueError, match="mark 9: end without begin"):
        counting.read_counts(path)
    path.write_text(json.dumps({"id": 1, "counts": {"load": 1}, "total": 1}) + "\n")
    with pytest.raises(ValueError, match="farm's classes"):
        counting.read_counts(path)


def test_missing_build_packages_without_root_say_how_to_install_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemubuild, "missing_packages", lambda: ["libcapstone-dev", "meson"])
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(EnvironmentProblem) as caught:
        qemubuild.ensure_build_deps(lambda _: None)
    text = str(caught.value)
    assert "libcapstone-dev, meson" in text and "farm doctor --fix --estimates" in text and "\n" not in text


def test_a_failed_build_step_names_its_cause_and_keeps_the_log(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("")
    with pytest.raises(EnvironmentProblem) as caught:
        qemubuild._logged(
            ["sh", "-c", "echo 'ERROR: Dependency glib-2.0 not found'; exit 1"], tmp_path, log, "configuring"
        )
    text = str(caught.value)
    assert "configuring QEMU" not in text and "glib-2.0 not found" in text and str(log) in text
    assert "glib-2.0 not found" in log.read_text()


def test_qemu_s_test_only_python_requirement_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "pythondeps.toml").write_text('[meson]\nmeson = { accepted = ">=1.5.0" }\npycotap = { x = 1 }\n')
    qemubuild._drop_test_only_requirements(tmp_path)
    assert (tmp_path / "pythondeps.toml").read_text() == '[meson]\nmeson = { accepted = ">=1.5.0" }\n'


def test_doctor_says_whether_the_counting_qemu_is_built_and_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from farm.controller import doctor

    missing = doctor._estimates(tmp_path)
    assert missing.level == "warn" and missing.fix is not None and "farm doctor --fix --estimates" in missing.fix
    monkeypatch.setattr(counting, "host_qemu_version", lambda: None)
    folder = _fake_bundle(tmp_path, version="1:10.0.2", source="e" * 64)
    there = doctor._estimates(tmp_path)
    assert there.level == "ok" and str(folder) in there.detail and "built in 123 s" in there.detail


QEMU_10_ELFLOAD = """\
static bool init_guest_commpage(void)
{
    if (reserved_va != 0 &&
        TARGET_VSYSCALL_PAGE + TARGET_PAGE_SIZE - 1 > reserved_va) {
        error_report("Cannot allocate vsyscall page");
        exit(EXIT_FAILURE);
    }
    page_set_flags(TARGET_VSYSCALL_PAGE,
                   TARGET_VSYSCALL_PAGE | ~TARGET_PAGE_MASK,
                   PAGE_EXEC | PAGE_VALID);
    return true;
}
"""


def test_the_x86_64_emulator_is_built_to_run_reserved_without_the_vsyscall_page(tmp_path: Path) -> None:
    elfload = tmp_path / "linux-user" / "elfload.c"
    elfload.parent.mkdir()
    elfload.write_text(QEMU_10_ELFLOAD)
    assert qemubuild.reserve_without_vsyscall(tmp_path)
    patched = elfload.read_text()
    assert "exit(EXIT_FAILURE)" not in patched and "Cannot allocate" not in patched
    assert qemubuild.VSYSCALL_SKIPPED in patched and "page_set_flags" in patched
    # A QEMU whose source changed: nothing is touched, and x86_64 guests run unreserved.
    assert not qemubuild.reserve_without_vsyscall(tmp_path)
