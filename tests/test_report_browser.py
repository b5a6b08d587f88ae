"""The report in a real browser: headless Chromium over the DevTools protocol.

Loads the tiny report from a file:// URL at 1280 px, then checks: no console error, no
uncaught exception, no CSP violation, no request other than file:/data:, every image
decoded (naturalWidth > 0), and no horizontal scrolling. A full-page screenshot is kept in
results/artifacts/ for people to look at.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it). Without it the test is
skipped on a developer machine and fails in CI (``CI=true``), where its absence is a bug.
"""

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_report import TinyReport, build_tiny_report

from stability.report.sections import SECTIONS

IN_CI = os.environ.get("CI", "").lower() in ("true", "1")

try:
    import websocket
except ImportError:  # pragma: no cover - depends on the environment
    if IN_CI:
        raise
    pytest.skip("pip install websocket-client (the test extra)", allow_module_level=True)

ARTIFACTS = Path(__file__).resolve().parents[1] / "results" / "artifacts"
VIEWPORT_WIDTH = 1280
VIEWPORT_HEIGHT = 900
STARTUP_TIMEOUT_S = 90.0
LOAD_TIMEOUT_S = 90.0
SCREENSHOT_TILE = 4000  # px per screenshot file
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
    f"--window-size={VIEWPORT_WIDTH},{VIEWPORT_HEIGHT}",
]
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if IN_CI:
        pytest.fail("chromium is not installed, and CI must run the browser test (.ci/run)")
    pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> TinyReport:
    return build_tiny_report(tmp_path_factory.mktemp("browser-report"))


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A headless Chromium with a fresh profile; yields its browser websocket URL."""
    binary = _chromium()
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found: list[str] = []
    log: list[str] = []
    ready = threading.Event()

    def drain() -> None:  # keep reading, or a full pipe would stall the browser
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            match = _LISTENING.search(line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
        ready.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        ready.wait(STARTUP_TIMEOUT_S)
        if not found:
            pytest.fail("chromium did not start:\n" + "".join(log[-20:]))
        yield found[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        reader.join(timeout=15)
        if proc.stderr is not None:
            proc.stderr.close()


class DevTools:
    """A minimal Chrome DevTools Protocol client: calls by id, events kept in order."""

    def __init__(self, url: str) -> None:
        # No Origin header: Chromium refuses DevTools websockets from foreign origins.
        self.ws = websocket.create_connection(url, timeout=LOAD_TIMEOUT_S, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = LOAD_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        if any(e.get("method") == event for e in self.events):
            return
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            self.events.append(message)
            if message.get("method") == event:
                return
        raise TimeoutError(event)

    def drain(self, seconds: float) -> None:
        """Collect late events (console messages after load) for ``seconds``."""
        self.ws.settimeout(seconds)
        try:
            while True:
                self.events.append(json.loads(self.ws.recv()))
        except websocket.WebSocketTimeoutException:
            pass
        finally:
            self.ws.settimeout(LOAD_TIMEOUT_S)

    def close(self) -> None:
        self.ws.close()


_IMAGES_JS = """JSON.stringify({
  images: Array.from(document.images).map(i => ({
    alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
    src: i.currentSrc.slice(0, 40)})),
  scrollWidth: document.documentElement.scrollWidth,
  clientWidth: document.documentElement.clientWidth,
  height: document.documentElement.scrollHeight,
  sections: document.querySelectorAll('main > section').length,
})"""


def _new_page(browser_url: str) -> str:
    """Open a fresh tab through the browser endpoint; its page websocket URL."""
    browser = DevTools(browser_url)
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
    finally:
        browser.close()
    return re.sub(r"/devtools/browser/.*$", f"/devtools/page/{target}", browser_url)


def load(browser_url: str, page: Path) -> tuple[DevTools, dict[str, Any]]:
    """Open ``page`` in a new 1280 px tab; the DevTools client and the page's state."""
    tools = DevTools(_new_page(browser_url))
    for domain in ("Runtime", "Log", "Page", "Network"):
        tools.call(f"{domain}.enable")
    tools.call(
        "Emulation.setDeviceMetricsOverride",
        width=VIEWPORT_WIDTH,
        height=VIEWPORT_HEIGHT,
        deviceScaleFactor=1,
        mobile=False,
    )
    tools.call("Page.navigate", url=page.resolve().as_uri())
    tools.wait_for("Page.loadEventFired")
    tools.drain(1.0)
    value = tools.call("Runtime.evaluate", expression=_IMAGES_JS, returnByValue=True)
    state: dict[str, Any] = json.loads(value["result"]["value"])
    return tools, state


