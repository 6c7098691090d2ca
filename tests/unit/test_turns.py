"""farm.host.turns: a job that times has the host to itself; other jobs share it; a waiting timed job is not overtaken.
The locks are flocks, which hold between two opens of the same file in one process as between two processes, so
threads stand in for the farm runs here (the suite's two processes use the same turns on every run: tests/conftest.py
checks their log)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from farm.host import turns


def take_in_thread(place: Path, who: str, *, alone: bool, events: list[str]) -> threading.Thread:
    def run() -> None:
        with turns.turn(who, alone=alone, place=place, on_wait=lambda line: events.append(f"{who} waits: {line}")):
            events.append(f"{who} runs")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def settle() -> None:
    time.sleep(0.2)  # long enough for a thread that is not blocked to run its turn


def test_shared_turns_run_together_and_an_alone_one_waits_for_them(tmp_path: Path) -> None:
    events: list[str] = []
    with turns.turn("emulated", alone=False, place=tmp_path):
        other = take_in_thread(tmp_path, "quantize", alone=False, events=events)
        other.join(timeout=5)
        assert events == ["quantize runs"]
        timed = take_in_thread(tmp_path, "timed", alone=True, events=events)
        settle()
        assert events[1:] == [
            "timed waits: waiting for this host to itself: another farm run is working here, and this job times"
        ]
    timed.join(timeout=5)
    assert events[-1] == "timed runs"


def test_work_asked_for_after_a_waiting_timed_job_waits_behind_it(tmp_path: Path) -> None:
    events: list[str] = []
    with turns.turn("emulated", alone=False, place=tmp_path):
        timed = take_in_thread(tmp_path, "timed", alone=True, events=events)
        settle()
        later = take_in_thread(tmp_path, "later", alone=False, events=events)
        settle()
        assert "timed runs" not in events and "later runs" not in events
        assert "later waits: waiting for this host: another farm run is timing a target here" in events
    timed.join(timeout=5)
    later.join(timeout=5)
    assert events.index("timed runs") < events.index("later runs")


def test_off_takes_no_turn_and_the_log_records_each_turn_where_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(turns.TURNS_ENV, turns.OFF)
    assert turns.folder() is None
    with turns.turn("anything", alone=True):
        pass
    monkeypatch.setenv(turns.TURNS_ENV, str(tmp_path / "here"))
    assert turns.folder() == tmp_path / "here"
    with turns.turn("not logged", alone=False):
        pass
    (tmp_path / "here" / turns.LOG).touch()
    with turns.turn("farm evaluate x86-avx2", alone=True):
        pass
    (line,) = (tmp_path / "here" / turns.LOG).read_text().splitlines()
    began, ended, shared, who = json.loads(line)
    assert began <= ended and shared is False and who == "farm evaluate x86-avx2"
    monkeypatch.delenv(turns.TURNS_ENV)
    folder = turns.folder()
    assert folder is not None and folder.name.startswith("farm-turns-")


def test_a_waiting_timed_job_is_seen_by_work_that_shares_the_host(tmp_path: Path) -> None:
    events: list[str] = []
    assert not turns.asked_for(tmp_path)  # no turn was ever taken here
    with turns.turn("emulated", alone=False, place=tmp_path):
        assert not turns.asked_for(tmp_path)
        timed = take_in_thread(tmp_path, "timed", alone=True, events=events)
        settle()
        assert turns.asked_for(tmp_path) and "timed runs" not in events
    timed.join(timeout=5)
    assert events[-1] == "timed runs" and not turns.asked_for(tmp_path)
