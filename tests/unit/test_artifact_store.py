"""farm's artifact cache on disk (farm/controller/artifactstore.py): whole entries or none, damaged ones are misses
with a warning, and a cache that cannot be written costs the run its cache, never the run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from farm.controller.artifactstore import ArtifactCache, deliver, finished

KEY = "0123456789abcdef" * 4
CANDIDATES = ("s8s8-qdq", "u8s8-qdq", "s8s8-qdq-pc")


def prepared(**variants: dict[str, Any]) -> dict[str, Any]:
    made = {name: {"status": "ok", "error": None, "quantization": None} for name in CANDIDATES}
    return {
        "schema": "farm.prepare/1",
        "warnings": ["pre-processing skipped symbolic shapes"],
        "variants": made | variants,
    }


def artifacts(folder: Path, record: dict[str, Any]) -> Path:
    """A prepare job's artifacts folder: a model per variant made, one with external data, and prepare.json."""
    folder.mkdir(parents=True)
    for name, entry in record["variants"].items():
        if entry["status"] == "ok":
            (folder / f"{name}.onnx").write_bytes(name.encode() * 100)
    (folder / "s8s8-qdq.onnx.data").write_bytes(b"w" * 4096)
    (folder / "prepare.json").write_text(json.dumps(record))
    return folder


def stored(tmp_path: Path, record: dict[str, Any] | None = None) -> ArtifactCache:
    cache = ArtifactCache(tmp_path / "cache")
    record = record or prepared()
    assert cache.store(KEY, artifacts(tmp_path / "job", record), record, CANDIDATES, maker="x86-avx2") is None
    return cache


def test_a_stored_entry_reads_back_whole_and_is_delivered_as_links_and_copies(tmp_path: Path) -> None:
    cache = stored(tmp_path)
    hit, warning = cache.lookup(KEY, CANDIDATES)
    assert warning is None and hit is not None
    assert hit.maker == "x86-avx2" and hit.prepared == prepared()
    into = tmp_path / "run" / "in" / "artifacts"
    into.parent.mkdir(parents=True)
    deliver(hit, into)
    assert sorted(p.name for p in into.iterdir()) == sorted(p.name for p in hit.folder.iterdir())
    assert (into / "u8s8-qdq.onnx").read_bytes() == b"u8s8-qdq" * 100
    # Models and prepare.json are links to the entry (the same filesystem); external data is copied, since onnx
    # refuses a data file with several links.
    assert os.path.samefile(into / "u8s8-qdq.onnx", hit.folder / "u8s8-qdq.onnx")
    assert os.stat(into / "s8s8-qdq.onnx.data").st_nlink == 1


def test_no_entry_is_a_miss_without_a_warning(tmp_path: Path) -> None:
    assert ArtifactCache(tmp_path / "nowhere").lookup(KEY, CANDIDATES) == (None, None)


def test_a_store_cut_off_midway_leaves_no_entry_and_no_half_of_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = prepared()
    job = artifacts(tmp_path / "job", record)
    cache = ArtifactCache(tmp_path / "cache")

    def copy_half(source: Path, destination: Path) -> None:
        destination.mkdir()
        shutil.copyfile(source / "u8s8-qdq.onnx", destination / "u8s8-qdq.onnx")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copytree", copy_half)
    warning = cache.store(KEY, job, record, CANDIDATES, maker="x86-avx2")
    assert warning is not None and "No space left on device" in warning and "cannot be written" in warning
    assert list(cache.root.iterdir()) == []  # the hidden staging folder went too
    assert cache.lookup(KEY, CANDIDATES) == (None, None)


