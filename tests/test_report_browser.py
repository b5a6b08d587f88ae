"""The report in a real browser: headless Chromium over the DevTools protocol.

Loads the tiny report from a file:// URL at 1400 px and at 800 px, then checks: no console
error, no uncaught exception, no CSP violation, no request other than file:/data:, every
image decoded (naturalWidth > 0), no horizontal scrolling of the page body at either
width, the verdict's colours, the recommendation table on the first screen, sections of a
few screens, and folds that open in print. Full-page screenshots at both widths, and the
page's size and height, are kept in results/artifacts/ (or ``$STABILITY_SCREENSHOTS``) for
people to look at.

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

ARTIFACTS = Path(
    os.environ.get("STABILITY_SCREENSHOTS")
    or Path(__file__).resolve().parents[1] / "results" / "artifacts"
)
WIDTHS = (1400, 800)  # a laptop, and a half-screen window
VIEWPORT_WIDTH = WIDTHS[0]
VIEWPORT_HEIGHT = 900
SCREENS_PER_SECTION = 4  # a section's default (unfolded) height, at most, in viewports
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


_STATE_JS = """JSON.stringify({
  images: Array.from(document.images).map(i => ({
    alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
    src: i.currentSrc.slice(0, 40)})),
  scrollWidth: document.documentElement.scrollWidth,
  clientWidth: document.documentElement.clientWidth,
  bodyScrollWidth: document.body.scrollWidth,
  height: document.documentElement.scrollHeight,
  sections: document.querySelectorAll('main > section').length,
  sectionHeights: Array.from(document.querySelectorAll('main > section')).map(
    s => [s.id, s.getBoundingClientRect().height]),
})"""

_COLOURS_JS = """JSON.stringify({
  state: getComputedStyle(document.querySelector('#verdict .state')).backgroundColor,
  border: getComputedStyle(document.querySelector('#verdict')).borderTopColor,
  badges: Object.fromEntries(['pass', 'warn', 'fail', 'not-run'].map(h => {
    const b = document.querySelector('.badge.h-' + h);
    return [h, b ? getComputedStyle(b).backgroundColor : null];
  })),
  cells: Array.from(document.querySelectorAll('#recommendation td.rec')).map(
    td => [td.className, getComputedStyle(td).backgroundColor]),
  rows: Array.from(document.querySelectorAll('#recommendation tbody th')).map(th => th.textContent),
  tableBottom: document.querySelector('#recommendation').getBoundingClientRect().bottom,
  offendersBottom: document.querySelector('#offenders').getBoundingClientRect().bottom,
})"""

# The first closed <details> (a folded heat map): one summary line on screen, the whole
# figure in print.
_FOLDED_JS = """(() => {
  const d = document.querySelector('details.fold:not([open])');
  return d ? d.getBoundingClientRect().height : -1;
})()"""


def _new_page(browser_url: str) -> str:
    """Open a fresh tab through the browser endpoint; its page websocket URL."""
    browser = DevTools(browser_url)
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
    finally:
        browser.close()
    return re.sub(r"/devtools/browser/.*$", f"/devtools/page/{target}", browser_url)


def load(
    browser_url: str, page: Path, width: int = VIEWPORT_WIDTH
) -> tuple[DevTools, dict[str, Any]]:
    """Open ``page`` in a new tab ``width`` px wide; the DevTools client and the page's state."""
    tools = DevTools(_new_page(browser_url))
    for domain in ("Runtime", "Log", "Page", "Network"):
        tools.call(f"{domain}.enable")
    tools.call(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=VIEWPORT_HEIGHT,
        deviceScaleFactor=1,
        mobile=False,
    )
    tools.call("Page.navigate", url=page.resolve().as_uri())
    tools.wait_for("Page.loadEventFired")
    tools.drain(1.0)
    state: dict[str, Any] = json.loads(evaluate(tools, _STATE_JS))
    return tools, state


def evaluate(tools: DevTools, expression: str) -> Any:
    return tools.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"][
        "value"
    ]


@pytest.fixture(scope="module", params=WIDTHS, ids=[f"{w}px" for w in WIDTHS])
def loaded(
    request: pytest.FixtureRequest, browser: str, report: TinyReport
) -> Iterator[tuple[DevTools, dict[str, Any], int]]:
    width = int(request.param)
    tools, state = load(browser, report.out, width)
    try:
        yield tools, state, width
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


def test_no_console_errors(loaded: tuple[DevTools, dict[str, Any], int]) -> None:
    tools, _, _ = loaded
    assert _errors(tools.events) == []


