"""The `benchbench` command: plugins, grid, show, cache, leaderboard, validate, merge.

User-fixable errors (``BenchbenchError``) print as one line and exit 2; a grid with a
failed cell exits 1 after storing every other cell.
"""
from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from benchbench.errors import BenchbenchError, ConfigError, DataError, PluginError

if TYPE_CHECKING:
    from benchbench.executors import Executor
    from benchbench.grid import GridSummary
    from benchbench.registry import Registry

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Attack x defense robustness grids with pluggable components.")
# soft_wrap: outside a terminal rich would hard-wrap every line at 80 columns, paths too
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

PluginOpt = Annotated[Optional[list[str]], typer.Option("--plugin", help="Extra plugin: module name or .py path (repeatable).")]
StrictOpt = Annotated[bool, typer.Option("--strict-plugins", help="A plugin that fails to load is fatal.")]


def _fail(exc: BenchbenchError) -> None:
    err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _load_plugins(plugin: list[str] | None, strict: bool = False) -> Registry:
    """The registry; a plugin the user named with ``--plugin`` must load (a typo in it
    would otherwise run the grid without its components), installed ones only warn."""
    from benchbench import catalog
    from benchbench.registry import load_registry

    named = list(plugin or ())
    reg = load_registry(named, strict=strict)
    catalog.remember(reg, named)  # the next `benchbench plugins` reads it instead of importing torch
    for f in reg.failures:
        if f.plugin in named:
            raise PluginError(f"--plugin {f.plugin} failed to load: {f.reason} "
                              f"(check the module name or .py path)")
    for f in reg.failures:
        err.print(f"[yellow]plugin failed to load:[/yellow] {f.plugin}: {f.reason}", highlight=False)
    return reg


def _describe(record: dict) -> list[tuple[str, str]]:
    """``-v`` rows of one component: each param (type, default, allowed values, help) and
    what each preset changes (``param default -> preset value``)."""
    rows = []
    defaults = {p["name"]: p["default"] for p in record["params"]}
    for p in record["params"]:
        default = "required" if p["required"] else json.dumps(p["default"])
        choices = f" (one of {', '.join(json.dumps(c) for c in p['choices'])})" if p["choices"] else ""
        rows.append((f"{p['name']}: {p['type']} = {default}{choices}", p["help"]))
    for preset, overrides in sorted(record["presets"].items()):
        changes = ", ".join(f"{k} {json.dumps(defaults.get(k))} -> {json.dumps(v)}" for k, v in overrides.items())
        rows.append((f"preset {preset}", changes or "no change"))
    return rows


@app.command()
def plugins(plugin: PluginOpt = None, strict_plugins: StrictOpt = False,
            verbose: Annotated[bool, typer.Option("-v", "--verbose",
                                                  help="Show every param (allowed values too) and what each preset changes.")] = False,
            output_format: Annotated[Optional[str], typer.Option(
                "--format", help="table | plain (tab-separated) | json; default: table on a terminal, else plain")] = None,
            ) -> None:
    """List every plugin and component with its version, and plugins that failed to load.

    Reads the plugin index (benchbench.catalog) while it is current, so listing imports
    no torch; otherwise loads every plugin and refreshes the index."""
    from benchbench import catalog

    fmt = output_format or ("table" if console.is_terminal else "plain")
    if fmt not in ("table", "plain", "json"):
        _fail(BenchbenchError(f"--format {fmt}: choose table, plain or json"))
    data = catalog.cached(plugin or ())
    if data is None:
        from benchbench.registry import load_registry

        try:
            data = catalog.remember(load_registry(plugin or (), strict=strict_plugins), plugin or ())
        except BenchbenchError as exc:
            _fail(exc)
    if fmt == "json":
        print(json.dumps(data, indent=1))
    elif fmt == "plain":
        for c in data["components"]:
            print("\t".join([c["track"], c["kind"], c["name"], c["version"], c["plugin"],
                             f"{c['distribution']} {c['distribution_version']}", c["description"]]))
            for what, detail in _describe(c) if verbose else ():
                print(f"\t{what}\t{detail}")
    else:
        table = Table("track", "kind", "name", "version", "plugin", "distribution", "description")
        for column in table.columns:
            column.overflow = "fold"  # names and versions are data: never truncate them
        for c in data["components"]:
            table.add_row(*map(Text, [c["track"], c["kind"], c["name"], c["version"], c["plugin"],
                                      f"{c['distribution']} {c['distribution_version']}", c["description"]]))
            for what, detail in _describe(c) if verbose else ():
                table.add_row("", "", Text(f"  {what}"), "", "", "", Text(detail))  # text, not markup
        console.print(table, soft_wrap=False)
    for f in data["failures"]:
        err.print(f"[yellow]plugin failed to load:[/yellow] {escape(f['plugin'])}: {escape(f['reason'])}",
                  highlight=False)


