"""Debian's source of QEMU, fetched through apt without touching the system's apt configuration.

Debian's qemu-user-static (bookworm-backports) is built without TCG plugins, so farm builds the same QEMU from
Debian's source package. A private sources list (``deb-src`` for bookworm-backports) and private package lists in a
scratch folder keep the host's apt untouched; apt verifies the signed index, and the upstream tarball is fetched
with apt's own helper against the SHA-256 the index gives. Only the ``.orig`` tarball is used: it is QEMU's release
with the firmware blobs removed (``+ds``), and the Debian patches concern packaging and system emulation, which farm
does not build.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from farm.errors import EnvironmentProblem
from farm.host.files import LineSink, file_sha256

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm-backports"
PACKAGE = "qemu"
APT_HELPER = Path("/usr/lib/apt/apt-helper")


@dataclass(frozen=True, kw_only=True)
class SourceFile:
    name: str
    sha256: str
    size: int


@dataclass(frozen=True, kw_only=True)
class SourceEntry:
    """One version of a source package as a Sources index lists it."""

    package: str
    version: str
    directory: str
    files: tuple[SourceFile, ...]

    @property
    def orig(self) -> SourceFile:
        for f in self.files:
            if ".orig.tar." in f.name:
                return f
        raise EnvironmentProblem(
            f"Debian's source of {self.package} {self.version} lists no upstream (.orig) tarball",
            fix="report this to farm's maintainers",
        )


@dataclass(frozen=True, kw_only=True)
class FetchedSource:
    entry: SourceEntry
    tarball: Path


def parse_sources(text: str, package: str = PACKAGE) -> list[SourceEntry]:
    """The stanzas of ``package`` in a Debian Sources index (deb822: stanzas split by blank lines, continuation
    lines start with a space)."""
    entries = []
    for stanza in text.split("\n\n"):
        fields = _fields(stanza)
        if fields.get("Package") != package or "Version" not in fields:
            continue
        files = []
        for line in fields.get("Checksums-Sha256", "").splitlines():
            parts = line.split()
            if len(parts) == 3:
                files.append(SourceFile(sha256=parts[0], size=int(parts[1]), name=parts[2]))
        entries.append(
            SourceEntry(
                package=package, version=fields["Version"], directory=fields.get("Directory", ""), files=tuple(files)
            )
        )
    return entries


def _fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in stanza.splitlines():
        if line.startswith((" ", "\t")) and key is not None:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


def choose(entries: Sequence[SourceEntry], wanted: str | None) -> SourceEntry:
    """The entry of version ``wanted`` (the host's qemu-user-static, so that counting and timing run the same
    QEMU), or the newest when nothing is wanted or the wanted version is gone from the suite."""
    if not entries:
        raise EnvironmentProblem(
            f"Debian's {SUITE} suite lists no source of {PACKAGE}",
            fix=f"check that {MIRROR} is reachable and still carries {SUITE}",
        )
    for entry in entries:
        if entry.version == wanted:
            return entry
    return max(entries, key=lambda e: _version_key(e.version))


def _version_key(version: str) -> tuple[int, tuple[int, ...]]:
    # Good enough to order the few versions one suite carries at once (10.0 after 9.2); dpkg decides installs.
    epoch, _, rest = version.partition(":") if ":" in version else ("0", "", version)
    return (int(epoch) if epoch.isdigit() else 0, tuple(int(n) for n in re.findall(r"\d+", rest)))


def fetch(work: Path, wanted: str | None, on_line: LineSink) -> FetchedSource:
    """Download the upstream tarball of Debian's QEMU into ``work``, verified against the signed index."""
    apt = work / "apt"
    lists = apt / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (apt / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    sources_list = apt / "sources.list"
    sources_list.write_text(f"deb-src {MIRROR} {SUITE} main\n")
    options = [
        "-o",
        f"Dir::Etc::SourceList={sources_list}",
        "-o",
        "Dir::Etc::SourceParts=/nonexistent",
        "-o",
        f"Dir::State::Lists={lists}",
        "-o",
        f"Dir::Cache={apt / 'cache'}",
        "-o",
        "Debug::NoLocking=1",
    ]
    on_line(f"reading Debian's {SUITE} source index")
    _run(
        ["apt-get", *options, "update", "-qq"],
        doing=f"reading the source index of {SUITE}",
        fix=f"check that {MIRROR} is reachable from this host",
    )
    index = sorted(lists.glob("*_source_Sources*"))
    if not index:
        raise EnvironmentProblem(
            f"apt fetched no source index for {SUITE} into {lists}", fix=f"check that {MIRROR} is reachable"
        )
    text = _run([str(APT_HELPER), "cat-file", str(index[0])], doing="reading the source index", fix="")
    entry = choose(parse_sources(text), wanted)
    orig = entry.orig
    tarball = work / orig.name
    url = f"{MIRROR}/{entry.directory}/{orig.name}"
    on_line(f"downloading {orig.name} ({orig.size / 1e6:.1f} MB)")
    _run(
        [str(APT_HELPER), "download-file", url, str(tarball), f"SHA256:{orig.sha256}"],
        doing=f"downloading {url}",
        fix=f"check that {MIRROR} is reachable from this host",
    )
    if file_sha256(tarball) != orig.sha256:  # apt-helper checks it too; a truncated file must never be built
        raise EnvironmentProblem(f"{tarball} does not match the SHA-256 Debian's index gives", fix="run it again")
    return FetchedSource(entry=entry, tarball=tarball)


def _run(command: list[str], *, doing: str, fix: str, env: Mapping[str, str] | None = None) -> str:
    if shutil.which(command[0]) is None and not Path(command[0]).is_file():
        raise EnvironmentProblem(f"{doing} needs {command[0]}, which is not installed", fix="install apt")
    result = subprocess.run(command, capture_output=True, text=True, env=dict(env) if env is not None else None)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        errors = [ln for ln in lines if ln.startswith("E:")] or lines[-1:] or ["no output"]
        raise EnvironmentProblem(f"{doing} failed: {errors[0]}", fix=fix or None)
    return result.stdout
