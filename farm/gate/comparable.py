"""Whether two runs may be compared: latencies only from the same host class and settings, accuracies only on the
same data. A gate that compared a laptop's milliseconds with a CI runner's would fail or pass on noise."""

from __future__ import annotations

from farm.report.model import Report, RunInfo, TargetResult

# The CPU features that pick onnxruntime's kernels (MLAS dispatches on these); the rest of /proc/cpuinfo's flags
# (virtualisation, mitigations) differ between identical machines and say nothing of speed.
_KERNEL_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4", "ssse3", "asimd", "sve", "i8mm", "bf16", "dotprod")


def kernel_flags(run: RunInfo) -> frozenset[str]:
    return frozenset(f for f in run.host.cpu_flags if f.startswith(_KERNEL_FLAG_PREFIXES))


def latency_difference(new: Report, old: Report) -> str | None:
    """Why the two runs' timings must not be compared, or None when they may be."""
    return _run_difference(new, old, timing=True)


def memory_difference(new: Report, old: Report) -> str | None:
    """Why the two runs' memory figures must not be compared, or None: memory follows the architecture, the kernels
    the CPU features pick (their prepacked weights) and the graph optimizations, not the CPU model or its speed. The
    session's threads are compared per variant (its profile's ``session_threads``)."""
    return _run_difference(new, old, timing=False)


def _run_difference(new: Report, old: Report, *, timing: bool) -> str | None:
    if new.run is None or old.run is None:
        which = "the report" if new.run is None else "the baseline"
        return f"{which} is {(new if new.run is None else old).schema}, which does not record its host and settings"
    a, b = new.run, old.run
    compared: list[tuple[str, object, object]] = [
        ("host architecture", a.host.arch, b.host.arch),
        ("optimization level", a.settings.optimization_level, b.settings.optimization_level),
    ]
    if timing:
        compared[1:1] = [
            ("CPU", a.host.cpu_model, b.host.cpu_model),
            ("cores", a.host.cores, b.host.cores),
            ("threads", a.settings.threads, b.settings.threads),
            ("iterations", a.settings.iterations, b.settings.iterations),
            ("timing rounds", a.settings.timing_rounds, b.settings.timing_rounds),
        ]
    differences = [f"{what} {x!r} vs baseline {y!r}" for what, x, y in compared if x != y]
    flags_a, flags_b = kernel_flags(a), kernel_flags(b)
    if flags_a != flags_b:
        only_new, only_old = sorted(flags_a - flags_b), sorted(flags_b - flags_a)
        differences.append(
            "CPU features "
            + "; ".join(
                part
                for part in (
                    f"only here: {' '.join(only_new)}" if only_new else "",
                    f"only in the baseline: {' '.join(only_old)}" if only_old else "",
                )
                if part
            )
        )
    return "runs differ in " + ", ".join(differences) if differences else None


def accuracy_difference(new: Report, old: Report) -> str | None:
    """Why accuracy figures must not be compared (they were measured on other data), or None."""
    a, b = new.data, old.data
    if (a.source, a.samples, a.labels) != (b.source, b.samples, b.labels):
        return (
            f"runs used different data ({a.samples} samples from {a.source} vs baseline {b.samples} from "
            f"{b.source}), so their accuracies measure different things"
        )
    hashes = (None if new.run is None else new.run.data_sha256, None if old.run is None else old.run.data_sha256)
    if None in hashes:
        # A farm.report/1 report does not record its data's hash; the summary above is all there is to compare.
        return None
    if hashes[0] != hashes[1]:
        return "runs used different data (sha256 of the inputs differs), so their accuracies measure different things"
    return None


def target_timing_difference(new: TargetResult, old: TargetResult) -> str | None:
    """Per target: only timings of the same kind (measured with measured, masked with masked) compare."""
    here, there = _ran_on(new), _ran_on(old)
    if here != there:
        return f"ran on {here} here but on {there} in the baseline"
    if "emulated" in (new.mode, old.mode):
        return "emulated under QEMU: not timed, since its timings would not be measurements"
    kinds_new = {v.timing for v in new.variants if v.latency_ms is not None}
    kinds_old = {v.timing for v in old.variants if v.latency_ms is not None}
    if "emulated" in kinds_new | kinds_old:
        return "emulated under QEMU: its timings are not measurements"
    if not kinds_new or not kinds_old:
        return "not timed " + ("here" if not kinds_new else "in the baseline")
    if kinds_new != kinds_old:
        return f"timings are {'/'.join(sorted(kinds_new))} here but {'/'.join(sorted(kinds_old))} in the baseline"
    return None


def target_memory_difference(new: TargetResult, old: TargetResult) -> str | None:
    """Per target: memory only from the same machine and the same mode (a mask hides the features that pick the
    kernels; under QEMU the figure is the guest's heap, not a process's)."""
    here, there = _ran_on(new), _ran_on(old)
    if here != there:
        return f"ran on {here} here but on {there} in the baseline"
    if new.mode != old.mode:
        return f"ran {new.mode} here but {old.mode} in the baseline"
    return None


def _ran_on(target: TargetResult) -> str:
    """The machine a target's timings come from: the controller (its host is the run block's, compared per report)
    or a remote backend's place and CPU."""
    backend = target.backend
    if backend is None or backend.where == "local":
        return "local"
    return f"{backend.where} ({backend.cpu_model or 'CPU unknown'})"