@app.command()
def grid(
    config: Annotated[Path, typer.Argument(help="Grid config (YAML), e.g. configs/clip-default.yaml")],
    preset: Annotated[str, typer.Option(help="smoke | default | paper")] = "default",
    store: Annotated[Optional[Path], typer.Option(help="SQLite results (default runs/<preset>/results.sqlite)")] = None,
    cache: Annotated[Path, typer.Option(help="Stage cache directory")] = Path("runs/cache"),
    seeds: Annotated[Optional[int], typer.Option(help="Override the config's seeds with 0..N-1")] = None,
    executor: Annotated[str, typer.Option(help="local | ray")] = "local",
    jobs: Annotated[Optional[int], typer.Option(
        envvar="BENCHBENCH_JOBS", show_default=False,
        help="Local worker processes (1 = in-process); default: 2, or 1 on a single core")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (with --executor ray)")] = None,
    workers_per_cell: Annotated[int, typer.Option(
        min=1, help="Ray Train workers that train each cell together (with --executor ray; each asks for the "
                    "config's resources)")] = 1,
    plugin: PluginOpt = None,
    strict_plugins: StrictOpt = False,
    progress: Annotated[bool, typer.Option(
        help="Progress bars on a terminal; without them (or outside a terminal) one line per finished cell")] = True,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List the cells CONFIG expands to and which are stored already; run nothing")] = False,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N: where training and attacks run")] = "cpu",
) -> None:
    """Run every attack x defense x seed cell of CONFIG; finished cells are skipped.

    Under torchrun (``torchrun --nproc_per_node N -m benchbench grid CONFIG``) every cell
    trains on the N processes together, one cell after another (docs/scaling.md)."""
    store = store or Path("runs") / preset / "results.sqlite"
    if dry_run:
        try:
            return _dry_run(config, store, preset, seeds, _load_plugins(plugin, strict=strict_plugins))
        except BenchbenchError as exc:
            _fail(exc)
    _run_grid(config, preset, store, cache, seeds, executor, jobs, address, plugin, strict_plugins, progress,
              device, workers_per_cell=workers_per_cell)


@app.command()
def cell(
    config: Annotated[Path, typer.Argument(help="Grid config (YAML), e.g. configs/clip-default.yaml")],
    which: Annotated[str, typer.Argument(metavar="CELL", help="The cell's key (or a unique start of it) or its "
                                                              "position from 0, as `grid --dry-run` lists them")],
    preset: Annotated[str, typer.Option(help="smoke | default | paper")] = "default",
    store: Annotated[Optional[Path], typer.Option(help="SQLite results (default runs/<preset>/results.sqlite)")] = None,
    cache: Annotated[Path, typer.Option(help="Stage cache directory")] = Path("runs/cache"),
    seeds: Annotated[Optional[int], typer.Option(help="Override the config's seeds with 0..N-1")] = None,
    plugin: PluginOpt = None,
    strict_plugins: StrictOpt = False,
    progress: Annotated[bool, typer.Option(help="Progress bars on a terminal")] = True,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N (under torchrun: each rank's LOCAL_RANK GPU "
                                                "with cuda)")] = "cpu",
) -> None:
    """Run one cell of CONFIG (skipped if stored), in this process or, under
    ``torchrun --nproc_per_node N -m benchbench cell CONFIG CELL``, on N processes
    together; only rank 0 writes the store row, stages and checkpoints."""
    store = store or Path("runs") / preset / "results.sqlite"
    _run_grid(config, preset, store, cache, seeds, "local", 1, None, plugin, strict_plugins, progress, device,
              cell=which)


