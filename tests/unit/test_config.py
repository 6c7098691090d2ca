from __future__ import annotations

from pathlib import Path

import pytest

from farm.errors import ConfigError
from farm.targets.config import Target, default_targets_file, load_config
from tests.conftest import ROOT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.toml"
    path.write_text(text)
    return path


def test_default_targets_file_has_the_four_contract_targets() -> None:
    config = load_config(ROOT / "targets.toml", env={})
    names = [t.name for t in config.targets]
    assert names == ["x86-avx2", "x86-avx512", "x86-avx512-vnni", "arm64", "gpu-s8s8", "x86-ort117"]
    assert config.target("x86-ort117").on_request and config.target("x86-ort117").runtime == "onnxruntime==1.17.3"
    gpu = config.target("gpu-s8s8")
    assert gpu.candidates == ("s8s8-qdq", "s8s8-qdq-pc") and gpu.gpus == 1 and gpu.on_request
    assert gpu.providers[0] == "CUDAExecutionProvider"
    assert config.target("x86-avx2").emulate_cpu == "Haswell"
    assert config.target("arm64").arch == "aarch64"


def test_defaults_apply_and_a_target_may_pin_its_own_runtime(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
[defaults]
runtime = "onnxruntime==1.31.1"
[targets.a]
platform = "linux/amd64"
[targets.b]
platform = "linux/arm64"
runtime = "onnxruntime==1.30.0"
""",
        ),
        env={},
    )
    assert config.target("a").runtime_version == "1.31.1"
    assert config.target("b").runtime_version == "1.30.0"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[targets.a]\nplatfrom = "linux/amd64"\nruntime = "onnxruntime==1.31.1"', "did you mean 'platform'?"),
        ('[targets.a]\nplatform = "linux/amd46"\nruntime = "onnxruntime==1.31.1"', "did you mean 'linux/amd64'?"),
        ('[targets.a]\nplatform = "linux/amd64"\nruntime = "onnxruntim==1.31.1"', "did you mean 'onnxruntime'?"),
        ('[targets.a]\nplatform = "linux/amd64"\nruntime = "onnxruntime"', "not a pinned requirement"),
        (
            '[targets.a]\nplatform = "linux/amd64"\nruntime = "onnxruntime==1.31.1"\ncandidates = ["u8s8"]',
            "unknown variant 'u8s8'",
        ),
        ('[default]\nbase = "x"\n[targets.a]\nplatform = "linux/amd64"', "did you mean 'defaults'?"),
        ('[targets.a\nplatform = "linux/amd64"', "is not valid TOML"),
        (
            '[targets.a]\nplatform = "linux/amd64"\nruntime = "onnxruntime==1.31.1"\nmemory = "4gb"',
            "memory must be at least 6m, written as a number and a unit",
        ),
        ('[targets.a]\nplatform = "linux/amd64"\nruntime = "onnxruntime==1.31.1"\nmemory = "1m"', "not '1m'"),
        ('[targets.a]\nplatform = "linux/amd64"\nruntime = "onnxruntime==1.31.1"\nmemory = 4', "not 4"),
    ],
)
def test_bad_targets_files_name_the_key_and_the_nearest_valid_name(tmp_path: Path, toml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, toml), env={})
    message = str(caught.value)
    assert expected in message
    assert str(tmp_path / "targets.toml") in message
    assert "\n" not in message


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[targets.a]\nplatform = "linux/amd64"\nruntime = "onnxruntime==1.31.1"')
    config = load_config(
        env={"FARM_TARGETS": str(path), "FARM_BASE": "python:3.11-slim-bookworm", "FARM_CACHE_DIR": str(tmp_path / "c")}
    )
    assert config.target("a").base == "python:3.11-slim-bookworm"
    assert config.cache_dir == tmp_path / "c"


def test_unknown_target_name_suggests_the_nearest() -> None:
    config = load_config(ROOT / "targets.toml", env={})
    with pytest.raises(ConfigError, match="did you mean 'arm64'"):
        config.select(["arm46"])


def test_a_misspelt_cpu_flag_names_the_nearest(tmp_path: Path) -> None:
    path = tmp_path / "targets.toml"
    path.write_text(
        '[targets.a]\nplatform = "linux/amd64"\nruntime = "onnxruntime==1.31.1"\ncpu_excludes = ["avx512vnni"]\n'
    )
    with pytest.raises(ConfigError, match=r"unknown CPU flag 'avx512vnni' in cpu_excludes.*did you mean 'avx512_vnni'"):
        load_config(path, env={})


def test_memory_is_per_target_with_a_default(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
[defaults]
runtime = "onnxruntime==1.31.1"
memory = "2G"
[targets.a]
platform = "linux/amd64"
[targets.b]
platform = "linux/amd64"
memory = "512m"
""",
        ),
        env={},
    )
    assert (config.target("a").memory, config.target("b").memory) == ("2g", "512m")
    assert load_config(ROOT / "targets.toml", env={}).target("arm64").memory == "4g"


def test_an_on_request_target_waits_until_it_is_named() -> None:
    # The one place of the rule: build, matrix, tune and optimize all ask it.
    gpu = Target(name="gpu", platform="linux/amd64", on_request=True)
    cpu = Target(name="cpu", platform="linux/amd64")
    assert gpu.waits_for_request(()) and gpu.waits_for_request(["cpu"])
    assert not gpu.waits_for_request(["gpu"])
    assert not cpu.waits_for_request(()) and not cpu.waits_for_request(["gpu"])


def test_outside_a_checkout_the_shipped_targets_file_is_the_checkout_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The package's file is a link to the repository's (one definition); a move of either must keep it resolving.
    monkeypatch.chdir(tmp_path)
    shipped = default_targets_file()
    assert shipped.is_file(), f"{shipped} does not resolve"
    assert shipped.read_text(encoding="utf-8") == (ROOT / "targets.toml").read_text(encoding="utf-8")


def test_threads_are_per_target_with_a_default_and_none_means_the_threads_count_alone(tmp_path: Path) -> None:
    tables = '[targets.a]\nplatform = "linux/amd64"\n[targets.b]\nplatform = "linux/amd64"\nthreads = [4]\n'
    toml = f'[defaults]\nruntime = "onnxruntime==1.31.1"\nthreads = [1, 2]\n{tables}'
    config = load_config(write(tmp_path, toml), env={})
    assert (config.target("a").threads, config.target("b").threads) == ((1, 2), (4,))
    assert load_config(ROOT / "targets.toml", env={}).target("arm64").threads == ()


@pytest.mark.parametrize("value", ["[]", "[0, 1]", "[1, 1]", "2", '["2"]', "[true]", "[1.5]"])
def test_a_bad_threads_list_names_the_file_the_target_and_the_key(tmp_path: Path, value: str) -> None:
    toml = f'[targets.a]\nplatform = "linux/amd64"\nruntime = "onnxruntime==1.31.1"\nthreads = {value}'
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, toml), env={})
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'targets.toml'}: [targets.a]: threads must be a non-empty list")
    assert "e.g. threads = [1, 2, 4]" in message and "\n" not in message
