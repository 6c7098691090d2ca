"""The headless-Chromium harness (tests/browser.py) sees what a page does wrong: remote loads, dialogs, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import PageResult, chromium_path, open_page
from tests.conftest import missing


@pytest.fixture(autouse=True)
def chromium() -> None:
    # Not hardware: CI installs it (scripts/setup), so there a missing browser fails rather than skips.
    if chromium_path() is None:
        missing("Debian's chromium is not installed: scripts/setup installs it")


SVG = '<svg width="120" height="60"><rect width="120" height="60" fill="teal"/></svg>'
TABLE = "<table><tr><th>target</th><th>ms</th></tr><tr><td>x86_64</td><td>1.5</td></tr></table>"


def show(tmp_path: Path, name: str, body: str) -> PageResult:
    html = tmp_path / f"{name}.html"
    html.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{name}</title></head><body>{body}</body></html>"
    )
    return open_page(html, tmp_path / "shots" / f"{name}.png", timeout_s=60)


def test_clean_page_has_no_errors_and_a_screenshot(tmp_path: Path) -> None:
    result = show(tmp_path, "clean", f"<h1>Report</h1>{SVG}{TABLE}")
    assert not result.console_errors, result.console_errors
    assert not result.exceptions, result.exceptions
    assert not result.failed_loads, result.failed_loads
    assert not result.dialogs, result.dialogs
    assert not result.requests, result.requests
    assert (result.svg_count, result.svgs_with_size, result.tables) == (1, 1, 1)
    assert "Report" in result.text and "x86_64" in result.text
    assert result.screenshot == tmp_path / "shots" / "clean.png"
    png = result.screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_remote_image_is_requested_and_fails_without_network(tmp_path: Path) -> None:
    result = show(tmp_path, "remote", f'{SVG}{TABLE}<img src="http://example.invalid/x.png">')
    assert result.requests == ["http://example.invalid/x.png"]
    assert len(result.failed_loads) == 1 and result.failed_loads[0].startswith("http://example.invalid/x.png: ")
    assert (result.svg_count, result.tables) == (1, 1)


def test_dialog_is_recorded_and_dismissed(tmp_path: Path) -> None:
    result = show(tmp_path, "alert", f"<script>alert(1)</script>{SVG}")
    assert result.dialogs == ["alert: 1"]
    # The page went on loading once the dialog was dismissed.
    assert result.svg_count == 1


def test_errors_and_exceptions_are_recorded(tmp_path: Path) -> None:
    result = show(
        tmp_path, "broken", '<script>console.error("bad row", 3); missing();</script><svg style="display: none"></svg>'
    )
    assert len(result.console_errors) == 1 and result.console_errors[0].startswith("bad row 3 (file://")
    assert len(result.exceptions) == 1 and "ReferenceError: missing is not defined" in result.exceptions[0]
    assert (result.svg_count, result.svgs_with_size) == (1, 0)


@pytest.mark.parametrize(("page", "shot"), [(3000, range(3000, 3100)), (20000, range(16000, 16001))])
def test_screenshot_covers_the_whole_page_up_to_a_cap(tmp_path: Path, page: int, shot: range) -> None:
    result = show(tmp_path, "tall", f'<div style="height: {page}px">tall</div>')
    png = result.screenshot.read_bytes()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width == 1280 and height in shot


def test_a_page_that_never_loads_times_out(tmp_path: Path) -> None:
    html = tmp_path / "hang.html"
    html.write_text("<script>while (true) {}</script>")
    with pytest.raises(RuntimeError, match="timed out waiting for file://"):
        open_page(html, tmp_path / "hang.png", timeout_s=15)  # startup takes 1-2 s, even on a busy host
