"""farm's artifact cache: the prepare stage's output (artifacts/<variant>.onnx and prepare.json), one folder per key
(farm/controller/artifactkey.py), so a later run on the same model, data, settings and toolchain quantizes nothing.

An entry is written into a hidden sibling and renamed into place, so a killed run never leaves half of one (the
next run that makes the same key removes what it left); it holds
``entry.json`` (what made it, and every file with its size) beside ``artifacts/``. An entry that does not read back
whole (a corrupt prepare.json, a file missing or cut short) is a miss with a warning and is removed, so the run
makes and stores it again. Nothing here raises for the cache itself: a root that cannot be written or read is a
warning, and the run goes on without the cache.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from farm.controller.artifactkey import short
from farm.host.files import LineSink, exclusive

ARTIFACTS_DIR = "artifacts"
ENTRY_FILE = "entry.json"
PREPARE_FILE = "prepare.json"
ENTRY_SCHEMA = "farm.artifact-cache/1"
PREPARE_SCHEMA = "farm.prepare/1"
LOCKS_DIR = ".locks"
# A quantizer that ran out of memory failed for the machine, not for the model: such a record is not kept.
_MEMORY_WORDS = ("MemoryError", "Unable to allocate", "bad_alloc", "out of memory")


@dataclass(frozen=True, kw_only=True)
class Hit:
    """An entry that read back whole: its artifacts folder and what prepare said when it made them."""

    key: str
    folder: Path
    prepared: dict[str, Any]
    # The target whose prepare job made the entry, and when.
    maker: str
    created: str


class ArtifactCache:
    """The entries under ``root``; every method returns a warning where a fault of the cache costs it a hit or a
    store, rather than raising."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def lookup(self, key: str, candidates: Sequence[str]) -> tuple[Hit | None, str | None]:
        """The entry of ``key`` if there is a whole one; else None, with a warning when one was there but damaged
        (it is removed, so this run's store replaces it) or the cache cannot be read."""
        folder = self.root / key
        try:
            if not folder.is_dir():
                return None, None
        except OSError as exc:
            return None, f"the artifact cache {self.root} cannot be read ({_said(exc)}), so it is not used"
        try:
            return _read_entry(key, folder, candidates), None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._discard(folder)
            return None, (
                f"the artifact cache's entry {folder} is damaged ({_said(exc)}), so it was removed and the int8 "
                "artifacts are made again"
            )

    @contextmanager
    def making(self, key: str, *, on_wait: LineSink | None = None) -> Iterator[str | None]:
        """Hold the key's lock while its artifacts are made, so a second farm run on the same work waits and then
        finds them stored rather than making them too; yields a warning (no lock, so no cache) when the root cannot
        be written."""
        with ExitStack() as held:
            problem = None
            try:
                lock = self.root / LOCKS_DIR / f"{key}.lock"
                held.enter_context(exclusive(lock, waiting=f"making the int8 artifacts {short(key)}", on_wait=on_wait))
            except OSError as exc:
                problem = self._unwritable(exc)
            else:
                # With the lock held, a hidden sibling of this key is what a killed run left: no one writes it now.
                for leftover in self.root.glob(f".{key}-*"):
                    shutil.rmtree(leftover, ignore_errors=True)
            yield problem

    def store(
        self, key: str, artifacts: Path, prepared: Mapping[str, Any], candidates: Sequence[str], *, maker: str
    ) -> str | None:
        """Keep ``artifacts`` (the prepare job's folder) under ``key`` when ``prepared`` is a finished record of
        every candidate; a warning when the root cannot be written."""
        if not finished(prepared, candidates):
            return None
        staging: Path | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))
            shutil.copytree(artifacts, staging / ARTIFACTS_DIR)
            files = {p.name: p.stat().st_size for p in sorted((staging / ARTIFACTS_DIR).iterdir())}
            entry = {"schema": ENTRY_SCHEMA, "key": key, "maker": maker, "created": _now(), "files": files}
            (staging / ENTRY_FILE).write_text(json.dumps(entry, indent=2))
            if (self.root / key).exists():
                return None  # another run stored the same work meanwhile: its entry is as good
            staging.rename(self.root / key)
        except OSError as exc:
            return self._unwritable(exc)
        finally:
            if staging is not None and staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return None

    def has(self, key: str) -> bool:
        """Whether an entry of ``key`` is in place (read back whole or not)."""
        try:
            return (self.root / key / ENTRY_FILE).is_file()
        except OSError:
            return False

    def _unwritable(self, exc: OSError) -> str:
        # One wording whichever file failed: the report lists a warning once.
        return (
            f"the artifact cache {self.root} cannot be written ({exc.strerror or _said(exc)}), so this run's int8 "
            "artifacts are not "
            f"kept for the next (make it writable, set FARM_ARTIFACT_CACHE_DIR to a folder that is, or pass --no-cache)"
        )

    def _discard(self, folder: Path) -> None:
        # Renamed away first, so no other run reads it half removed.
        try:
            doomed = Path(tempfile.mkdtemp(prefix=f".{folder.name}-bad-", dir=self.root))
            folder.rename(doomed / folder.name)
        except OSError:
            doomed = folder
        shutil.rmtree(doomed, ignore_errors=True)


