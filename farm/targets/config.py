"""Targets and settings: built-in defaults, then targets.toml, then FARM_* variables, then flags.

Every key is checked: an unknown one is an error that names the nearest valid key, so a typo never turns into a
silently ignored setting.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.errors import ConfigError
from farm.job.variants import CANDIDATES, DEFAULT_CANDIDATES
from farm.targets.cpuflags import KNOWN_FLAGS

PLATFORM_ARCH = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
IMAGE_KINDS = ("cpu", "gpu")
RUNTIME_PACKAGES = ("onnxruntime", "onnxruntime-gpu")
BOOTSTRAP = "bootstrap"
DEFAULT_BUDGET_S = 1800.0
DEFAULT_MEMORY = "4g"
# Docker's spelling of a memory limit: a number and a unit (b, k, m, g).
_MEMORY_RE = re.compile(r"^(?P<number>[0-9]+)(?P<unit>[bkmg])$")
_MEMORY_UNITS = {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
# The engine refuses a container limit below 6 MiB.
_MIN_MEMORY = 6 * 2**20

_TARGET_KEYS = (
    "platform",
    "image",
    "base",
    "runtime",
    "packages",
    "providers",
    "candidates",
    "cpu_features",
    "cpu_excludes",
    "emulate_cpu",
    "gpus",
    "on_request",
    "budget_s",
    "memory",
    "threads",
    "engine",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "registry",
    "namespace",
    "kube_context",
)
# Only keys that make sense for every target may be defaulted.
_DEFAULT_KEYS = (
    "base",
    "runtime",
    "packages",
    "providers",
    "candidates",
    "image",
    "budget_s",
    "memory",
    "threads",
    "engine",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "registry",
    "namespace",
    "kube_context",
)
# `engine = "local"` (or none): the controller's Docker engine; "kubernetes": a cluster (farm/backend/kubernetes/).
LOCAL_ENGINE = "local"
KUBERNETES = "kubernetes"
_TOP_KEYS = ("defaults", "targets")
_RUNTIME_RE = re.compile(r"^(?P<package>[A-Za-z0-9_.-]+)==(?P<version>[0-9][0-9A-Za-z.+-]*)$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def nearest(word: str, choices: Iterable[str]) -> str:
    """A "did you mean" clause for an error message, or a list of the choices when nothing is close."""
    options = sorted(choices)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'?"
    return "valid: " + ", ".join(options)


@dataclass(frozen=True, kw_only=True)
class Target:
    """One hardware target: where it runs, which runtime it uses and which int8 variants it tries."""

    name: str
    platform: str
    image: str = "cpu"
    base: str = BOOTSTRAP
    runtime_package: str = "onnxruntime"
    runtime_version: str = "1.31.1"
    packages: tuple[str, ...] = ()
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    cpu_features: tuple[str, ...] = ()
    cpu_excludes: tuple[str, ...] = ()
    emulate_cpu: str | None = None
    gpus: int = 0
    on_request: bool = False
    # Wall-clock seconds one run of this target may take (a container's timeout); past it the target fails and
    # keeps the variants it finished.
    budget_s: float = DEFAULT_BUDGET_S
    # The container's memory limit (no swap beyond it), as Docker spells it: "512m", "4g". Past it the kernel kills
    # the job and the target fails as out of memory, as on a device with that much memory.
    memory: str = DEFAULT_MEMORY
    # The intra-op thread counts the deployment profile times p50 at (profile only); the job times them with
    # --threads's count added, so empty means that count alone (farm/controller/jobs.py profile_threads).
    threads: tuple[int, ...] = ()
    # Where its jobs run (farm/backend): the local engine, a remote Docker engine ("tcp://host:2376", "ssh://user@host",
    # "unix:///path", or a Docker context's name) or "kubernetes". TLS files (absolute paths) for a tcp:// engine.
    engine: str = LOCAL_ENGINE
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # Kubernetes: the registry farm pushes the image to, the namespace and kubeconfig context of the Jobs.
    registry: str | None = None
    namespace: str = "default"
    kube_context: str | None = None

    @property
    def arch(self) -> str:
        return PLATFORM_ARCH[self.platform]

    @property
    def runtime(self) -> str:
        return f"{self.runtime_package}=={self.runtime_version}"

    @property
    def memory_bytes(self) -> int:
        """``memory`` in bytes (it was checked when the file was read)."""
        found = _MEMORY_RE.match(self.memory)
        assert found is not None
        return int(found["number"]) * _MEMORY_UNITS[found["unit"]]

    @property
    def requirements(self) -> tuple[str, ...]:
        """Top-level pip requirements for the image; pip resolves the rest for the target's platform."""
        if self.image == "gpu":
            # onnxruntime-gpu loads CUDA and cuDNN from NVIDIA's wheels, so the image needs no CUDA base.
            return (f"{self.runtime_package}[cuda,cudnn]=={self.runtime_version}", *self.packages)
        return (self.runtime, *self.packages)

    def waits_for_request(self, named: Collection[str]) -> bool:
        """The on-request rule, applied here alone: a target with ``on_request = true`` (a large image, a GPU, an
        older runtime) is built and run only when ``--target`` names it, so here it sits out unless ``named`` has it."""
        return self.on_request and self.name not in named

    @classmethod
    def from_table(cls, name: str, table: Mapping[str, Any], *, source: str) -> Target:
        where = f"{source}: [targets.{name}]"
        if not _NAME_RE.match(name):
            raise ConfigError(
                f"{where}: the target name '{name}' is not valid",
                fix="use lower-case letters, digits, '.', '_' and '-'",
            )
        for key in table:
            if key not in _TARGET_KEYS:
                raise ConfigError(f"{where}: unknown key '{key}'", fix=nearest(key, _TARGET_KEYS))
        platform = _string(table, "platform", where, required=True) or ""
        if platform not in PLATFORM_ARCH:
            raise ConfigError(
                f"{where}: unknown platform '{platform}'",
                fix=f"{nearest(platform, PLATFORM_ARCH)} (farm runs linux/amd64 and linux/arm64)",
            )
        image = _string(table, "image", where) or "cpu"
        if image not in IMAGE_KINDS:
            raise ConfigError(f"{where}: unknown image kind '{image}'", fix=nearest(image, IMAGE_KINDS))
        package, version = _runtime(_string(table, "runtime", where, required=True), where)
        candidates = _strings(table, "candidates", where)
        for variant in candidates:
            if variant not in CANDIDATES:
                raise ConfigError(
                    f"{where}: unknown variant '{variant}' in candidates", fix=nearest(variant, CANDIDATES)
                )
        providers = _strings(table, "providers", where) or ("CPUExecutionProvider",)
        gpus = table.get("gpus", 0)
        if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 0:
            raise ConfigError(f"{where}: gpus must be a whole number of at least 0, not {gpus!r}")
        if image == "gpu" and gpus == 0:
            raise ConfigError(f"{where}: a gpu image needs gpus = 1 or more")
        on_request = table.get("on_request", False)
        if not isinstance(on_request, bool):
            raise ConfigError(f"{where}: on_request must be true or false, not {on_request!r}")
        budget = table.get("budget_s", DEFAULT_BUDGET_S)
        if not isinstance(budget, int | float) or isinstance(budget, bool) or budget <= 0:
            raise ConfigError(
                f"{where}: budget_s must be a positive number of seconds, not {budget!r}", fix="e.g. budget_s = 900"
            )
        return cls(
            name=name,
            platform=platform,
            image=image,
            base=_string(table, "base", where) or BOOTSTRAP,
            runtime_package=package,
            runtime_version=version,
            packages=_strings(table, "packages", where),
            providers=providers,
            candidates=candidates,
            cpu_features=_flags(table, "cpu_features", where),
            cpu_excludes=_flags(table, "cpu_excludes", where),
            emulate_cpu=_emulate_cpu(table, where),
            gpus=gpus,
            on_request=on_request,
            budget_s=float(budget),
            memory=_memory(table, where),
            threads=_thread_counts(table, where),
            **_backend(table, where, source),
        )