def test_a_staging_folder_a_killed_run_left_is_no_entry_and_the_next_maker_removes_it(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    left = cache.root / f".{KEY}-x1y2z3"
    (left / "artifacts").mkdir(parents=True)
    (cache.root / f".{'9' * 64}-a1b2c3").mkdir()  # another key's: its own maker's to remove
    assert cache.lookup(KEY, CANDIDATES) == (None, None)
    record = prepared()
    with cache.making(KEY):
        assert not left.exists()
        assert cache.store(KEY, artifacts(tmp_path / "job", record), record, CANDIDATES, maker="x86-avx2") is None
    assert cache.lookup(KEY, CANDIDATES)[0] is not None
    assert sorted(p.name for p in cache.root.iterdir()) == [f".{'9' * 64}-a1b2c3", ".locks", KEY]


def garble(path: Path) -> None:
    """Not JSON any more, at the same size (so only reading it tells)."""
    path.write_text("{" + "x" * (path.stat().st_size - 1))


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda entry: garble(entry / "artifacts" / "prepare.json"), "Expecting property name"),
        (lambda entry: (entry / "artifacts" / "u8s8-qdq.onnx").unlink(), "artifacts/u8s8-qdq.onnx is missing"),
        (lambda entry: (entry / "artifacts" / "u8s8-qdq.onnx").write_bytes(b"cut"), "has 3 bytes, not 800"),
        (lambda entry: (entry / "entry.json").write_text("[]"), "entry.json is not an entry of this key"),
        (lambda entry: (entry / "entry.json").unlink(), "No such file or directory"),
    ],
    ids=["corrupt-prepare-json", "missing-model", "cut-short", "foreign-entry-json", "no-entry-json"],
)
def test_a_damaged_entry_is_a_miss_with_a_warning_and_is_removed(tmp_path: Path, damage: Any, said: str) -> None:
    cache = stored(tmp_path)
    damage(cache.root / KEY)
    hit, warning = cache.lookup(KEY, CANDIDATES)
    assert hit is None and warning is not None
    assert said in warning and str(cache.root / KEY) in warning and "made again" in warning
    assert not (cache.root / KEY).exists()
    # The run's store then puts a whole entry in its place.
    record = prepared()
    assert cache.store(KEY, artifacts(tmp_path / "again", record), record, CANDIDATES, maker="x86-avx2") is None
    assert cache.lookup(KEY, CANDIDATES)[0] is not None


def test_a_record_that_says_a_variant_was_made_whose_model_is_not_there_is_damaged(tmp_path: Path) -> None:
    cache = stored(tmp_path)
    entry = cache.root / KEY
    (entry / "artifacts" / "u8s8-qdq.onnx").unlink()
    files = json.loads((entry / "entry.json").read_text())
    del files["files"]["u8s8-qdq.onnx"]
    (entry / "entry.json").write_text(json.dumps(files))
    hit, warning = cache.lookup(KEY, CANDIDATES)
    assert hit is None and warning is not None and "u8s8-qdq was made, but its model is not in the entry" in warning


def test_a_failed_candidate_is_part_of_a_finished_record_but_a_cut_off_or_memory_one_is_not() -> None:
    refused = {"status": "failed", "error": "opset 13 conversion failed: Unsupported op", "quantization": None}
    assert finished(prepared(**{"s8s8-qdq-pc": refused}), CANDIDATES)
    cut_off = {"status": "failed", "error": "the job ended while quantizing this variant (it crashed or was killed)"}
    assert not finished(prepared(**{"s8s8-qdq-pc": cut_off}), CANDIDATES)
    memory = {"status": "failed", "error": "Unable to allocate 3.1 GiB for an array with shape (8, 100000000)"}
    assert not finished(prepared(**{"s8s8-qdq-pc": memory}), CANDIDATES)
    assert not finished(prepared(), (*CANDIDATES, "u8u8-qdq"))  # a candidate it never reached
    assert not finished({**prepared(), "schema": "farm.prepare/0"}, CANDIDATES)


def test_an_unfinished_record_is_not_stored(tmp_path: Path) -> None:
    cut_off = {"status": "failed", "error": "the job ended while quantizing this variant (it crashed or was killed)"}
    record = prepared(**{"s8s8-qdq-pc": cut_off})
    cache = ArtifactCache(tmp_path / "cache")
    assert cache.store(KEY, artifacts(tmp_path / "job", record), record, CANDIDATES, maker="x86-avx2") is None
    assert not cache.has(KEY) and cache.lookup(KEY, CANDIDATES) == (None, None)


def test_a_root_that_cannot_be_written_is_a_warning_not_an_error(tmp_path: Path) -> None:
    # A file where the root's parent folder should be: mkdir fails whoever runs the test (root ignores modes).
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    cache = ArtifactCache(blocker / "artifacts")
    record = prepared()
    warning = cache.store(KEY, artifacts(tmp_path / "job", record), record, CANDIDATES, maker="x86-avx2")
    assert warning is not None and str(cache.root) in warning and "FARM_ARTIFACT_CACHE_DIR" in warning
    assert cache.lookup(KEY, CANDIDATES) == (None, None)
    with cache.making(KEY) as problem:
        assert problem == warning


def test_a_second_maker_waits_for_the_first_one_s_lock_and_says_so(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    second = (
        "import sys; from pathlib import Path; from farm.controller.artifactstore import ArtifactCache\n"
        f"with ArtifactCache(Path({str(cache.root)!r})).making({KEY!r}, on_wait=print): pass"
    )
    with cache.making(KEY) as problem:
        assert problem is None
        waiting = subprocess.Popen([sys.executable, "-c", second], stdout=subprocess.PIPE, text=True)
        assert waiting.stdout is not None
        said = waiting.stdout.readline()
        assert waiting.poll() is None  # it waits while this one makes
    assert waiting.wait(timeout=60) == 0
    assert said.startswith("waiting for another farm process that is making the int8 artifacts 0123456789ab"), said
