"""`farm clean`'s plan for the artifact cache (farm/controller/clean.py): --cache takes it with farm's other caches,
--artifacts takes it alone, wherever FARM_ARTIFACT_CACHE_DIR puts it, and never while a farm is making an entry."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from farm.backend.engine import Engine
from farm.controller import clean
from farm.controller.artifactstore import ArtifactCache
from farm.controller.doctor import _artifact_cache
from farm.targets.config import Config, artifact_cache_dir_of, cache_dir_of, load_config

KEY = "ab" * 32


class NoEngine:
    """An engine with no farm container and no farm image."""

    def farm_containers(self) -> list[Any]:
        return []

    def images_labelled(self, label: str) -> list[Any]:
        return []


def config(tmp_path: Path, artifacts: Path | None = None) -> Config:
    cache = tmp_path / "cache"
    (cache / "wheelhouse").mkdir(parents=True)
    (cache / "wheelhouse" / "onnx.whl").write_bytes(b"w" * 100)
    folder = artifacts or cache / "artifacts"
    (folder / KEY / "artifacts").mkdir(parents=True)
    (folder / KEY / "artifacts" / "u8s8-qdq.onnx").write_bytes(b"q" * 10)
    (folder / f".{KEY}-half").mkdir()  # what a killed store left: no entry
    return replace(load_config(env={}), cache_dir=cache, artifact_cache=artifacts)


def planned(config: Config, **flags: bool) -> list[tuple[str, str]]:
    return [(item.name, item.why) for item in clean.plan(cast(Engine, NoEngine()), config, **flags).items]


def test_cache_takes_the_artifact_cache_as_one_item_and_artifacts_takes_it_alone(tmp_path: Path) -> None:
    where = config(tmp_path)
    artifacts = str(where.artifact_cache_dir)
    assert planned(where, cache=True) == [
        (str(where.cache_dir / "wheelhouse"), "farm's cache"),
        (artifacts, "farm's cache of int8 artifacts (1 prepare stage(s))"),
    ]
    assert planned(where, artifacts=True) == [(artifacts, "farm's cache of int8 artifacts (1 prepare stage(s))")]
    assert planned(where) == []


def test_an_artifact_cache_elsewhere_is_still_farm_s_cache(tmp_path: Path) -> None:
    where = config(tmp_path, artifacts=tmp_path / "elsewhere")
    names = [name for name, _ in planned(where, cache=True)]
    assert names == [str(where.cache_dir / "wheelhouse"), str(tmp_path / "elsewhere")], names


def test_the_cache_a_farm_is_making_an_entry_in_is_kept_and_said_so(tmp_path: Path) -> None:
    where = config(tmp_path)
    with ArtifactCache(where.artifact_cache_dir).making(KEY):
        made = clean.plan(cast(Engine, NoEngine()), where, artifacts=True)
    assert made.items == ()
    assert made.kept == (f"cache {where.artifact_cache_dir}: a running farm process is making int8 artifacts into it",)
    # Once it is done, the cache goes.
    assert len(clean.plan(cast(Engine, NoEngine()), where, artifacts=True).items) == 1


def test_the_cache_folder_follows_farm_cache_dir_then_xdg_then_home(tmp_path: Path) -> None:
    assert cache_dir_of({"FARM_CACHE_DIR": "/x/farm", "XDG_CACHE_HOME": "/y"}) == Path("/x/farm")
    assert cache_dir_of({"XDG_CACHE_HOME": "/y"}) == Path("/y/farm")
    assert cache_dir_of({"XDG_CACHE_HOME": "relative"}) == Path.home() / ".cache" / "farm"  # the spec says ignore it
    assert cache_dir_of({}) == Path.home() / ".cache" / "farm"
    assert artifact_cache_dir_of({"XDG_CACHE_HOME": "/y"}) == Path("/y/farm/artifacts")
    assert artifact_cache_dir_of({"XDG_CACHE_HOME": "/y", "FARM_ARTIFACT_CACHE_DIR": "/z"}) == Path("/z")
    loaded = load_config(env={"FARM_CACHE_DIR": str(tmp_path), "FARM_ARTIFACT_CACHE_DIR": str(tmp_path / "a")})
    assert loaded.artifact_cache_dir == tmp_path / "a"
    assert load_config(env={"FARM_CACHE_DIR": str(tmp_path)}).artifact_cache_dir == tmp_path / "artifacts"


def test_doctor_says_how_much_is_cached_and_whether_it_can_be_written(tmp_path: Path) -> None:
    where = config(tmp_path)
    said = _artifact_cache(where.artifact_cache_dir)
    assert said.level == "ok" and said.detail.startswith("1 cached prepare stage(s), 0.0 MiB in "), said
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unwritable = _artifact_cache(blocker / "artifacts")
    assert unwritable.level == "warn" and unwritable.fix is not None and "FARM_ARTIFACT_CACHE_DIR" in unwritable.fix
