"""Regenerate the screenshots of docs/screenshots/ from fresh runs of the demo and the Uganda study.

    .venv/bin/python docs/screenshots/make_screenshots.py [--out WORK_FOLDER]

Runs ``eocausal demo`` and ``eocausal run studies/causalimages_uganda.toml`` (its data lie in
../shared/data beside the repository; without them the Uganda screenshot is skipped), opens each
report in headless Chromium with the browser test's DevTools client (tests/report/test_browser.py:
networking off) and writes, 1200 px wide:

- ``report.png``: the whole demo report;
- ``report_top.png``, ``uganda_top.png``: the first screen of each report (headline, design, imagery);
- ``overlap.png``, ``love_plot.png``: the demo's overlap figure and its love plot.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _browser_module():
    spec = importlib.util.spec_from_file_location("eocausal_test_browser", ROOT / "tests" / "report" / "test_browser.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _element_png(dt, selector: str) -> bytes:
    """A screenshot of the first element matching ``selector`` (a figure's image)."""
    x, y, w, h = dt.evaluate(f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();"
                             " return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]; })()")
    params = {"format": "png", "captureBeyondViewport": True, "clip": {"x": x, "y": y, "width": w, "height": h, "scale": 1}}
    return base64.b64decode(dt.call("Page.captureScreenshot", params)["data"])


def _shoot(tb, report: Path, profile: Path, shots: dict[str, str | None]) -> int:
    """Write each screenshot: name -> None (the first screen), "page" (the whole page) or a CSS selector."""
    with tb.DevTools(tb.CHROMIUM, profile, width=1200, height=1000) as dt:
        dt.open(report.resolve().as_uri())
        errors = dt.console_errors()
        if errors:
            raise SystemExit(f"{report}: console errors {errors}")
        height = dt.evaluate("document.documentElement.scrollHeight")
        for name, what in shots.items():
            png = (dt.screenshot(full_page=False) if what is None else dt.screenshot(full_page=True)
                   if what == "page" else _element_png(dt, what))
            (HERE / name).write_bytes(png)
            print(f"wrote {HERE / name}")
    return height


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for the runs (default: a temporary folder)")
    args = parser.parse_args()
    from eocausal.study.runner import demo_study_path, run_study

    tb = _browser_module()
    if tb.CHROMIUM is None:
        raise SystemExit("chromium is not installed (Debian package 'chromium')")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        demo = run_study(demo_study_path(), work / "demo").out
        height = _shoot(tb, demo / "report.html", work / "profile-demo",
                        {"report_top.png": None, "report.png": "page",
                         "overlap.png": 'img[alt^="Out-of-fold propensity"]', "love_plot.png": 'img[alt^="Balance:"]'})
        print(f"demo report: {height} px tall")
        uganda = ROOT / "studies" / "causalimages_uganda.toml"
        data = ROOT.parent / "shared" / "data" / "causalimages" / "CausalImagesTutorialData.RData"
        if data.is_file():
            out = run_study(uganda, work / "uganda").out
            height = _shoot(tb, out / "report.html", work / "profile-uganda", {"uganda_top.png": None})
            print(f"Uganda report: {height} px tall")
        else:
            print(f"skipped the Uganda screenshot: {data} is not there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
