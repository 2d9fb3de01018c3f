"""The static leaderboard page, in a real headless Chromium driven over the DevTools
protocol (``--remote-debugging-pipe``: no extra package, no network)."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from benchbench.grid import run_grid
from benchbench.leaderboard import BUILTIN_WRITERS, Board, build_boards, fmt_value, write_boards
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


# -- colour and best marks, read from the generated HTML --------------------------------

def _hand_board(values: dict[tuple[str, str], list[float]], role: str | None = "utility",
                direction: str = "higher", preset: str = "default") -> Board:
    """One metric, (defense, attack) -> per-seed values, with every field a page shows."""
    rows = []
    for (defense, attack), vals in values.items():
        mean = sum(vals) / len(vals)
        rows.append({"track": "t", "dataset": "d", "model": "m", "defense": defense, "attack": attack,
                     "evaluator": "ev", "metric": "acc", "value": mean,
                     "std": pd.Series(vals).std() if len(vals) > 1 else 0.0,
                     "ci_low": min(vals) if len(vals) > 1 else None, "ci_high": max(vals) if len(vals) > 1 else None,
                     "n_seeds": len(vals), "seeds": list(range(len(vals))), "seed_values": vals,
                     "direction": direction, "role": role, "low": 0.0, "high": 1.0, "seen_in_training": False,
                     "source": "measured", "provenance": {"defense": f"{defense}@1", "attack": f"{attack}@1",
                                                          "git_commit": ["abc"]}})
    return Board("t", "task@1#00", pd.DataFrame(rows), preset=preset)


def _heat_cells(page: str) -> list[list[tuple[str, bool]]]:
    """Per heat-map body row: (background colour, marked best) of each value cell."""
    body = page.split('class="sortable heatmap"')[1].split("<tbody>")[1].split("</tbody>")[0]
    return [[(colour, best == ' class="best"')
             for best, colour in re.findall(r'<td( class="best")? data-value="[^"]*" style="background:(#[0-9a-f]{6})"',
                                            row)]
            for row in body.split("<tr>")[1:]]


# clean column high, attacked column low: a table-wide scale paints the first blue, the second red
SPLIT = {("none", "none"): [0.90, 0.91, 0.92], ("a", "none"): [0.80, 0.81, 0.82],
         ("none", "x"): [0.20, 0.21, 0.22], ("a", "x"): [0.30, 0.31, 0.32]}


def test_each_column_is_coloured_on_its_own_scale():
    (none_row, a_row) = _heat_cells(render(_hand_board(SPLIT)))
    # none is best clean, a is best under attack: each best gets the same colour, each worst another
    assert none_row[0][0] == a_row[1][0] != none_row[1][0] == a_row[0][0]
    flipped = _heat_cells(render(_hand_board(SPLIT, direction="lower")))
    assert flipped[0][0][0] == flipped[1][1][0] == none_row[1][0]  # lower is better: the largest is worst


def test_differences_within_the_seed_spread_stay_pale():
    wide = {("none", "none"): [0.5, 0.7, 0.9], ("a", "none"): [0.51, 0.71, 0.91]}  # 0.01 apart, std 0.2
    (none_row, a_row) = _heat_cells(render(_hand_board(wide)))
    clear = _heat_cells(render(_hand_board(SPLIT)))
    assert none_row[0][0] != clear[1][0][0] and a_row[0][0] != clear[0][0][0]  # not the extremes


def test_no_best_mark_on_a_diagnostic_metric_nor_on_a_smoke_board():
    lead = {("none", "none"): [0.90, 0.91, 0.92], ("a", "none"): [0.80, 0.81, 0.82]}
    assert [best for row in _heat_cells(render(_hand_board(lead))) for _, best in row] == [True, False]
    diagnostic = render(_hand_board(lead, role="diagnostic"))
    assert [best for row in _heat_cells(diagnostic) for _, best in row] == [False, False]
    assert "diagnostic, not ranked" in diagnostic and "no entry is marked best" in diagnostic
    colours = {c for row in _heat_cells(diagnostic) for c, _ in row}
    assert colours.isdisjoint(c for row in _heat_cells(render(_hand_board(lead))) for c, _ in row)  # neutral
    smoke = render(_hand_board(lead, preset="smoke"))
    assert 'class="best"' not in smoke and "Preset smoke" in smoke and "no entry is marked best" in smoke


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
    per_seed = {(r[0], r[1], r[2]): r[6] for r in entries}  # defense, attack, metric -> "0: v, 1: v, 2: v"
    assert EVIL in {r[0] for r in entries}
    for c in cells:
        for metric in ("abs_error", "score"):
            assert f"{c['seed']}: " in per_seed[c["defense"], c["attack"], f"error / {metric}"]

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
    browser.click("table.entries th:nth-child(4)")  # the mean column of the entries table
    means = [float(r) for r in browser.js(
        "Array.from(document.querySelector('table.entries').tBodies[0].rows).map(r => r.cells[3].textContent)")]
    assert means == sorted(means)
    # every table fits the page: nothing scrolls sideways
    assert browser.js("document.documentElement.scrollWidth <= document.documentElement.clientWidth")

    shot = browser.page("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "leaderboard-toy.png").write_bytes(base64.b64decode(shot["data"]))
    assert browser.problems() == []  # still no error after the clicks, and no alert() ran
