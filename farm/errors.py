"""Every failure farm reports on purpose, with one exit code per class.

A message is one line in the shape "X failed because Y; Z", where Z says how to fix it. The CLI prints
``str(error)`` and exits with ``error.exit_code``; a traceback appears only with ``--debug``.
"""

from __future__ import annotations


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's words on one line, cut at ``limit`` characters, for the cause part of a message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class FarmError(Exception):
    """Base class. ``fix`` is the advice appended after the cause."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message}; {fix}" if fix else message)


class BadInput(FarmError):
    """The user's files or flags are wrong: a model, data, targets.toml or an option."""

    exit_code = 2


class ConfigError(BadInput):
    """targets.toml or a FARM_* variable holds an unknown key or a bad value."""


class ModelError(BadInput):
    """The model file cannot be read as ONNX, or is incomplete."""


class DataError(BadInput):
    """--data, --labels or --shape does not fit the model."""


class EnvironmentProblem(FarmError):
    """The host lacks something farm needs: a Docker engine, QEMU, binfmt, disk."""

    exit_code = 3


class BuildFailed(FarmError):
    """A base image, a wheelhouse or a target image could not be made."""

    exit_code = 4


class TargetFailed(FarmError):
    """At least one target ran and failed; the others' results are still written."""

    exit_code = 5


class GateFailed(FarmError):
    """farm gate: at least one rule of the policy failed; each is printed with its target, variant and values."""

    exit_code = 6


class Interrupted(FarmError):
    """The user pressed Ctrl-C; containers were removed."""

    exit_code = 130
