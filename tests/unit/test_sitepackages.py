"""farm.images.sitepackages: wheels laid out as an installer would, nothing run, and nothing outside site-packages."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from farm.errors import BuildFailed
from farm.images.sitepackages import unpack_wheel


def wheel(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def test_a_wheel_lands_in_site_packages_with_its_data_folders_merged(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    unpack_wheel(
        wheel(
            tmp_path / "a-1.0-py3-none-any.whl",
            {
                "a/__init__.py": "A = 1\n",
                "a-1.0.dist-info/METADATA": "Name: a\n",
                "a-1.0.data/platlib/a_native/__init__.py": "",
                "a-1.0.data/scripts/a-cli": "#!/bin/sh\n",
            },
        ),
        site,
    )
    # Two wheels sharing a namespace folder (as the nvidia-* wheels share nvidia/) merge.
    unpack_wheel(wheel(tmp_path / "b-1.0-py3-none-any.whl", {"nvidia/b/lib.txt": "b"}), site)
    unpack_wheel(wheel(tmp_path / "c-1.0-py3-none-any.whl", {"c-1.0.data/purelib/nvidia/c/lib.txt": "c"}), site)
    assert (site / "a" / "__init__.py").read_text() == "A = 1\n"
    assert (site / "a_native" / "__init__.py").is_file()
    assert (site / "nvidia" / "b" / "lib.txt").is_file() and (site / "nvidia" / "c" / "lib.txt").is_file()
    assert not list(site.glob("*.data"))  # scripts are left out: the job never runs them


def test_a_path_outside_site_packages_is_refused(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    evil = wheel(tmp_path / "evil-1.0-py3-none-any.whl", {"../outside.py": "x"})
    with pytest.raises(BuildFailed, match="outside site-packages"):
        unpack_wheel(evil, site)
    assert not (tmp_path / "outside.py").exists()


def test_executables_keep_their_bits_and_test_suites_are_left_uncompiled_wherever_the_cache_is(
    tmp_path: Path,
) -> None:
    import compileall

    from farm.images.sitepackages import IMAGE_SITE, _TestSuites

    site = tmp_path / "tests" / "site"  # a cache under a folder named tests/ must still be compiled
    site.mkdir(parents=True)
    path = tmp_path / "d-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        tool = zipfile.ZipInfo("d/bin/tool")
        tool.external_attr = 0o100755 << 16
        archive.writestr(tool, "#!/bin/sh\n")
        archive.writestr("d/__init__.py", "")
        archive.writestr("d/tests/test_d.py", "")
    unpack_wheel(path, site)
    assert (site / "d" / "bin" / "tool").stat().st_mode & 0o111
    compileall.compile_dir(str(site), quiet=2, rx=_TestSuites(site), ddir=IMAGE_SITE)
    assert list((site / "d" / "__pycache__").glob("__init__.cpython-*.pyc"))
    assert not (site / "d" / "tests" / "__pycache__").exists()
