"""The evaluate stage's hook into the deployment profile (farm.job.profile): each variant's start-up and memory,
measured by the profile server's fresh child right after the variant's accuracy is known."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from farm.job.evaluate.file import ResultFile
from farm.job.evaluate.timed import measured_as
from farm.job.profile.answer import BadAnswer, to_profile
from farm.job.profile.child import Request
from farm.job.profile.server import ProfileFailed, ProfileServer
from farm.job.report import Profile
from farm.job.result import error_text
from farm.job.spec import Level, Spec

log = logging.getLogger("farm.job")
NO_PROFILE = "{name} has no deployment profile: {why}; its other figures stand"
NO_SERVER = "no variant has a deployment profile: the profile server could not start ({why})"


def start_server(spec: Spec, file: ResultFile) -> ProfileServer | None:
    """The profile server when the spec asks for a profile (None: it does not, or the fork failed, which is a
    warning, never the target's end)."""
    if spec.profile is None:
        return None
    try:
        return ProfileServer.start(spec.target)
    except OSError as exc:  # e.g. the container's pid limit
        file.warn(NO_SERVER.format(why=error_text(exc)))
        return None


class Profiler:
    """Profiles each variant in the server's fresh child, on ``feed`` (the first sample's)."""

    def __init__(
        self, *, spec: Spec, server: ProfileServer | None, feed: Mapping[str, np.ndarray], file: ResultFile
    ) -> None:
        self.spec, self.server, self.feed, self.file = spec, server, feed, file

    def profile(self, name: str, path: Path, config: Mapping[str, str] | None, level: Level) -> Profile | None:
        """The variant's profile, created with the settings used for timing; None (and a warning) when its child
        failed, crashed or hung, or when no profile was asked for."""
        if self.server is None:
            return None
        spec = self.spec
        log.info("evaluate: profiling %s", name)
        request = Request(path=str(path), config=dict(config or {}), level=level, threads=spec.threads, feed=self.feed)
        try:
            answer = self.server.ask(request)
            return to_profile(
                answer, emulated=spec.target.emulated, threads=spec.threads, timing=measured_as(spec.target)
            )
        except (ProfileFailed, BadAnswer) as exc:
            self.file.warn(NO_PROFILE.format(name=name, why=error_text(exc)))
            return None