@pytest.fixture(scope="module")
def loaded(browser: str, report: TinyReport) -> Iterator[tuple[DevTools, dict[str, Any]]]:
    tools, state = load(browser, report.out)
    try:
        yield tools, state
    finally:
        tools.close()


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(json.dumps(params.get("args"))[:300])
        elif method == "Runtime.exceptionThrown":
            out.append(json.dumps(params.get("exceptionDetails"))[:300])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            out.append(str(params["entry"].get("text"))[:300])
        elif method == "Network.loadingFailed":
            out.append(f"load failed: {params.get('errorText')}")
    return out


def test_no_console_errors(loaded: tuple[DevTools, dict[str, Any]]) -> None:
    tools, _ = loaded
    assert _errors(tools.events) == []


def test_loads_nothing_from_outside(loaded: tuple[DevTools, dict[str, Any]]) -> None:
    tools, _ = loaded
    urls = [
        e["params"]["request"]["url"]
        for e in tools.events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    assert urls, "the page load itself should be seen"
    assert all(u.startswith(("file:", "data:")) for u in urls), urls


def test_every_image_decoded(loaded: tuple[DevTools, dict[str, Any]]) -> None:
    _, state = loaded
    images = state["images"]
    assert len(images) >= 11
    bad = [i for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert bad == []
    assert all(i["alt"].strip() for i in images)
    assert state["sections"] == len(SECTIONS)


def test_fits_1280_px(loaded: tuple[DevTools, dict[str, Any]]) -> None:
    _, state = loaded
    assert state["scrollWidth"] <= state["clientWidth"] <= VIEWPORT_WIDTH


def test_screenshot_kept(loaded: tuple[DevTools, dict[str, Any]]) -> None:
    tools, state = loaded
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("report-browser-*.png"):
        old.unlink()
    height = int(state["height"])
    # Headless Chromium caps one capture at 8192 px: the full page comes in tiles.
    for n, y in enumerate(range(0, height, SCREENSHOT_TILE)):
        tile = min(SCREENSHOT_TILE, height - y)
        shot = tools.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": y, "width": VIEWPORT_WIDTH, "height": tile, "scale": 1},
        )
        png = base64.b64decode(shot["data"])
        assert png.startswith(b"\x89PNG")
        (ARTIFACTS / f"report-browser-{n + 1}.png").write_bytes(png)
    tiles = sorted(ARTIFACTS.glob("report-browser-*.png"))
    assert len(tiles) == -(-height // SCREENSHOT_TILE)
    assert all(t.stat().st_size > 10_000 for t in tiles)


BROKEN_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
</head><body><img alt="broken" src="data:image/png;base64,iVBORw0KGgoAAAA=">
<script>console.error("inline script ran")</script>
<div style="width: 2000px">too wide</div></body></html>"""


def test_witness_checks_catch_a_broken_page(browser: str, tmp_path: Path) -> None:
    """The same checks on a known-bad page: an undecodable image, a blocked inline script
    (a CSP violation is a console error), and content wider than 1280 px."""
    page = tmp_path / "broken.html"
    page.write_text(BROKEN_PAGE)
    tools, state = load(browser, page)
    try:
        assert _errors(tools.events), "a CSP violation must show as a console error"
        assert [i for i in state["images"] if i["width"] == 0]
        assert state["scrollWidth"] > state["clientWidth"]
    finally:
        tools.close()
