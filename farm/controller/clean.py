"""What farm leaves on a host, and removing it: ``farm clean`` and the orphan sweep every command makes.

One plan serves both ``--dry-run`` and the removal, so the list printed is the list removed. What a running farm
process still uses (its containers, its run folder) is never planned, only reported as kept.
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from farm.backend.engine import Engine
from farm.controller.artifactstore import LOCKS_DIR as ARTIFACT_LOCKS
from farm.host.files import LOCKS_DIR
from farm.host.owner import is_gone, this_process
from farm.targets.config import Config

RUNS_DIR = "runs"
# A run folder names the process that made it, as containers do with their label.
OWNER_FILE = "owner"
IMAGE_LABELS = ("farm.hash", "farm.base")
Kind = Literal["container", "run folder", "image", "cache"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Item:
    kind: Kind
    # What removes it: a container or image id, a path.
    ref: str
    name: str
    size_bytes: int | None
    why: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    items: tuple[Item, ...]
    # What stays, and why (e.g. a container a running farm process uses).
    kept: tuple[str, ...] = ()

    @property
    def size_bytes(self) -> int:
        return sum(i.size_bytes or 0 for i in self.items)


def mark_run_folder(folder: Path) -> None:
    (folder / OWNER_FILE).write_text(this_process() + "\n")


def plan(engine: Engine, config: Config, *, images: bool = False, cache: bool = False, artifacts: bool = False) -> Plan:
    """With no flag: what farm processes that are gone left behind, their containers and run folders. ``cache``:
    farm's caches too, the artifact cache among them; ``artifacts``: the artifact cache alone."""
    items, kept = _orphans(engine, config, unknown_too=cache)
    if images:
        seen: dict[str, Item] = {}
        for label in IMAGE_LABELS:
            for image in engine.images_labelled(label):
                name = ", ".join(image.tags) or image.id[:19]
                seen.setdefault(
                    image.id,
                    Item(
                        kind="image",
                        ref=image.id,
                        name=name,
                        size_bytes=image.size_bytes,
                        why=f"farm's {'base' if label == 'farm.base' else 'target'} image",
                    ),
                )
        items += sorted(seen.values(), key=lambda i: i.name)
    if cache and config.cache_dir.is_dir():
        for entry in sorted(config.cache_dir.iterdir()):
            if entry.name not in (RUNS_DIR, LOCKS_DIR) and entry != config.artifact_cache_dir:
                items.append(
                    Item(kind="cache", ref=str(entry), name=str(entry), size_bytes=disk_size(entry), why="farm's cache")
                )
    if (cache or artifacts) and config.artifact_cache_dir.is_dir():
        folder = config.artifact_cache_dir
        if making_artifacts(folder):
            kept.append(f"cache {folder}: a running farm process is making int8 artifacts into it")
        else:
            why = f"farm's cache of int8 artifacts ({len(artifact_entries(folder))} prepare stage(s))"
            items.append(Item(kind="cache", ref=str(folder), name=str(folder), size_bytes=disk_size(folder), why=why))
    return Plan(items=tuple(items), kept=tuple(kept))


def artifact_entries(folder: Path) -> list[Path]:
    """The artifact cache's entries (farm/controller/artifactstore.py), without what is being written or its locks."""
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []


def making_artifacts(folder: Path) -> bool:
    """Whether a farm process holds the lock of an entry it is making (its flock, which dies with the process)."""
    for lock in (folder / ARTIFACT_LOCKS).glob("*.lock"):
        try:
            with lock.open("rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            continue
    return False


def _orphans(engine: Engine, config: Config, *, unknown_too: bool) -> tuple[list[Item], list[str]]:
    items: list[Item] = []
    kept: list[str] = []
    for container in engine.farm_containers():
        gone = None if container.owner is None else is_gone(container.owner)
        label = f"{container.name} ({container.image}, {container.state})"
        if gone:
            items.append(
                Item(
                    kind="container",
                    ref=container.id,
                    name=label,
                    size_bytes=None,
                    why="the farm process that started it is gone",
                )
            )
        elif container.owner is None:
            # Started by a farm from before owner labels: nothing can still be waiting for it.
            items.append(
                Item(
                    kind="container",
                    ref=container.id,
                    name=label,
                    size_bytes=None,
                    why="started by an earlier farm, which recorded no owner",
                )
            )
        else:
            why = "another machine's farm process" if gone is None else "a running farm process"
            kept.append(f"container {label}: used by {why} ({container.owner})")
    runs = config.cache_dir / RUNS_DIR
    for folder in sorted(runs.iterdir()) if runs.is_dir() else ():
        owner = folder / OWNER_FILE
        state = is_gone(owner.read_text().strip()) if owner.is_file() else None
        if state or (state is None and unknown_too):
            why = "the farm process that made it is gone" if state else "a run folder of unknown owner"
            items.append(
                Item(kind="run folder", ref=str(folder), name=str(folder), size_bytes=disk_size(folder), why=why)
            )
        elif state is False:
            kept.append(f"run folder {folder}: a running farm process uses it")
    return items, kept


def execute(engine: Engine, items: Iterable[Item]) -> None:
    """Remove every item."""
    for item in items:
        if item.kind == "container":
            engine.remove_container(item.ref)
        elif item.kind == "image":
            engine.remove_image(item.ref)  # by id, with force: every tag of it goes
        else:
            path = Path(item.ref)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def disk_size(path: Path) -> int:
    """The bytes of the files under ``path`` (or of ``path``)."""
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for entry in path.rglob("*"):
        try:
            if entry.is_file() and not entry.is_symlink():
                total += entry.lstat().st_size
        except OSError:
            continue
    return total
