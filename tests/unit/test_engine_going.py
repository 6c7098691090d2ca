"""A container that cannot be started is that target's failure, unless the engine itself is stopping: a daemon that
shuts down answers 500 ("database not open") before its socket closes, and that is the engine's end (the real
case: tests/integration/test_remote_engine.py, the engine lost mid-run)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest
import requests

from farm.backend import engine as engine_module
from farm.backend.engine import Engine
from farm.backend.runspec import RunSpec
from farm.errors import EnvironmentProblem


class Client:
    """Only what Engine.run asks before the container starts: ping, after a server error."""

    def __init__(self, *, answers: bool) -> None:
        self.answers = answers
        self.pings = 0

    def ping(self) -> bool:
        self.pings += 1
        if not self.answers:
            raise requests.exceptions.ConnectionError("connection refused")
        return True


def refused(status: int, explanation: str) -> Any:
    response = requests.Response()
    response.status_code = status

    @contextlib.contextmanager
    def container(self: Engine, spec: RunSpec) -> Iterator[Any]:
        raise docker.errors.APIError("refused", response=response, explanation=explanation)
        yield  # pragma: no cover

    return container


@pytest.fixture(autouse=True)
def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "GOING_CHECK_S", 0.0)


def run(monkeypatch: pytest.MonkeyPatch, client: Client, status: int, explanation: str) -> Any:
    monkeypatch.setattr(Engine, "_container", refused(status, explanation))
    return Engine(client, host="tcp://far:2376", remote=True).run(RunSpec(image="farm/x:1", command=["true"]))


def test_a_server_error_from_a_stopping_engine_is_the_engine_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Client(answers=False)
    with pytest.raises(EnvironmentProblem) as raised:
        run(monkeypatch, client, 500, "create abc: database not open")
    assert "Docker engine at tcp://far:2376 stopped answering" in raised.value.message
    assert client.pings == 1


def test_a_server_error_from_an_engine_that_still_answers_is_the_container_s(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Client(answers=True)
    result = run(monkeypatch, client, 500, "nvidia-container-cli: driver/library version mismatch")
    assert result.failure and "could not be started" in result.failure
    assert client.pings == engine_module.GOING_CHECKS


def test_a_missing_image_is_the_container_s_without_asking_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Client(answers=False)
    result = run(monkeypatch, client, 404, "No such image: farm/x:1")
    assert result.failure and "could not be started" in result.failure
    assert client.pings == 0