def deliver(hit: Hit, destination: Path) -> None:
    """The entry's artifacts as ``destination``: hard links where the cache shares the run's filesystem, else
    copies. External data files are always copied: onnx refuses a data file with several links."""
    destination.mkdir()
    for source in sorted(hit.folder.iterdir()):
        target = destination / source.name
        if source.suffix in (".onnx", ".json"):
            try:
                os.link(source, target)
                continue
            except OSError:
                pass  # another filesystem, or links not allowed there
        shutil.copyfile(source, target)


def finished(prepared: Mapping[str, Any], candidates: Sequence[str]) -> bool:
    """Whether prepare.json records every candidate's outcome as one the same work would give again: made, or
    failed for a reason of the model or the toolchain (a quantizer that refuses an op fails the same way next time,
    and making it again would only cost time). A candidate whose quantizing was cut off (the job died there) or ran
    out of memory is not finished."""
    if prepared.get("schema") != PREPARE_SCHEMA:
        return False
    variants = prepared.get("variants")
    if not isinstance(variants, Mapping):
        return False
    for name in candidates:
        record = variants.get(name)
        if not isinstance(record, Mapping) or record.get("status") not in ("ok", "failed"):
            return False
        error = str(record.get("error") or "")
        if record["status"] == "failed" and (error.startswith("the job ended") or _for_memory(error)):
            return False
    return True


def _read_entry(key: str, folder: Path, candidates: Sequence[str]) -> Hit:
    """The entry, checked: raises ValueError (or OSError, KeyError, TypeError) saying what is wrong with it."""
    entry = json.loads((folder / ENTRY_FILE).read_text(encoding="utf-8"))
    if not isinstance(entry, dict) or entry.get("schema") != ENTRY_SCHEMA or entry.get("key") != key:
        raise ValueError(f"{ENTRY_FILE} is not an entry of this key")
    artifacts = folder / ARTIFACTS_DIR
    for name, size in dict(entry["files"]).items():
        found = artifacts / name
        if not found.is_file():
            raise ValueError(f"{ARTIFACTS_DIR}/{name} is missing")
        if found.stat().st_size != size:
            raise ValueError(f"{ARTIFACTS_DIR}/{name} has {found.stat().st_size} bytes, not {size}")
    prepared = json.loads((artifacts / PREPARE_FILE).read_text(encoding="utf-8"))
    if not isinstance(prepared, dict) or not finished(prepared, candidates):
        raise ValueError(f"{PREPARE_FILE} is not a finished record of every candidate")
    if not all(isinstance(w, str) for w in prepared.get("warnings", [])):
        raise ValueError(f"{PREPARE_FILE}'s warnings are not a list of lines")
    for name, record in prepared["variants"].items():
        if record["status"] == "ok" and f"{name}.onnx" not in entry["files"]:
            raise ValueError(f"{PREPARE_FILE} says {name} was made, but its model is not in the entry")
    return Hit(key=key, folder=artifacts, prepared=prepared, maker=str(entry["maker"]), created=str(entry["created"]))


def _for_memory(error: str) -> bool:
    return any(word in error for word in _MEMORY_WORDS)


def _said(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
