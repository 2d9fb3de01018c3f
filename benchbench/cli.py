"""The `benchbench` command: plugins, grid, leaderboard, validate, merge.

User-fixable errors (``BenchbenchError``) print as one line and exit 2; a grid with a
failed cell exits 1 after storing every other cell.
"""
from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from benchbench.errors import BenchbenchError, DataError, PluginError

if TYPE_CHECKING:
    from benchbench.registry import Registry

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Attack x defense robustness grids with pluggable components.")
console = Console()
err = Console(stderr=True)

PluginOpt = Annotated[Optional[list[str]], typer.Option("--plugin", help="Extra plugin: module name or .py path (repeatable).")]
StrictOpt = Annotated[bool, typer.Option("--strict-plugins", help="A plugin that fails to load is fatal.")]


def _fail(exc: BenchbenchError) -> None:
    err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _load_plugins(plugin: list[str] | None, strict: bool = False) -> Registry:
    """The registry; a plugin the user named with ``--plugin`` must load (a typo in it
    would otherwise run the grid without its components), installed ones only warn."""
    from benchbench.registry import load_registry

    named = list(plugin or ())
    reg = load_registry(named, strict=strict)
    for f in reg.failures:
        if f.plugin in named:
            raise PluginError(f"--plugin {f.plugin} failed to load: {f.reason} "
                              f"(check the module name or .py path)")
    for f in reg.failures:
        err.print(f"[yellow]plugin failed to load:[/yellow] {f.plugin}: {f.reason}", highlight=False)
    return reg