# The artifact cache's folder in farm's cache folder, unless FARM_ARTIFACT_CACHE_DIR names another.
ARTIFACT_CACHE_FOLDER = "artifacts"


@dataclass(frozen=True, kw_only=True)
class Config:
    """The targets of one targets.toml, after FARM_* overrides, and where they came from."""

    source: Path
    targets: tuple[Target, ...]
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "farm")
    # FARM_ARTIFACT_CACHE_DIR: the artifact cache's own folder (farm/controller/artifactstore.py), so that a test
    # session or a CI job can keep it apart from the wheels and images it shares; None: "artifacts" in cache_dir.
    artifact_cache: Path | None = None

    @property
    def artifact_cache_dir(self) -> Path:
        """Where the prepare stage's artifacts are cached."""
        return self.artifact_cache or self.cache_dir / ARTIFACT_CACHE_FOLDER

    def target(self, name: str) -> Target:
        for target in self.targets:
            if target.name == name:
                return target
        raise ConfigError(
            f"no target named '{name}' in {self.source}", fix=nearest(name, (t.name for t in self.targets))
        )

    def select(self, names: Iterable[str]) -> tuple[Target, ...]:
        """The named targets in the order given, or every target when none is named."""
        chosen = list(dict.fromkeys(names))
        return tuple(self.target(n) for n in chosen) if chosen else self.targets


