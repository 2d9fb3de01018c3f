"""The static leaderboard page, in a real headless Chromium driven over the DevTools
protocol (``--remote-debugging-pipe``: no extra package, no network)."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from benchbench.grid import run_grid
from benchbench.leaderboard import BUILTIN_WRITERS, build_boards, fmt_value, write_boards
from benchbench.plots import write_plots
from benchbench.registry import load_registry
from benchbench.site import render, write_html
from benchbench.store import Store
from tests.conftest import ROOT, TOY

EVIL = '<script>alert("pwned")</script>'
EVIL_PLUGIN = f'''
import benchbench
from benchbench.api import Defense


class Evil(Defense):
    name = {EVIL!r}
    track = "toy"
    description = "a name full of HTML"

    def fit(self, xs):
        return sorted(xs)[len(xs) // 2]


@benchbench.hookimpl
def benchbench_defenses():
    return [Evil]
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A toy board with a defense named like an XSS payload, written by every writer."""
    tmp = tmp_path_factory.mktemp("site")
    (tmp / "evil_plugin.py").write_text(EVIL_PLUGIN)
    registry = load_registry([TOY, str(tmp / "evil_plugin.py")], entry_points=False)
    config = tmp / "c.yaml"
    config.write_text(f"track: toy\nattacks: [none, shift]\ndefenses: [none, clamp, '{EVIL}']\n"
                      "evaluators: [error]\nseeds: 3\n")
    run_grid(config, tmp / "r.sqlite", tmp / "cache", registry=registry, progress=False)
    (board,) = build_boards(tmp / "r.sqlite")
    write_boards([board], tmp / "lb", {**BUILTIN_WRITERS, "plots": write_plots, "html": write_html})
    return board, tmp / "lb" / "toy", tmp / "r.sqlite"


def test_names_are_escaped(site):
    board, out, _ = site
    page = render(board)
    assert page.count("<script>") == 1  # ours, at the end
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in page
    assert (out / "index.html").read_text() == page


def test_page_references_only_files_it_wrote(site):
    _, out, _ = site
    page = (out / "index.html").read_text()
    for ref in ("leaderboard.json", "leaderboard.csv"):
        assert f'href="{ref}"' in page and (out / ref).is_file()
    figures = sorted(p.name for p in out.glob("pareto-*.svg"))
    assert figures and all(f'src="{name}"' in page for name in figures)


class Chromium:
    """Headless Chromium over the DevTools protocol on fds 3/4 (NUL-separated JSON)."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1400,1000", "--remote-debugging-pipe"]

    def __init__(self, profile: Path):
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def child_fds():  # the protocol expects exactly fds 3 (commands) and 4 (replies)
            a = fcntl.fcntl(to_browser, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_browser, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(["chromium", *self.FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     preexec_fn=child_fds, pass_fds=(3, 4),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buf, self._id, self.events = b"", 0, []
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=self.session)

    def _next(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if not select.select([self._read], [], [], max(0.0, deadline - time.time()))[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium exited")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def wait_for(self, match, timeout: float = 30) -> dict:
        deadline = time.time() + timeout
        while True:
            msg = self._next(deadline)
            if match(msg):
                return msg
            self.events.append(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._write, json.dumps(msg).encode() + b"\0")
        reply = self.wait_for(lambda m: m.get("id") == msg["id"])
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def page(self, method: str, params: dict | None = None) -> dict:
        return self.call(method, params, session=self.session)

    def open(self, url: str) -> None:
        self.page("Page.navigate", {"url": url})
        self.wait_for(lambda m: m.get("method") == "Page.loadEventFired")

    def js(self, expression: str):
        result = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click at the element's centre (not a synthetic el.click())."""
        box = self.js(f"(() => {{ const el = document.querySelector({json.dumps(selector)}); "
                      f"el.scrollIntoView({{block: 'center'}}); const r = el.getBoundingClientRect(); "
                      f"return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1],
                                                   "button": "left", "clickCount": 1})

    def problems(self) -> list[dict]:
        """Console errors, uncaught exceptions, failed loads, dialogs (alert = injected script)."""
        bad = {"Runtime.exceptionThrown", "Page.javascriptDialogOpening"}
        return [e for e in self.events if e.get("method") in bad
                or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
                or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self._read)
            os.close(self._write)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    chromium = Chromium(tmp_path_factory.mktemp("profile"))
    yield chromium
    chromium.close()


ROWS = """JSON.stringify(Array.from(document.querySelectorAll(%s)).map(t =>
  Array.from(t.tBodies[0].rows).map(r => Array.from(r.cells).map(c => c.textContent))))"""


def test_page_in_chromium(site, browser):
    board, out, store_path = site
    browser.open((out / "index.html").as_uri())
    assert browser.problems() == []
    assert browser.js("document.title") == "toy leaderboard · benchbench"
    assert browser.js("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")

    # every stored cell is on the page: in each heat map (mean ± std) and per seed in the entries
    with Store(store_path) as store:
        cells = [c for c in store.iter_cells() if c["status"] == "ok"]
    assert len(cells) == 3 * 2 * 3
    heatmaps = json.loads(browser.js(ROWS % "'table.heatmap'"))
    e = board.entries
    assert len(heatmaps) == 2  # one per metric
    for table, metric in zip(heatmaps, ["abs_error", "score"]):
        shown = {(row[0], attack): text for row in table for attack, text in zip(["none", "shift"], row[1:])}
        assert {(c["defense"], c["attack"]) for c in cells} == set(shown)
        for _, entry in e[e.metric == metric].iterrows():
            assert shown[entry.defense, entry.attack] == fmt_value(entry)
    (entries,) = json.loads(browser.js(ROWS % "'table.entries'"))
    assert len(entries) == len(e) == 12
    per_seed = {(r[2], r[3], r[5]): r[9] for r in entries}  # defense, attack, metric -> "0: v, 1: v, 2: v"
    assert EVIL in {r[2] for r in entries}
    for c in cells:
        for metric in ("abs_error", "score"):
            assert f"{c['seed']}: " in per_seed[c["defense"], c["attack"], metric]

    # sorting: click the "shift" header of the abs_error heat map, then click it again
    first_column = "Array.from(document.querySelector('table.heatmap').tBodies[0].rows).map(r => r.cells[0].textContent)"
    before = browser.js(first_column)
    assert before == ["none", *sorted(["clamp", EVIL])]  # clean reference first
    shift = e[(e.metric == "abs_error") & (e.attack == "shift")].sort_values("value").defense.tolist()
    browser.click("table.heatmap th:nth-child(3)")
    assert browser.js(first_column) == shift != before
    browser.click("table.heatmap th:nth-child(3)")
    assert browser.js(first_column) == shift[::-1]
    assert browser.js("document.querySelector('table.heatmap th:nth-child(3)').getAttribute('aria-sort')") == "descending"
    browser.click("table.entries th:nth-child(7)")  # the mean column of the entries table
    means = [float(r) for r in browser.js(
        "Array.from(document.querySelector('table.entries').tBodies[0].rows).map(r => r.cells[6].textContent)")]
    assert means == sorted(means)

    shot = browser.page("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "leaderboard-toy.png").write_bytes(base64.b64decode(shot["data"]))
    assert browser.problems() == []  # still no error after the clicks, and no alert() ran
