"""Screenshots of the published boards' pages, to look at them as a reader does.

Renders each track's ``index.html`` in headless Chromium (the Debian ``chromium``
command line: ``--headless --screenshot``, no driver package) into
``docs/img/board-<track>.png``. A board page is long (every entry is a row), so the
shot is the top ``--height`` pixels: the header, the heat maps and, on the default
boards, the Pareto plots. It is saved as a 256-colour PNG (Pillow, which matplotlib
brings) to stay small in git.

``--from-json`` first rewrites each board's views from its ``leaderboard.json`` with the
installed writers (``Board.from_json``, as ``benchbench merge`` does) into a temporary
folder, so the shot shows what the current code renders without touching the board:

    PYTHONPATH=.:plugins .venv/bin/python benchmarks/screenshots.py --from-json
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = ("chromium", "chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--force-device-scale-factor=1", "--virtual-time-budget=5000"]


def chromium() -> str:
    found = next((shutil.which(c) for c in CHROMIUM if shutil.which(c)), None)
    if found is None:
        sys.exit("chromium is not installed: apt-get install chromium")
    return found


def rebuild(board_dir: Path, into: Path) -> Path:
    """``board_dir``'s views rewritten from its leaderboard.json into ``into``."""
    from benchbench.leaderboard import Board, validate_board, write_board
    from benchbench.registry import load_registry

    data = json.loads((board_dir / "leaderboard.json").read_text())
    problems = validate_board(data)
    if problems:
        sys.exit(f"{board_dir / 'leaderboard.json'}: {problems[0]}")
    writers: dict = {}
    for extra in load_registry().pm.hook.benchbench_leaderboard_writers():
        writers.update(extra)
    write_board(Board.from_json(data), into, writers)
    return into


def shoot(page: Path, png: Path, width: int, height: int) -> None:
    from PIL import Image

    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={png}", page.resolve().as_uri()],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    with Image.open(png) as image:
        small = image.convert("RGB").quantize(256)
    small.save(png, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", type=Path, default=ROOT / "leaderboards", help="one folder per track")
    parser.add_argument("--tracks", nargs="+", default=["clip", "reid"])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=3600)
    parser.add_argument("--from-json", action="store_true",
                        help="re-render each board from its leaderboard.json (in a temporary folder) first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for track in args.tracks:
            board = args.boards / track
            if args.from_json:
                board = rebuild(board, Path(tmp) / track)
            png = args.out / f"board-{track}.png"
            shoot(board / "index.html", png, args.width, args.height)
            print(f"{png.relative_to(ROOT) if png.is_relative_to(ROOT) else png}: {png.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