def _backend(table: Mapping[str, Any], where: str, source: str) -> dict[str, Any]:
    """The keys that say where the target's jobs run, checked together (farm/backend)."""
    engine = _string(table, "engine", where) or LOCAL_ENGINE
    folder = Path(source).parent
    tls = {
        key: str((folder / value).resolve())
        for key in ("tls_ca", "tls_cert", "tls_key")
        if (value := _string(table, key, where)) is not None
    }
    for key, path in tls.items():
        if not Path(path).is_file():
            raise ConfigError(
                f"{where}: {key} names {path}, which is not a file",
                fix="give the path of the PEM file, absolute or relative to the targets file",
            )
    if tls and not engine.startswith("tcp://"):
        raise ConfigError(
            f"{where}: {', '.join(tls)} apply to a tcp:// engine, not to {engine!r}",
            fix='set engine = "tcp://HOST:2376", or remove the TLS keys',
        )
    if ("tls_cert" in tls) != ("tls_key" in tls):
        raise ConfigError(f"{where}: tls_cert and tls_key go together", fix="give both, or neither")
    registry = _string(table, "registry", where)
    if engine == KUBERNETES and registry is None:
        raise ConfigError(
            f"{where}: a kubernetes target needs the registry its nodes pull from",
            fix='add registry = "registry.example.com/farm"',
        )
    for key in ("registry", "namespace", "kube_context"):
        if key in table and engine != KUBERNETES:
            raise ConfigError(
                f'{where}: {key} applies to engine = "kubernetes", not to {engine!r}',
                fix=f'remove {key}, or set engine = "kubernetes"',
            )
    return {
        "engine": engine,
        **tls,
        "registry": registry,
        "namespace": _string(table, "namespace", where) or "default",
        "kube_context": _string(table, "kube_context", where),
    }


def _memory(table: Mapping[str, Any], where: str) -> str:
    value = table.get("memory", DEFAULT_MEMORY)
    found = _MEMORY_RE.match(value.strip().lower()) if isinstance(value, str) else None
    if found is None or int(found["number"]) * _MEMORY_UNITS[found["unit"]] < _MIN_MEMORY:
        raise ConfigError(
            f"{where}: memory must be at least 6m, written as a number and a unit (b, k, m, g), not {value!r}",
            fix='e.g. memory = "2g"',
        )
    return f"{found['number']}{found['unit']}"


def _thread_counts(table: Mapping[str, Any], where: str) -> tuple[int, ...]:
    """The profile's thread counts: distinct whole numbers of at least 1, at least one of them."""
    value = table.get("threads", None)
    if value is None:
        return ()
    counts = value if isinstance(value, list) else None
    if (
        not counts
        or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in counts)
        or len(set(counts)) != len(counts)
    ):
        raise ConfigError(
            f"{where}: threads must be a non-empty list of distinct whole numbers of at least 1, not {value!r}",
            fix="e.g. threads = [1, 2, 4] (intra-op thread counts to time in the profile)",
        )
    return tuple(counts)