def _run_grid(config: Path, preset: str, store: Path, cache: Path, seeds: int | None, executor: str,
              jobs: int | None, address: str | None, plugin: list[str] | None, strict_plugins: bool,
              progress: bool, device: str, workers_per_cell: int = 1, cell: str | None = None) -> None:
    """`grid` and `cell` (``cell``: the one cell to run, as `benchbench cell` takes it):
    run the cells, print the summary, exit 1 if any failed. Under torchrun rank 0 drives
    and reports; the other ranks follow (``executors.ranks``)."""
    from benchbench import distributed
    from benchbench.executors import make_executor
    from benchbench.executors.ranks import run_led
    from benchbench.grid import run_grid, select_cell
    from benchbench.precision import check_device
    from benchbench.stages import StageCache, is_disk_full

    try:
        check_device(device)
        reg = _load_plugins(plugin, strict=strict_plugins)
        StageCache(cache)  # a bad --cache fails here, not in every cell; clears killed builds
        launched = distributed.init_from_env(device)
        if launched and (executor != "local" or (jobs or 1) > 1 or workers_per_cell > 1):
            raise ConfigError("under torchrun every cell runs on the launched processes together: "
                              "drop --executor, --jobs and --workers-per-cell")
        if workers_per_cell > 1 and executor != "ray":
            raise ConfigError("--workers-per-cell needs --executor ray (or launch with torchrun: docs/scaling.md)")
        processes = distributed.world_size() if launched else workers_per_cell
        only = None if cell is None else {select_cell(config, cell, reg, preset, seeds, processes)}

        def grid_with(runner: "Executor") -> "GridSummary":
            return run_grid(config, store, cache, preset=preset, seeds=seeds, executor=runner,
                            plugins=tuple(plugin or ()), registry=reg, progress=progress and distributed.is_main(),
                            argv=sys.argv, device=device, only=only, processes=processes)

        if launched:
            summary = run_led(grid_with, reg)
            if summary is None:  # a follower rank: rank 0 reports
                return
        else:
            summary = grid_with(make_executor(executor, jobs=jobs, address=address))
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


def _dry_run(config: Path, store: Path, preset: str, seeds: int | None, registry: Registry) -> None:
    """`grid --dry-run`: one line per cell (what a run would do with it, cell, key), then counts."""
    from collections import Counter

    from benchbench.grid import plan

    cells = plan(config, store, preset=preset, seeds=seeds, registry=registry)
    for what, key, cell in cells:
        console.print(f"{what:<7} {cell.label}  {key}", markup=False, highlight=False)
    n = Counter(what for what, _k, _c in cells)
    console.print(f"{len(cells)} cells: {n['new'] + n['failed']} to run ({n['failed']} failed before), "
                  f"{n['stored']} already in {store}, {n['running']} running in another grid",
                  markup=False, highlight=False)


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
    _list_written(paths)
    _report_writers(failed)


def _list_written(paths: list[Path]) -> None:
    """One line per written file, each once (the plot and HTML writers share figures)."""
    for path in dict.fromkeys(str(p) for p in paths):
        console.print(f"wrote {path}", markup=False, highlight=False)


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
    console.print(f"merged {len(sub['entries'])} submitted entries from {submission} into {into}",
                  markup=False, highlight=False)
    _list_written(paths)
    _report_writers(failed)


