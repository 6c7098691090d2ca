"""Every InferenceSession the job opens, so that all variants run under the same options."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnxruntime as ort

from farm.job.spec import Level, SpecTarget

LEVELS: Mapping[Level, Any] = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class ProviderFallback(RuntimeError):
    """ORT quietly dropped the accelerator the target asked for; figures from the CPU would be mislabelled."""


_cuda_preloaded = False


def preload_cuda(providers: tuple[str, ...]) -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels before the first CUDA session, once per process.

    The GPU image gets them from PyPI (onnxruntime-gpu[cuda,cudnn]) rather than from a CUDA base image, and the
    loader's search path does not include site-packages: onnxruntime documents preload_dlls() for exactly this case.
    """
    global _cuda_preloaded
    if _cuda_preloaded or "CUDAExecutionProvider" not in providers or not hasattr(ort, "preload_dlls"):
        return
    _cuda_preloaded = True
    ort.preload_dlls()


def open_session(
    model: Path | bytes,
    *,
    target: SpecTarget,
    threads: int,
    config: Mapping[str, str] | None = None,
    level: Level = "all",
    optimized_model: Path | None = None,
    profile: bool = False,
) -> Any:
    """An ``ort.InferenceSession`` on ``target.providers``; raises ``ProviderFallback`` if the accelerator is lost.

    ``config`` holds session config entries (e.g. ``session.x64quantprecision``). With ``optimized_model`` ORT saves
    the graph after optimization at ``level`` there.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # One inter-op thread and sequential execution keep latency about the kernels, not the scheduler.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = LEVELS[level]
    if optimized_model is not None:
        options.optimized_model_filepath = str(optimized_model)
    if profile:
        # Until node_providers() ends it: which provider ran each node is what the profile tells.
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tempfile.gettempdir(), "farm-profile")
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    preload_cuda(target.providers)
    source = str(model) if isinstance(model, Path) else model  # a path, or a serialized model
    session = ort.InferenceSession(source, sess_options=options, providers=list(target.providers))
    used = list(session.get_providers())
    if target.wants_accelerator and target.providers[0] not in used:
        raise ProviderFallback(
            f"fell back to CPU: {target.providers[0]} was requested but the session uses {', '.join(used)} "
            f"(available here: {', '.join(ort.get_available_providers())})"
        )
    return session


def open_exact_session(model: str | bytes, *, threads: int) -> Any:
    """A CPU session with every graph optimization off: the model runs as written, so a QDQ model computes the exact
    arithmetic its quantizer meant (DequantizeLinear, the float op, QuantizeLinear), and no tensor is folded away."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def node_providers(session: Any) -> dict[str, int]:
    """How many of the session's nodes (after its graph optimizations) each provider ran, from its profile.

    Ends the session's profiling, so that later runs (the timed ones) are not profiled. An accelerator that the
    session lists as available may still have run none of the nodes (onnxruntime issue 23372): this is the count
    that says so.
    """
    path = session.end_profiling()
    try:
        with open(path, encoding="utf-8") as stream:
            events = json.load(stream)
    except (OSError, ValueError):
        return {}
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    ran: dict[str, str] = {}
    for event in events if isinstance(events, list) else []:
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
            provider = (event.get("args") or {}).get("provider")
            if provider:
                ran[event["name"]] = provider
    counts: dict[str, int] = {}
    for provider in ran.values():
        counts[provider] = counts.get(provider, 0) + 1
    return dict(sorted(counts.items()))


def providers_used(session: Any) -> list[str]:
    return [str(p) for p in session.get_providers()]
