"""A second Docker engine beside the first, for the tests of remote backends, and gone after them.

It has its own socket, config file, data root, exec root, pid file and containerd namespace, no iptables rules, and
a bridge of its own (never ``--bridge none``: that deletes the first engine's docker0 bridge). Its default runtime is
runc behind a wrapper that bind-mounts a file of ours over every container's /proc/cpuinfo (runc allows that path,
as LXCFS uses it), so the machine "behind" it reports the CPU the test chooses, as a remote box with another CPU would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from farm.backend.engine import Engine
from farm.errors import EnvironmentProblem
from tests.conftest import missing

# runc, with every container's /proc/cpuinfo replaced by the file beside this script.
_WRAPPER = """#!{python}
import json, os, sys
args = sys.argv[1:]
if "create" in args and "--bundle" in args:
    config_path = os.path.join(args[args.index("--bundle") + 1], "config.json")
    with open(config_path) as stream:
        config = json.load(stream)
    config["mounts"].append({{"destination": "/proc/cpuinfo", "type": "bind", "source": {cpuinfo!r},
                             "options": ["rbind", "ro"]}})
    with open(config_path, "w") as stream:
        json.dump(config, stream)
os.execv({runc!r}, ["runc", *args])
"""


@dataclass(frozen=True, kw_only=True)
class SecondEngine:
    address: str
    engine: Engine
    cpu_model: str
    cpu_flags: frozenset[str]
    # The same engine on a 127.0.0.1 TCP port with TLS (client certificates required), and the client's files.
    tls_address: str
    tls_ca: Path
    tls_cert: Path
    tls_key: Path


def make_certificates(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as `dockerd --tlsverify` wants them."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=farm test CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    )
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN=farm test {name}",
            "-keyout",
            f"{name}-key.pem",
            "-out",
            f"{name}.csr",
        )
        (folder / f"{name}.ext").write_text(extension + "\n")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.pem",
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpuinfo_text(model: str, flags: frozenset[str]) -> str:
    return f"processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: {model}\nflags\t\t: {' '.join(sorted(flags))}\n\n"


@contextlib.contextmanager
def second_engine(
    root: Path, *, cpu_model: str, cpu_flags: frozenset[str], instance: int = 0
) -> Iterator[SecondEngine]:
    """An engine of its own under ``root``; ``instance`` tells apart the bridges of two that run at once."""
    dockerd, runc = shutil.which("dockerd"), shutil.which("runc")
    if os.geteuid() != 0 or dockerd is None or runc is None:
        missing("a second Docker engine needs root, dockerd and runc on this machine")
    assert dockerd is not None and runc is not None
    (root / "cpuinfo").write_text(cpuinfo_text(cpu_model, cpu_flags))
    wrapper = root / "fake-cpu-runc"
    wrapper.write_text(_WRAPPER.format(python=sys.executable, cpuinfo=str(root / "cpuinfo"), runc=runc))
    wrapper.chmod(0o755)
    (root / "daemon.json").write_text(
        json.dumps({"runtimes": {"fakecpu": {"path": str(wrapper)}}, "default-runtime": "fakecpu"})
    )
    suffix = (os.getpid() + 100 * instance) % 200
    bridge = f"farmtest{suffix}"
    sock = root / "docker.sock"
    make_certificates(root)
    port = free_port()
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    process = None
    try:
        subprocess.run(["ip", "addr", "add", f"172.31.{suffix}.1/24", "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        with (root / "dockerd.log").open("w") as log:
            process = subprocess.Popen(
                [
                    dockerd,
                    "--config-file",
                    str(root / "daemon.json"),
                    "--host",
                    f"unix://{sock}",
                    "--host",
                    f"tcp://127.0.0.1:{port}",
                    "--tlsverify",
                    "--tlscacert",
                    str(root / "ca.pem"),
                    "--tlscert",
                    str(root / "server.pem"),
                    "--tlskey",
                    str(root / "server-key.pem"),
                    "--data-root",
                    str(root / "data"),
                    "--exec-root",
                    str(root / "exec"),
                    "--pidfile",
                    str(root / "dockerd.pid"),
                    "--iptables=false",
                    "--bridge",
                    bridge,
                    "--containerd-namespace",
                    f"farmtest{suffix}",
                    "--containerd-plugins-namespace",
                    f"farmtest{suffix}-plugins",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        yield SecondEngine(
            address=f"unix://{sock}",
            engine=_wait_for(sock, process, root),
            cpu_model=cpu_model,
            cpu_flags=cpu_flags,
            tls_address=f"tcp://127.0.0.1:{port}",
            tls_ca=root / "ca.pem",
            tls_cert=root / "client.pem",
            tls_key=root / "client-key.pem",
        )
    finally:
        if process is not None:
            _stop(process)
        subprocess.run(["ip", "link", "del", bridge], check=False)
        shutil.rmtree(root / "data", ignore_errors=True)
        shutil.rmtree(root / "exec", ignore_errors=True)


def _wait_for(sock: Path, process: subprocess.Popen[bytes], root: Path) -> Engine:
    """The new engine, as farm reaches a remote one (through farm/backend/, the only code that imports the SDK)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the second dockerd exited {process.returncode}: {(root / 'dockerd.log').read_text()[-2000:]}"
            )
        if sock.exists():
            with contextlib.suppress(EnvironmentProblem):
                return Engine.connect_to(f"unix://{sock}")
        time.sleep(0.5)
    raise RuntimeError(f"the second dockerd did not answer in 60 s: {(root / 'dockerd.log').read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    # Its own containers first, so that it unmounts their layers before it goes.
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