@app.command()
def show(
    store: Annotated[Path, typer.Argument(help="SQLite results, e.g. runs/default/results.sqlite")],
    failed: Annotated[bool, typer.Option("--failed", help="Only failed cells, each with its error and traceback")] = False,
) -> None:
    """What a results store holds: one line per cell (status, seconds, cell, key), then counts.

    Opens the store read-only: safe while a grid writes to it."""
    from benchbench.store import Store

    try:
        with Store.read_only(store) as db:
            statuses, running = db.statuses(), db.claim_owners()
            cells = [c for c in db.iter_cells() if not failed or statuses[c["key"]] == "failed"]
    except BenchbenchError as exc:
        _fail(exc)
    for c in cells:
        seconds = f"{c['wall_seconds']:8.1f} s" if c["wall_seconds"] is not None else "       - s"
        label = f"{c['track']}: defense={c['defense']} attack={c['attack']} seed={c['seed']}"
        console.print(f"{statuses[c['key']]:<6} {seconds}  {label}  {c['key']}", markup=False, highlight=False)
        if failed:
            console.print(f"  {c['error']}", markup=False, highlight=False)
            for line in (c["traceback"] or "(no traceback: the process running the cell died)\n").splitlines():
                console.print(f"    {line}", markup=False, highlight=False)
    if failed:
        console.print(f"{len(cells)} failed cells in {store}; a re-run of their grid retries them",
                      markup=False, highlight=False)
        return
    n_ok = sum(1 for c in cells if statuses[c["key"]] == "ok")
    total = sum(c["wall_seconds"] or 0 for c in cells)
    owners = f" ({', '.join(sorted(set(running.values())))})" if running else ""
    console.print(f"{len(cells)} cells in {store}: {n_ok} ok, {len(cells) - n_ok} failed, "
                  f"{total / 60:.1f} min of cell time; {len(running)} claimed by a running grid{owners}",
                  markup=False, highlight=False)


cache_app = typer.Typer(no_args_is_help=True, help="Inspect and prune the stage cache.")
app.add_typer(cache_app, name="cache")
CacheArg = Annotated[Path, typer.Option("--cache", help="Stage cache directory")]


@cache_app.command("du")
def cache_du(cache: CacheArg = Path("runs/cache")) -> None:
    """Disk use per stage kind (stages, size, newest build), then the total."""
    from collections import defaultdict

    from rich.filesize import decimal

    from benchbench.stages import stored_stages

    if not cache.is_dir():
        _fail(DataError(f"no stage cache at {cache}; pass --cache the folder a grid used"))
    kinds: dict[str, list] = defaultdict(list)
    for stage in stored_stages(cache):
        kinds[stage.name].append(stage)
    for name, stages in sorted(kinds.items()):
        newest = time.strftime("%Y-%m-%d %H:%M", time.localtime(max(s.built_at for s in stages)))
        console.print(f"{name:<24} {len(stages):>5} stages {decimal(sum(s.bytes for s in stages)):>10}"
                      f"  newest {newest}", markup=False, highlight=False)
    total = sum(s.bytes for stages in kinds.values() for s in stages)
    console.print(f"{'total':<24} {sum(map(len, kinds.values())):>5} stages {decimal(total):>10}  in {cache}",
                  markup=False, highlight=False)


@cache_app.command("prune")
def cache_prune(
    cache: CacheArg = Path("runs/cache"),
    kind: Annotated[Optional[list[str]], typer.Option(
        "--kind", help="Only stages of this kind (repeatable; see `benchbench cache du`)")] = None,
    older_than: Annotated[Optional[float], typer.Option(help="Only stages built more than DAYS ago")] = None,
    all_stages: Annotated[bool, typer.Option("--all", help="Every stage (when no --kind/--older-than)")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing")] = False,
) -> None:
    """Remove finished stages; a later grid rebuilds any it needs. Refuses while a grid uses the cache."""
    from rich.filesize import decimal

    from benchbench.stages import prune

    try:
        if not (kind or older_than is not None or all_stages):
            raise BenchbenchError("say what to prune: --kind NAME, --older-than DAYS or --all "
                                  "(`benchbench cache du` lists the kinds)")
        removed = prune(cache, tuple(kind or ()), older_than, dry_run=dry_run)
    except BenchbenchError as exc:
        _fail(exc)
    verb = "would remove" if dry_run else "removed"
    for stage in removed:
        console.print(f"{verb} {stage.path} ({decimal(stage.bytes)})", markup=False, highlight=False)
    console.print(f"{verb} {len(removed)} stages, {decimal(sum(s.bytes for s in removed))}, from {cache}",
                  markup=False, highlight=False)


if __name__ == "__main__":
    app()
