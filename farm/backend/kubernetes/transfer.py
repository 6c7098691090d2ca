"""Files in and out of a job's pod through ``pods/exec``: the inputs as a length-framed tar into the init container
(farm/job/pod/receive.py), the results as a tar out of the collector (farm/job/pod/send.py)."""

from __future__ import annotations

import io
import re
import struct
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from farm.backend.engine import Mount, RunSpec
from farm.backend.kubernetes.client import Clients
from farm.backend.kubernetes.manifests import COLLECTED, INPUTS, OUTPUTS, RECEIVED, input_mounts, output_mounts
from farm.backend.runner import PYTHON
from farm.errors import one_line

# Bytes per websocket frame of an exec session's stdin.
_CHUNK = 256 << 10


def send_inputs(clients: Clients, namespace: str, pod: str, spec: RunSpec) -> str | None:
    """Stream the read-only mounts into the init container; None when they arrived, else why not."""
    with tempfile.TemporaryFile(prefix="farm-inputs-") as archive:
        try:
            _write_inputs(spec, archive)
        except OSError as exc:  # a mount's source is missing or unreadable, as a bind mount's would be
            return f"reading them on the controller failed ({one_line(exc)})"
        size = archive.tell()
        archive.seek(0)
        session = _exec(
            clients, namespace, pod, "receive", [PYTHON, "-m", "farm.job.pod.receive", INPUTS, RECEIVED], stdin=True
        )
        try:
            session.write_stdin(struct.pack(">Q", size))
            for block in iter(lambda: archive.read(_CHUNK), b""):
                session.write_stdin(block)
            out, err = _drain(session, None)
        finally:
            session.close()
    if b"farm-received" not in out:
        return (err or out).decode("utf-8", "replace").strip()[-300:] or "the exec session ended without a word"
    return None


def collect_outputs(clients: Clients, namespace: str, pod: str, spec: RunSpec) -> str | None:
    """Bring back what the job wrote under each writable mount; None when it came, else why not."""
    outputs = output_mounts(spec)
    if not outputs:
        return None
    pairs = [f"{volume}={OUTPUTS}/{volume}" for volume, _ in outputs]
    with tempfile.TemporaryFile(prefix="farm-results-") as archive:
        session = _exec(
            clients, namespace, pod, "collect", [PYTHON, "-m", "farm.job.pod.send", COLLECTED, *pairs], stdin=False
        )
        try:
            _, err = _drain(session, archive)
        finally:
            session.close()
        sent = re.search(rb"farm-sent (\d+)", err)
        if sent is None or int(sent.group(1)) != archive.tell():
            return (
                f"{archive.tell()} bytes came of {sent.group(1).decode() if sent else 'an unknown size'}; "
                f"{err.decode('utf-8', 'replace').strip()[-200:]}"
            )
        archive.seek(0)
        _unpack_outputs(archive, outputs)
    return None


def _exec(clients: Clients, namespace: str, pod: str, container: str, command: list[str], *, stdin: bool) -> Any:
    session = clients.stream(
        clients.core.connect_get_namespaced_pod_exec,
        pod,
        namespace,
        container=container,
        command=command,
        stdin=stdin,
        stdout=True,
        stderr=True,
        tty=False,
        binary=True,
        _preload_content=False,
    )
    # The client keeps a copy of all output for read_all(), which farm never calls: results can be large.
    if hasattr(session, "_all"):
        session._all = _Discard()
    return session


class _Discard:
    def write(self, data: Any) -> None:
        pass

    def getvalue(self) -> bytes:
        return b""


def _drain(session: Any, sink: Any | None) -> tuple[bytes, bytes]:
    """Read an exec session to its end: stdout into ``sink`` (or returned), stderr returned."""
    out, err = io.BytesIO(), io.BytesIO()
    target = sink if sink is not None else out
    while session.is_open():
        session.update(timeout=1)
        if session.peek_stdout():
            target.write(session.read_stdout())
        if session.peek_stderr():
            err.write(session.read_stderr())
    target.write(session.read_stdout() or b"")
    err.write(session.read_stderr() or b"")
    return out.getvalue(), err.getvalue()


def _write_inputs(spec: RunSpec, stream: Any) -> None:
    """The read-only mounts as one tar: each under its part name (``m<i>``), a folder's content or the file itself."""
    with tarfile.open(fileobj=stream, mode="w") as archive:
        for part, mount in input_mounts(spec):
            archive.add(mount.source, arcname=part, filter=_readable)


def _readable(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = (info.mode | 0o444 | (0o111 if info.isdir() else 0)) & 0o755
    return info


def _unpack_outputs(stream: Any, outputs: Sequence[tuple[str, Mount]]) -> None:
    folders = dict(outputs)
    with tarfile.open(fileobj=stream, mode="r") as archive:
        for member in archive.getmembers():
            parts = PurePosixPath(member.name).parts
            if not parts or parts[0] not in folders or len(parts) == 1 or not (member.isfile() or member.isdir()):
                continue
            member.name = str(PurePosixPath(*parts[1:]))
            archive.extract(member, folders[parts[0]].source, filter="data")
