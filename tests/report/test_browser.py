"""The report in a real browser, and its LaTeX table.

A small demo-like study writes ``report.html``; headless Chromium (Debian's ``chromium``
package, which ``make test`` installs when it can) opens it with networking off and is driven
over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages ending in NUL
on file descriptors 3 and 4, so no websocket client is needed). The test asserts that the page
logs no console error or exception, requests nothing but the file itself and data: URIs,
decodes every figure, and renders to a screenshot that is not blank.

``tables/effects.tex`` is checked structurally (balanced braces and environments, booktabs
rules, the same number of cells in every row) and compiled when ``pdflatex`` is installed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from eocausal.study.runner import run_study

CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian package 'chromium'; `make test` installs it "
                             "when apt-get is available)")

#: Flags that keep Chromium off every network: all hosts unresolvable, every proxied request sent
#: to a closed local port, and the browser's own background services (updates, sync, QUIC) off.
OFFLINE_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio",
    "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars",
)

# The launcher moves the two pipe ends to file descriptors 3 (commands in) and 4 (replies out),
# where --remote-debugging-pipe expects them, then becomes Chromium (no fork, no preexec_fn).
_LAUNCHER = """
import fcntl, os, sys
r, w = (fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3])
for fd in sys.argv[1:3]:
    os.close(int(fd))
os.dup2(r, 3)
os.dup2(w, 4)
os.close(r)
os.close(w)
os.execv(sys.argv[3], sys.argv[3:])
"""


class DevTools:
    """A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe``."""

    def __init__(self, chromium: str, profile: Path, *, width: int = 1200, height: int = 900,
                 timeout: float = 60.0):
        self.timeout = timeout
        cmd_r, self._cmd_w = os.pipe()  # we write commands; Chromium reads fd 3
        self._res_r, res_w = os.pipe()  # Chromium writes fd 4; we read
        args = [sys.executable, "-c", _LAUNCHER, str(cmd_r), str(res_w), chromium, *OFFLINE_FLAGS,
                "--remote-debugging-pipe", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                "about:blank"]
        self.proc = subprocess.Popen(args, pass_fds=(cmd_r, res_w), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(cmd_r)
        os.close(res_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None
        self.width, self.height = width, height

    # ------------------------------------------------------------------ transport
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium over the DevTools pipe")
            ready, _, _ = select.select([self._res_r], [], [], left)
            if ready:
                chunk = os.read(self._res_r, 1 << 20)
                if not chunk:
                    err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
                    raise RuntimeError(f"Chromium closed the DevTools pipe (exit {self.proc.poll()}): {err[-2000:]}")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, *, browser: bool = False) -> dict:
        """Send a command (to the page session unless ``browser``) and return its result."""
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if not browser and self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str, *, seconds: float | None = None) -> dict:
        """Collect events until ``method`` arrives (returns it)."""
        for ev in self.events:
            if ev["method"] == method:
                return ev
        deadline = time.monotonic() + (seconds or self.timeout)
        while True:
            ev = self._read_message(deadline)
            if "method" in ev:
                self.events.append(ev)
                if ev["method"] == method:
                    return ev

    def drain(self, seconds: float) -> None:
        """Collect whatever events arrive within ``seconds`` (late requests, late console errors)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                ev = self._read_message(deadline)
                if "method" in ev:
                    self.events.append(ev)
        except TimeoutError:
            pass

    # ------------------------------------------------------------------ page
    def open(self, url: str) -> None:
        """A fresh tab with console, log and network recording on, then navigate to ``url``."""
        target = self.call("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 browser=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})
        self.events.clear()
        nav = self.call("Page.navigate", {"url": url})
        if nav.get("errorText"):
            raise RuntimeError(f"navigation to {url} failed: {nav['errorText']}")
        self.wait_for("Page.loadEventFired")
        self.drain(0.5)

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression!r} raised: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self, *, full_page: bool = True) -> bytes:
        """PNG bytes of the viewport, or of the whole page."""
        params: dict = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": self.width, "height": size["height"], "scale": 1})
        return base64.b64decode(self.call("Page.captureScreenshot", params)["data"])

    # ------------------------------------------------------------------ what happened
    def console_errors(self) -> list[str]:
        out = []
        for ev in self.events:
            p = ev.get("params", {})
            if ev["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description", "")))
                                                                 for a in p.get("args", [])))
            elif ev["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: " + (d.get("exception") or {}).get("description", d.get("text", "")))
            elif ev["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
                e = p["entry"]
                out.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}")
        return out

    def requests(self) -> list[str]:
        return [ev["params"]["request"]["url"] for ev in self.events if ev["method"] == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.call("Browser.close", browser=True)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            self.proc.stderr.close()
            os.close(self._cmd_w)
            os.close(self._res_r)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def png_pixels(png: bytes) -> np.ndarray:
    """(H, W, 3) uint8 pixels of a PNG (Pillow, which matplotlib depends on)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


def assert_not_blank(pixels: np.ndarray) -> None:
    flat = pixels.reshape(-1, 3)
    non_white = np.any(flat < 245, axis=1).mean()
    colours = len(np.unique(flat[:: max(1, len(flat) // 200_000)], axis=0))
    assert non_white > 0.02, f"only {non_white:.2%} of the screenshot is not white"
    assert colours > 64, f"the screenshot has only {colours} distinct colours"


# ============================================================================= fixtures
@pytest.fixture(scope="module")
def study_out(tmp_path_factory, small_study_toml) -> Path:
    base = tmp_path_factory.mktemp("browser")
    toml = base / "study.toml"
    toml.write_text(small_study_toml("browser check", 3,
                                     description="A small simulated study for the headless-browser test.",
                                     estimate='adjustments = ["tabular+image"]\n'), encoding="utf-8")
    return run_study(toml, base / "out").out


# ============================================================================= browser
@needs_chromium
def test_report_renders_offline_without_errors(study_out, tmp_path):
    report = (study_out / "report.html").resolve()
    url = report.as_uri()
    with DevTools(CHROMIUM, tmp_path / "profile") as dt:
        dt.open(url)
        errors = dt.console_errors()
        requests = dt.requests()
        title = dt.evaluate("document.title")
        images = dt.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        headings = dt.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        cells = dt.evaluate("document.querySelectorAll('table.effects tbody tr').length")
        top = dt.evaluate("(() => { const h = document.querySelector('#headline'); const r = h.getBoundingClientRect();"
                          " return [r.top, r.height, h.querySelectorAll('ul.checks li').length,"
                          " h.querySelector('.number').textContent]; })()")
        alts = dt.evaluate("Array.from(document.images).map(i => i.alt)")
        png = dt.screenshot(full_page=True)

    assert errors == [], errors
    outside = [u for u in requests if u != url and not u.startswith("data:")]
    assert outside == [], f"the report requested {outside}"
    assert url in requests  # the recorder saw the page's own load, so an empty list above means something
    assert title == "eocausal: browser check"
    assert headings[:4] == ["Design", "Imagery", "Estimates", "Overlap and balance"], headings
    assert {"Data", "Sensitivity", "Reproducibility"} <= set(headings), headings
    assert cells == 2  # difference in means and Hajek IPW
    # the headline is on the first screen, with the preferred estimate and its three checks
    head_top, head_height, n_checks, number = top
    assert head_top + head_height < 900 and n_checks == 3 and re.fullmatch(r"-?\d+\.\d{3}", number), top
    # chips, forest, overlap, weights, one love plot for all adjustment sets, unit map
    assert len(images) == 6, alts
    assert alts[0].startswith("Example chips of treated (top) and control (bottom) units")
    assert sum(a.startswith("Balance:") for a in alts) == 1, alts
    broken = [i for i, (complete, w, h) in enumerate(images) if not (complete and w > 100 and h > 100)]
    assert broken == [], f"figures that did not decode: {broken} of {images}"

    pixels = png_pixels(png)
    assert pixels.shape[1] == 1200 and pixels.shape[0] > 900, pixels.shape  # the whole page, not the viewport
    assert_not_blank(pixels)


@needs_chromium
def test_browser_check_catches_errors_and_requests(tmp_path):
    """The recorder is not blind: a page with a script error and an outside image is caught."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><title>bad</title></head><body><p>x</p>'
                    '<img src="http://example.invalid/a.png"><script>console.error("boom"); '
                    'undefinedFunction();</script></body></html>', encoding="utf-8")
    with DevTools(CHROMIUM, tmp_path / "profile") as dt:
        dt.open(page.as_uri())
        errors, requests = dt.console_errors(), dt.requests()
    assert any("boom" in e for e in errors), errors
    assert any("undefinedFunction" in e for e in errors), errors
    assert "http://example.invalid/a.png" in requests, requests


