"""Opens a local, self-contained HTML file in headless Chromium with no network and reports what happened on the page,
for tests of farm's HTML report.

It drives Debian's chromium package over the Chrome DevTools Protocol with websocket-client, because playwright and
selenium fetch their browsers from CDNs this project cannot reach. The network is shut three ways: every name resolves
to nothing, every proxied request goes to a closed local port, and the protocol blocks http(s), ws(s) and ftp URLs so
that each attempt shows up as a failed load rather than a hang.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websocket

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
VIEWPORT_HEIGHT = 800
# Chromium cannot capture much past 16384 px in one go.
MAX_SCREENSHOT_HEIGHT = 16000
BLOCKED_URLS = ["http://*", "https://*", "ws://*", "wss://*", "ftp://*"]

# Runs once the page has loaded and painted twice (or 200 ms passed, should animation frames not come).
MEASURE = """(async () => {
  await Promise.race([
    new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))),
    new Promise((done) => setTimeout(done, 200)),
  ]);
  const svgs = Array.from(document.querySelectorAll("svg"));
  const sized = svgs.filter((svg) => {
    const box = svg.getBoundingClientRect();
    return box.width > 0 && box.height > 0;
  });
  const root = document.documentElement, body = document.body;
  return {
    svg_count: svgs.length,
    svgs_with_size: sized.length,
    tables: document.querySelectorAll("table").length,
    text: body ? body.innerText : "",
    height: Math.max(root ? root.scrollHeight : 0, body ? body.scrollHeight : 0),
  };
})()"""


class BrowserError(RuntimeError):
    """Chromium did not start, crashed, or did not finish in time; the message ends with its own output."""


@dataclass(frozen=True)
class PageResult:
    console_errors: list[str]
    exceptions: list[str]
    failed_loads: list[str]
    dialogs: list[str]
    requests: list[str]
    svg_count: int
    svgs_with_size: int
    tables: int
    text: str
    screenshot: Path


def chromium_path() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_flags(profile: Path, width: int) -> list[str]:
    return [
        "--headless=new",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        # Root in a container has no user namespaces for the sandbox; the page is our own file.
        "--no-sandbox",
        "--disable-gpu",
        # Docker gives containers a 64 MB /dev/shm, which Chromium outgrows; Debian's launcher checks this itself
        # but its check breaks where /dev/shm is mounted twice.
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        # No network: no name resolves, and everything goes to a proxy on the discard port, one Chromium
        # refuses to connect to at all (strace shows no connect() but DevTools' own).
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-domain-reliability",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-breakpad",
        "--no-pings",
        "--mute-audio",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
        f"--window-size={width},{VIEWPORT_HEIGHT}",
        "about:blank",
    ]


def open_page(html: Path, screenshot: Path, *, width: int = 1280, timeout_s: float = 60) -> PageResult:
    """Loads `html` in a fresh headless Chromium, writes a full-page PNG to `screenshot`, and returns what the page
    logged, threw, requested and failed to load. Raises BrowserError when Chromium fails or `timeout_s` runs out;
    Chromium and its profile are gone when this returns, either way."""
    if chromium_path() is None:
        raise BrowserError(f"none of {', '.join(BROWSERS)} is on PATH")
    if not html.is_file():
        raise FileNotFoundError(html)
    deadline = time.monotonic() + timeout_s
    with tempfile.TemporaryDirectory(prefix="farm-chromium-") as tmp, _Chromium(Path(tmp), width, deadline) as cdp:
        return _Page(cdp, html.resolve(), screenshot, width).run()


def _describe(obj: dict[str, Any]) -> str:
    """A console argument (a protocol RemoteObject) as the console would show it."""
    if "value" in obj:
        value = obj["value"]
        return value if isinstance(value, str) else json.dumps(value)
    return str(obj.get("unserializableValue") or obj.get("description") or obj.get("type", "?"))


def _where(url: object, line: object) -> str:
    if not url:
        return ""
    return f" ({url}:{int(line) + 1})" if isinstance(line, int) else f" ({url})"


class _Chromium:
    """A Chromium process on a temporary profile, and a DevTools connection to it."""

    def __init__(self, tmp: Path, width: int, deadline: float) -> None:
        self.tmp = tmp
        self.width = width
        self.deadline = deadline
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: websocket.WebSocket | None = None

    def __enter__(self) -> _Cdp:
        profile = self.tmp / "profile"
        profile.mkdir()
        log = self.tmp / "chromium.log"
        # Keep everything Chromium writes outside the profile (crash reports, caches) in the same temporary folder.
        env = {
            **os.environ,
            "HOME": str(self.tmp),
            "XDG_CONFIG_HOME": str(self.tmp / "config"),
            "XDG_CACHE_HOME": str(self.tmp / "cache"),
        }
        browser = chromium_path()
        assert browser is not None
        try:
            with log.open("wb") as out:
                # Its own session, so that one kill of the process group takes the renderers and helpers too.
                self.proc = subprocess.Popen(
                    [browser, *chromium_flags(profile, self.width)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            port, path = self._devtools_address(profile / "DevToolsActivePort")
            self.ws = websocket.create_connection(
                f"ws://127.0.0.1:{port}{path}",
                timeout=max(self.deadline - time.monotonic(), 0.1),
                # Chromium refuses DevTools connections that carry an Origin, and a proxy from the environment
                # must not get this one.
                suppress_origin=True,
                http_no_proxy=["127.0.0.1"],
                # Screenshots come as base64 in frames of megabytes, whose UTF-8 Python checks at about 8 MB/s.
                skip_utf8_validation=True,
            )
        except BaseException:
            self._stop()
            raise
        return _Cdp(self.ws, self.deadline, self._output)

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _devtools_address(self, port_file: Path) -> tuple[int, str]:
        """Chromium writes its port, then the browser's WebSocket path, once it listens."""
        while True:
            with contextlib.suppress(OSError, ValueError):
                lines = port_file.read_text().split()
                if len(lines) >= 2:
                    return int(lines[0]), lines[1]
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BrowserError(
                    f"chromium exited with status {self.proc.returncode} before it listened" + self._output()
                )
            if time.monotonic() > self.deadline:
                raise BrowserError("timed out waiting for chromium to listen for DevTools" + self._output())
            time.sleep(0.05)

    def _output(self) -> str:
        try:
            lines = (self.tmp / "chromium.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        # Without a D-Bus, which containers lack, Chromium complains at length and harmlessly.
        tail = "\n".join(line for line in lines if "dbus" not in line)[-2000:].strip()
        return f"\nchromium's output:\n{tail}" if tail else ""

    def _stop(self) -> None:
        if self.ws is not None:
            # Without waiting for Chromium to answer the close frame: it is killed next.
            with contextlib.suppress(Exception):
                self.ws.close(timeout=0)
            self.ws = None
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        # The renderers and helpers die with the group; wait for them before the profile goes.
        for _ in range(100):
            if not _group_running(self.proc.pid):
                break
            time.sleep(0.05)
        self.proc = None


def _group_running(group: int) -> bool:
    """Whether a process of the group still runs. Not kill(0), which counts zombies: where the container's init
    is slow to reap the orphaned helpers, they linger for a second or more, holding no files."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            state, _parent, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == group and state not in "ZX":
                return True
    return False


class _Cdp:
    """Sends protocol commands and hands every event to `on_event` while it waits for their answers."""

    def __init__(self, ws: websocket.WebSocket, deadline: float, output: Callable[[], str]) -> None:
        self.ws = ws
        self.deadline = deadline
        self.output = output
        self.next_id = 0
        self.answers: dict[int, dict[str, Any]] = {}
        self.on_event: Callable[[str, dict[str, Any]], None] = lambda method, params: None

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None) -> int:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        return self.next_id

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None) -> dict[str, Any]:
        sent = self.send(method, params, session=session)
        self.wait_until(lambda: sent in self.answers, f"the answer to {method}")
        answer = self.answers.pop(sent)
        if "error" in answer:
            raise BrowserError(f"{method} failed: {answer['error'].get('message', answer['error'])}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def wait_until(self, done: Callable[[], bool], what: str) -> None:
        while not done():
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"timed out waiting for {what}" + self.output())
            self.receive(left, what)

    def settle(self, done: Callable[[], bool], seconds: float) -> None:
        """Like wait_until, but gives up quietly after `seconds`."""
        until = min(time.monotonic() + seconds, self.deadline)
        while not done() and (left := until - time.monotonic()) > 0:
            self.receive(left, "the page to settle")

    def receive(self, seconds: float, what: str) -> None:
        """Takes in one message, or none in `seconds`."""
        self.ws.settimeout(seconds)
        try:
            raw = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return
        except (websocket.WebSocketException, OSError) as exc:
            raise BrowserError(f"lost the DevTools connection waiting for {what}: {exc}" + self.output()) from exc
        message = json.loads(raw)
        if "id" in message:
            self.answers[message["id"]] = message
        elif "method" in message:
            self.on_event(message["method"], message.get("params", {}))


class _Page:
    """One page in its own tab: what it reports while it loads, then its measurements and screenshot."""

    def __init__(self, cdp: _Cdp, html: Path, screenshot: Path, width: int) -> None:
        self.cdp = cdp
        self.url = html.as_uri()
        self.screenshot = screenshot
        self.width = width
        self.session: str | None = None
        self.console_errors: list[str] = []
        self.exceptions: list[str] = []
        self.failed_loads: list[str] = []
        self.dialogs: list[str] = []
        self.sent: list[tuple[str, str]] = []  # (requestId, url) of every request
        self.urls: dict[str, str] = {}
        self.lifecycle: set[tuple[str, str]] = set()  # (loaderId, event name) for the main frame
        self.frame: str | None = None
        self.crashed = False

    def run(self) -> PageResult:
        cdp = self.cdp
        cdp.on_event = self.on_event
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Inspector", "Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Page.setLifecycleEventsEnabled", {"enabled": True})
        self.call("Network.setBlockedURLs", {"urls": BLOCKED_URLS})
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": VIEWPORT_HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )

        navigated = self.call("Page.navigate", {"url": self.url})
        if navigated.get("errorText"):
            raise BrowserError(f"could not open {self.url}: {navigated['errorText']}")
        self.frame = navigated["frameId"]
        loader = navigated["loaderId"]
        # The load event, told apart from about:blank's by the navigation it belongs to.
        cdp.wait_until(lambda: (loader, "load") in self.lifecycle or self.crashed, f"{self.url} to load")
        self.check_alive()
        # Chromium calls the network idle after 500 ms without requests; late failures and errors land by then.
        cdp.settle(lambda: (loader, "networkIdle") in self.lifecycle or self.crashed, 2.0)
        self.check_alive()

        measured = self.evaluate(MEASURE)
        height = min(max(int(measured["height"]), 1), MAX_SCREENSHOT_HEIGHT)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        # The clip holds the cap: beyond the viewport, Chromium would otherwise capture the whole document.
        shot = self.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1},
            },
        )
        self.screenshot.parent.mkdir(parents=True, exist_ok=True)
        self.screenshot.write_bytes(base64.b64decode(shot["data"]))

        requests = [
            url
            for request_id, url in self.sent
            if request_id != loader and url != self.url and not url.startswith("data:")
        ]
        return PageResult(
            console_errors=self.console_errors,
            exceptions=self.exceptions,
            failed_loads=self.failed_loads,
            dialogs=self.dialogs,
            requests=requests,
            svg_count=int(measured["svg_count"]),
            svgs_with_size=int(measured["svgs_with_size"]),
            tables=int(measured["tables"]),
            text=str(measured["text"]),
            screenshot=self.screenshot,
        )

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.cdp.call(method, params, session=self.session)

    def evaluate(self, expression: str) -> dict[str, Any]:
        answer = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True})
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise BrowserError(f"measuring the page failed: {details.get('exception', {}).get('description')}")
        value: dict[str, Any] = answer["result"]["value"]
        return value

    def check_alive(self) -> None:
        if self.crashed:
            raise BrowserError(f"the page crashed while showing {self.url}" + self.cdp.output())

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("text", "")
            # "Uncaught" and the error with its stack; or, for a thrown non-Error, the value itself.
            description = _describe(details["exception"]) if "exception" in details else ""
            message = text if description in text else f"{text} {description}".strip()
            self.exceptions.append(message + _where(details.get("url"), details.get("lineNumber")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            message = " ".join(_describe(arg) for arg in params.get("args", []))
            frames = params.get("stackTrace", {}).get("callFrames", [])
            top = frames[0] if frames else {}
            self.console_errors.append(message + _where(top.get("url"), top.get("lineNumber")))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            self.console_errors.append(
                f"{entry.get('source', 'log')}: {entry.get('text', '')}"
                + _where(entry.get("url"), entry.get("lineNumber"))
            )
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            self.urls[params["requestId"]] = url
            self.sent.append((params["requestId"], url))
        elif method == "Network.loadingFailed":
            url = self.urls.get(params["requestId"], "?")
            why = [params.get("errorText") or "failed"]
            if params.get("blockedReason"):
                why.append(f"blocked by {params['blockedReason']}")
            if params.get("canceled"):
                why.append("canceled")
            self.failed_loads.append(f"{url}: {', '.join(why)}")
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append(f"{params.get('type', 'dialog')}: {params.get('message', '')}")
            # Nothing more happens on the page until the dialog goes; its answer is of no interest.
            self.cdp.send("Page.handleJavaScriptDialog", {"accept": False}, session=self.session)
        elif method == "Page.lifecycleEvent":
            if self.frame is None or params.get("frameId") == self.frame:
                self.lifecycle.add((params["loaderId"], params["name"]))
        elif method in ("Inspector.targetCrashed", "Target.targetCrashed"):
            self.crashed = True