def test_loads_nothing_from_outside(loaded: tuple[DevTools, dict[str, Any], int]) -> None:
    tools, _, _ = loaded
    urls = [
        e["params"]["request"]["url"]
        for e in tools.events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    assert urls, "the page load itself should be seen"
    assert all(u.startswith(("file:", "data:")) for u in urls), urls


def test_every_image_decoded(loaded: tuple[DevTools, dict[str, Any], int]) -> None:
    _, state, _ = loaded
    images = state["images"]
    assert len(images) >= 11
    bad = [i for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert bad == []
    assert all(i["alt"].strip() for i in images)
    assert state["sections"] == len(SECTIONS)


def test_page_body_never_scrolls_sideways(loaded: tuple[DevTools, dict[str, Any], int]) -> None:
    """Wide tables scroll inside their own box; the page itself fits the window."""
    _, state, width = loaded
    assert state["scrollWidth"] <= state["clientWidth"] <= width
    assert state["bodyScrollWidth"] <= width


# Computed colours of report.css's --pass-bg, --warn-bg, --fail-bg, --none-bg.
PASS_BG, WARN_BG, FAIL_BG, NONE_BG = (
    "rgb(223, 242, 225)", "rgb(255, 240, 199)", "rgb(253, 224, 224)", "rgb(230, 232, 235)",
)  # fmt: skip


def test_verdict_colours(loaded: tuple[DevTools, dict[str, Any], int]) -> None:
    """The tiny report has a failing property and no baseline: the banner is red, and every
    health has its own colour; the recommendation cells are green where an init is stable."""
    tools, _, _ = loaded
    colours = json.loads(evaluate(tools, _COLOURS_JS))
    assert colours["state"] == FAIL_BG
    assert colours["border"] == "rgb(163, 20, 27)"
    # "Your model" is not run in the tiny report (no probe stored): its badge is grey.
    badges = {"pass": PASS_BG, "warn": WARN_BG, "fail": FAIL_BG, "not-run": NONE_BG}
    assert colours["badges"] == badges
    assert colours["rows"] == ["relu", "tanh"]
    assert colours["cells"] == [["rec ok", PASS_BG]] * 6


def test_recommendation_on_the_first_screen(loaded: tuple[DevTools, dict[str, Any], int]) -> None:
    tools, _, width = loaded
    colours = json.loads(evaluate(tools, _COLOURS_JS))
    assert colours["tableBottom"] <= VIEWPORT_HEIGHT
    if width >= 1000:  # side by side with the recommendation
        assert colours["offendersBottom"] <= VIEWPORT_HEIGHT


def test_sections_stay_within_a_few_screens(
    loaded: tuple[DevTools, dict[str, Any], int],
) -> None:
    _, state, _ = loaded
    budget = SCREENS_PER_SECTION * VIEWPORT_HEIGHT
    tall = {name: h for name, h in state["sectionHeights"] if h > budget}
    assert tall == {}


def test_folds_open_in_print(loaded: tuple[DevTools, dict[str, Any], int]) -> None:
    tools, _, _ = loaded
    assert 0 < evaluate(tools, _FOLDED_JS) < 60  # one summary line on screen
    tools.call("Emulation.setEmulatedMedia", media="print")
    try:
        assert evaluate(tools, _FOLDED_JS) > 150  # the figure, when printed
    finally:
        tools.call("Emulation.setEmulatedMedia", media="")


def test_screenshots_and_metrics_kept(
    loaded: tuple[DevTools, dict[str, Any], int], report: TinyReport
) -> None:
    tools, state, width = loaded
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob(f"report-browser-{width}px-*.png"):
        old.unlink()
    height = int(state["height"])
    # Headless Chromium caps one capture at 8192 px: the full page comes in tiles.
    for n, y in enumerate(range(0, height, SCREENSHOT_TILE)):
        tile = min(SCREENSHOT_TILE, height - y)
        shot = tools.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": y, "width": width, "height": tile, "scale": 1},
        )
        png = base64.b64decode(shot["data"])
        assert png.startswith(b"\x89PNG")
        (ARTIFACTS / f"report-browser-{width}px-{n + 1}.png").write_bytes(png)
    tiles = sorted(ARTIFACTS.glob(f"report-browser-{width}px-*.png"))
    assert len(tiles) == -(-height // SCREENSHOT_TILE)
    assert all(t.stat().st_size > 10_000 for t in tiles)
    metrics = {"width_px": width, "height_px": height, "bytes": report.out.stat().st_size}
    (ARTIFACTS / f"report-browser-{width}px.json").write_text(json.dumps(metrics))


BROKEN_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
</head><body><img alt="broken" src="data:image/png;base64,iVBORw0KGgoAAAA=">
<script>console.error("inline script ran")</script>
<div style="width: 2000px">too wide</div></body></html>"""


def test_witness_checks_catch_a_broken_page(browser: str, tmp_path: Path) -> None:
    """The same checks on a known-bad page: an undecodable image, a blocked inline script
    (a CSP violation is a console error), and content wider than the window."""
    page = tmp_path / "broken.html"
    page.write_text(BROKEN_PAGE)
    tools, state = load(browser, page, 1280)
    try:
        assert _errors(tools.events), "a CSP violation must show as a console error"
        assert [i for i in state["images"] if i["width"] == 0]
        assert state["scrollWidth"] > state["clientWidth"]
    finally:
        tools.close()