@app.command()
def plugins(plugin: PluginOpt = None, strict_plugins: StrictOpt = False,
            verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Show every param.")] = False) -> None:
    """List every plugin and component with its version, and plugins that failed to load."""
    from benchbench.registry import load_registry

    try:
        reg = load_registry(plugin or (), strict=strict_plugins)
    except BenchbenchError as exc:
        _fail(exc)
    table = Table("track", "kind", "name", "version", "plugin", "distribution", "description")
    for column in table.columns:
        column.overflow = "fold"  # names and versions are data: never truncate them
    for (kind, track, name), cls in sorted(reg.components.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
        info = cls.plugin
        table.add_row(track, kind, name, cls.version, info.name, f"{info.distribution} {info.version}",
                      cls.description)
        if verbose:
            for p in cls.describe_params():
                table.add_row("", "", f"  {p['name']}", "", "", f"{p['type']} = {p['default']!r}", p["help"])
    console.print(table)
    for f in reg.failures:
        err.print(f"[yellow]plugin failed to load:[/yellow] {f.plugin}: {f.reason}", highlight=False)


@app.command()
def grid(
    config: Annotated[Path, typer.Argument(help="Grid config (YAML), e.g. configs/clip-default.yaml")],
    preset: Annotated[str, typer.Option(help="smoke | default | paper")] = "default",
    store: Annotated[Optional[Path], typer.Option(help="SQLite results (default runs/<preset>/results.sqlite)")] = None,
    cache: Annotated[Path, typer.Option(help="Stage cache directory")] = Path("runs/cache"),
    seeds: Annotated[Optional[int], typer.Option(help="Override the config's seeds with 0..N-1")] = None,
    executor: Annotated[str, typer.Option(help="local | ray")] = "local",
    jobs: Annotated[int, typer.Option(help="Local worker processes (1 = in-process)")] = 1,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (with --executor ray)")] = None,
    plugin: PluginOpt = None,
    strict_plugins: StrictOpt = False,
    progress: Annotated[bool, typer.Option(help="Progress bars")] = True,
) -> None:
    """Run every attack x defense x seed cell of CONFIG; finished cells are skipped."""
    from benchbench.executors import make_executor
    from benchbench.grid import run_grid
    from benchbench.stages import StageCache, is_disk_full

    store = store or Path("runs") / preset / "results.sqlite"
    try:
        reg = _load_plugins(plugin, strict=strict_plugins)
        StageCache(cache)  # a bad --cache fails here, not in every cell; clears killed builds
        summary = run_grid(config, store, cache, preset=preset, seeds=seeds,
                           executor=make_executor(executor, jobs=jobs, address=address),
                           plugins=tuple(plugin or ()), registry=reg, progress=progress, argv=sys.argv)
    except BenchbenchError as exc:
        _fail(exc)
    except (sqlite3.OperationalError, OSError) as exc:
        if not is_disk_full(exc):
            raise
        _fail(DataError(f"disk full writing the results store {store}: the cells stored before are "
                        f"kept; free space there and re-run (stored cells are skipped)"))
    except KeyboardInterrupt:  # every finished cell is already committed
        err.print("\ninterrupted: re-run the same command to resume", highlight=False)
        raise typer.Exit(130) from None
    console.print(f"{summary.total} cells: {summary.ok} run, {summary.cached} already in {store}, "
                  f"{len(summary.failed)} failed, {summary.wall_seconds / 60:.1f} min")
    for line in summary.hook_errors:
        err.print(f"[yellow]hook failed:[/yellow] {line}", highlight=False, soft_wrap=True)
    if summary.busy:
        owners = ", ".join(sorted(set(summary.busy.values())))
        err.print(f"[yellow]skipped {len(summary.busy)} cells that another grid is running ({owners});"
                  f"[/yellow] re-run when it is done to fill in any it did not finish",
                  highlight=False, soft_wrap=True)
    for line in summary.failed:
        err.print(f"[red]failed:[/red] {line}", highlight=False, soft_wrap=True)
    if summary.failed:
        err.print(f"tracebacks are stored in {store} (table cells); fix and re-run to retry only the failed cells")
        raise typer.Exit(1)


def _writers(registry: Registry) -> dict:
    """Every leaderboard writer: built-in formats and plugins' ones, by format name."""
    writers: dict = {}
    for extra in registry.pm.hook.benchbench_leaderboard_writers():
        writers.update(extra or {})
    return writers


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BenchbenchError(f"{path}: cannot read JSON ({exc})") from None
    except RecursionError:
        raise BenchbenchError(f"{path}: cannot read JSON (nested too deeply to be a leaderboard)") from None


@app.command()
def leaderboard(
    store: Annotated[Path, typer.Option(help="SQLite results")] = Path("runs/default/results.sqlite"),
    out: Annotated[Path, typer.Option(help="Output directory (one folder per track)")] = Path("leaderboards"),
    plugin: PluginOpt = None,
) -> None:
    """Write leaderboards (md, csv, json, html + plots, plugin writers) for every track in STORE.

    Submitted entries merged into an existing board under OUT are kept."""
    from benchbench.leaderboard import build_boards, declared_definitions, declared_roles, markdown, write_boards
    from benchbench.merge import carry_submissions

    try:
        if not store.is_file():
            raise BenchbenchError(f"no results store at {store}; run `benchbench grid CONFIG` first or pass --store")
        registry = _load_plugins(plugin)
        boards = build_boards(store, declared_roles(registry), declared_definitions(registry))
        for i, board in enumerate(boards):
            previous = out / board.track / "leaderboard.json"
            if previous.is_file():
                boards[i], notes = carry_submissions(board, _read_json(previous))
                for note in notes:
                    err.print(f"[yellow]{previous}:[/yellow] {note}", highlight=False, soft_wrap=True)
        failed: list[str] = []
        paths = write_boards(boards, out, _writers(registry), failed)
    except BenchbenchError as exc:
        _fail(exc)
    for board in boards:
        console.print(markdown(board), markup=False, highlight=False)  # names are data, not rich markup
    console.print("wrote " + ", ".join(str(p) for p in paths))
    _report_writers(failed)


def _report_writers(failed: list[str]) -> None:
    """One line per failed writer (the others have written); exit 1 if any failed."""
    for line in failed:
        err.print(f"[red]error:[/red] {line}", markup=True, highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="A leaderboard.json")],
    against: Annotated[Optional[Path], typer.Option(
        help="A reference leaderboard.json: also reject entries whose track, protocol, data set "
             "or metric definitions differ from it")] = None,
) -> None:
    """Check a leaderboard JSON against the published schema; one line per problem."""
    from benchbench.leaderboard import validate_board

    try:
        data = _read_json(file)
        reference = _read_json(against) if against else None
    except BenchbenchError as exc:
        _fail(exc)
    problems = validate_board(data, against=reference)
    for p in problems:
        err.print(f"{file}: {p}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    versus = f", consistent with {against}" if against else ""
    console.print(f"{file}: valid ({len(data['entries'])} entries, protocol {data['protocol']}{versus})")


@app.command()
def merge(
    submission: Annotated[Path, typer.Argument(help="A leaderboard.json from someone else's run")],
    into: Annotated[Path, typer.Option(help="The board to add it to: leaderboards/<track>/leaderboard.json")],
    plugin: PluginOpt = None,
) -> None:
    """Add a submitted board's entries without re-running them, then rewrite the board's views.

    Refuses (one line per problem) unless the submission validates against the board."""
    from benchbench.leaderboard import Board, write_board
    from benchbench.merge import check_submission, merge_submission

    try:
        if into.name != "leaderboard.json":
            raise BenchbenchError(f"--into {into}: expected a board's leaderboard.json "
                                  f"(its views are rewritten next to it)")
        board, sub = _read_json(into), _read_json(submission)
        problems = check_submission(board, sub)
        for p in problems:
            err.print(f"{submission}: {p}", highlight=False, soft_wrap=True)
        if problems:
            raise typer.Exit(1)
        failed: list[str] = []
        paths = write_board(Board.from_json(merge_submission(board, sub)), into.parent,
                            _writers(_load_plugins(plugin)), failed)
    except BenchbenchError as exc:
        _fail(exc)
    console.print(f"merged {len(sub['entries'])} submitted entries from {submission} into {into}; "
                  f"wrote " + ", ".join(str(p) for p in paths))
    _report_writers(failed)


if __name__ == "__main__":
    app()