def _flags(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    """CPU flags as /proc/cpuinfo spells them: a misspelt one would never match, and silently change placement."""
    flags = _strings(table, key, where)
    for flag in flags:
        if flag not in KNOWN_FLAGS:
            raise ConfigError(f"{where}: unknown CPU flag '{flag}' in {key}", fix=nearest(flag, KNOWN_FLAGS))
    return flags


def default_targets_file() -> Path:
    """./targets.toml when there is one, else the file shipped with farm."""
    local = Path("targets.toml")
    if local.is_file():
        return local
    return Path(__file__).with_name("targets.toml")


def load_config(path: Path | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Read targets.toml. ``env`` is passed in (not read from os.environ) so tests can give their own."""
    env = os.environ if env is None else env
    path = path or (Path(env["FARM_TARGETS"]) if env.get("FARM_TARGETS") else default_targets_file())
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such targets file", fix="pass --targets FILE or set FARM_TARGETS to an existing file"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: is not valid TOML ({exc})", fix="fix the syntax at that line") from None
    source = str(path)
    for key in document:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{source}: unknown table '[{key}]'", fix=nearest(key, _TOP_KEYS))
    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{source}: [defaults] must be a table")
    for key in defaults:
        if key not in _DEFAULT_KEYS:
            raise ConfigError(f"{source}: [defaults]: unknown key '{key}'", fix=nearest(key, _DEFAULT_KEYS))
    tables = document.get("targets", {})
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{source}: has no [targets.<name>] tables", fix="add at least one target")
    overrides = _env_overrides(env)
    targets = []
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: targets.{name} must be a table")
        merged = {**defaults, **table, **overrides}
        targets.append(Target.from_table(name, merged, source=source))
    artifacts = Path(env["FARM_ARTIFACT_CACHE_DIR"]) if env.get("FARM_ARTIFACT_CACHE_DIR") else None
    return Config(source=path, targets=tuple(targets), cache_dir=cache_dir_of(env), artifact_cache=artifacts)


def artifact_cache_dir_of(env: Mapping[str, str]) -> Path:
    """The artifact cache's folder: FARM_ARTIFACT_CACHE_DIR, else "artifacts" in farm's cache folder."""
    chosen = env.get("FARM_ARTIFACT_CACHE_DIR")
    return Path(chosen) if chosen else cache_dir_of(env) / ARTIFACT_CACHE_FOLDER


def cache_dir_of(env: Mapping[str, str]) -> Path:
    """farm's cache folder: FARM_CACHE_DIR, else farm in $XDG_CACHE_HOME (when it is an absolute path, as the XDG
    base directory specification requires), else ~/.cache/farm."""
    if env.get("FARM_CACHE_DIR"):
        return Path(env["FARM_CACHE_DIR"])
    xdg = env.get("XDG_CACHE_HOME")
    return Path(xdg) / "farm" if xdg and Path(xdg).is_absolute() else Path.home() / ".cache" / "farm"


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """FARM_BASE overrides every target's base, e.g. to try a registry base without editing the file."""
    overrides: dict[str, Any] = {}
    if env.get("FARM_BASE"):
        overrides["base"] = env["FARM_BASE"]
    return overrides


def _runtime(spec: str | None, where: str) -> tuple[str, str]:
    match = _RUNTIME_RE.match(spec or "")
    if not match:
        raise ConfigError(
            f"{where}: runtime '{spec}' is not a pinned requirement",
            fix="write it as 'onnxruntime==1.31.1' or 'onnxruntime-gpu==1.31.1'",
        )
    package = match["package"]
    if package not in RUNTIME_PACKAGES:
        raise ConfigError(f"{where}: unknown runtime package '{package}'", fix=nearest(package, RUNTIME_PACKAGES))
    return package, match["version"]


def _emulate_cpu(table: Mapping[str, Any], where: str) -> str | None:
    value = _string(table, "emulate_cpu", where)
    if value is not None and value.lower() in ("max", "host"):
        # max (every feature QEMU has: SVE and SME on arm64) made a U8U8 MatMul wrong; host is KVM-only.
        raise ConfigError(
            f"{where}: emulate_cpu = {value!r} is not a CPU a target could be, and QEMU's 'max' gave "
            "wrong int8 results",
            fix='name a real CPU model, e.g. "neoverse-n1" (arm64) or "Haswell"',
        )
    return value


def _string(table: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = table.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}: missing key '{key}'", fix=f'add {key} = "..."')
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty string, not {value!r}")
    return value


def _strings(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: {key} must be a list of strings, not {value!r}")
    return tuple(value)
