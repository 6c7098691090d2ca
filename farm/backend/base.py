"""Execution backends: where a target's jobs run, behind one protocol.

A backend can say what it runs on (``probe``: the CPU, its flags, GPUs, the engine's view; always of the machine
that runs the jobs, never the controller's unless they are the same), make sure a target's image is there
(``ensure_image``), run one job with its inputs and bring its outputs back (``run``: a RunSpec whose mounts name
controller folders; how their content reaches the job is the backend's business), and remove what farm left there
(``sweep``). The local Docker engine is one backend (bind mounts); a remote Docker engine is another (archives
through the engine's API, never a bind mount of a controller path); a Kubernetes cluster a third (Jobs).

Which backend a target uses is its ``engine`` in targets.toml: absent for the local engine, a Docker address or
context name for a remote one, ``kubernetes`` (with ``registry``) for a cluster. Adding a backend means one module
here and one entry in ``KINDS``; nothing outside this package knows how a container starts or how files reach it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from farm.backend.engine import RunResult, RunSpec
from farm.host.files import LineSink
from farm.host.probe import HostInfo, Placement
from farm.images.content import BuiltImage
from farm.targets.config import Config, Target


@dataclass(frozen=True, kw_only=True)
class Reach:
    """Where a backend runs jobs, as the report and `farm targets` show it."""

    kind: str  # "docker", "kubernetes"
    where: str  # "local", "tcp://10.0.0.7:2376", "ssh://ci@arm-box", "kubernetes: context/namespace"
    remote: bool


class Backend(Protocol):
    @property
    def reach(self) -> Reach: ...

    def probe(self) -> HostInfo:
        """What the machine that runs the jobs has. Raises EnvironmentProblem when it cannot be reached."""
        ...

    def place(self, target: Target, host: HostInfo) -> tuple[Placement, HostInfo]:
        """How the target runs on what ``probe`` found, and the machine its jobs will see (a cluster's matching
        nodes, say); a reason names the place, so a reader knows whose CPU it is about."""
        ...

    def image_ref(self, tag: str) -> str | None:
        """The name under which the backend has the content of ``tag`` (another target's may do), or None."""
        ...

    def ensure_image(self, config: Config, target: Target, *, on_line: LineSink, on_stage: LineSink) -> BuiltImage:
        """The target's image, there, by its content hash; BuiltImage.origin says how it got there."""
        ...

    def manifests(self, spec: RunSpec) -> list[dict[str, Any]]:
        """What ``run`` would create for ``spec``, as data, asking nothing of the backend (`farm matrix --dry-run`)."""
        ...

    def run(self, spec: RunSpec, *, on_line: LineSink | None = None) -> RunResult:
        """Run one job to its end; what it wrote under the spec's writable mounts is then in their source folders."""
        ...

    def sweep(self) -> list[str]:
        """Remove what farm processes that are gone left on this backend; say what went, one line each."""
        ...