# ============================================================================= LaTeX
def _strip_escapes(tex: str) -> str:
    return re.sub(r"\\[{}&%$#_]", "", tex)


def test_latex_table_is_well_formed(study_out):
    tex = (study_out / "tables" / "effects.tex").read_text(encoding="utf-8")
    body = _strip_escapes(tex)
    depth = 0
    for ch in body:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, "a '}' closes nothing"
    assert depth == 0, "unbalanced braces"

    envs = re.findall(r"\\(begin|end)\{(\w+)\}", body)
    stack = []
    for kind, name in envs:
        if kind == "begin":
            stack.append(name)
        else:
            assert stack and stack.pop() == name, f"\\end{{{name}}} does not close the innermost environment"
    assert stack == []
    assert [n for k, n in envs if k == "begin"] == ["table", "tabular"]

    lines = body.splitlines()
    top, mid, bottom = (lines.index(r) for r in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert top < mid < bottom
    spec = re.search(r"\\begin\{tabular\}\{([lcr]+)\}", body).group(1)
    rows = lines[top + 1:bottom]
    rows = [r for r in rows if r != r"\midrule"]
    assert len(rows) >= 3  # header, difference in means, IPW
    for r in rows:
        assert r.endswith(r"\\"), r
        assert r.count("&") == len(spec) - 1, f"{r!r} has {r.count('&') + 1} cells for {len(spec)} columns"
    assert re.search(r"\\caption\{browser check\}", tex)


def test_latex_table_compiles(study_out, tmp_path):
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip("pdflatex is not installed; the table is checked structurally above")
    table = (study_out / "tables" / "effects.tex").read_text(encoding="utf-8")
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=1cm,landscape]{geometry}\n"
                   "\\begin{document}\n" + table + "\\end{document}\n", encoding="utf-8")
    r = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
