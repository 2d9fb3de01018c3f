"""The plugin catalog: every component's metadata as JSON, and a cached copy of it so
that `benchbench plugins` lists components without importing torch.

Listing needs what a plugin's classes declare (name, version, description, params,
presets, metrics), and those classes live in modules that import torch, open_clip and
datasets at the top (9-17 s on a laptop). Making every plugin module torch-free at
import would be a rule no third-party author can be held to, so the listing reads an
index instead, as napari (npe2 manifests) and VS Code do, except that nobody writes it
by hand: any command that loads the plugins anyway (`grid`, `leaderboard`, a first
`plugins`) writes it, and `plugins` reads it while it is current.

Current means: the same Python, the same installed entry points (name, module,
distribution and version), the same plugin-related environment variables, the same
``--plugin`` arguments, and the same size and modification time of every ``.py`` file
of benchbench and of each plugin's top-level package. Changing any of those re-imports
everything once. A load with a failing plugin is not cached, so a failure (a missing
dependency installed since) is re-checked on every listing. The one rule this puts on
plugin authors: a component's metadata must follow from its code, not from the
machine (no default that depends on ``torch.cuda.is_available()``).
"""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchbench import __version__
from benchbench.cells import stable_hash

INDEX_ENV = "BENCHBENCH_PLUGIN_INDEX"  # path of the index file; "off": never read or write one
KEEP = 8  # fingerprints kept in the index (a test suite and a user alternate)
ENVIRONMENT = ("BENCHBENCH_DISABLE_PLUGINS", "BENCHBENCH_BUILTIN_ONLY")  # what load_registry reads


def component_record(cls: Any) -> dict[str, Any]:
    """One component as JSON: what `benchbench plugins` shows, in any format."""
    info = cls.plugin
    record = {
        "track": cls.track, "kind": cls.kind, "name": cls.name, "version": cls.version,
        "description": cls.description, "plugin": info.name, "distribution": info.distribution,
        "distribution_version": info.version, "params": cls.describe_params(),
        "presets": json.loads(json.dumps(cls.presets, default=str)),
    }
    if hasattr(cls, "stage"):
        record["stage"] = cls.stage
    if cls.kind == "evaluator":
        record["metrics"] = [{"name": m.name, "higher_is_better": m.higher_is_better, "role": m.role,
                              "description": m.description} for m in cls.metrics]
    return record


def catalog(registry: Any) -> dict[str, Any]:
    """The registry's components (sorted by track, kind, name) and load failures."""
    ordered = sorted(registry.components.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2]))
    return {"components": [component_record(cls) for _key, cls in ordered],
            "failures": [{"plugin": f.plugin, "reason": f.reason} for f in registry.failures]}


def index_path() -> Path | None:
    """Where the index lives: ``$BENCHBENCH_PLUGIN_INDEX``, else the user cache folder."""
    chosen = os.environ.get(INDEX_ENV)
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "benchbench" / "plugin-index.json"


def fingerprint(extra_plugins: Iterable[str] = ()) -> str:
    """What the catalog of a plugin load depends on, hashed (see the module docstring)."""
    extra = list(extra_plugins)
    eps = sorted((ep.name, ep.value, ep.dist.name if ep.dist else "", ep.dist.version if ep.dist else "")
                 for ep in md.entry_points(group="benchbench"))
    roots = {"benchbench"} | {ep[1].split(":")[0].split(".")[0] for ep in eps}
    sources: dict[str, list] = {}
    for root in sorted(roots):
        sources[root] = _tree_stat(_module_location(root))
    for spec in extra:
        path = Path(spec)
        where = path.resolve() if spec.endswith(".py") or path.exists() else _module_location(spec.split(".")[0])
        sources[f"--plugin {spec}"] = _tree_stat(where)
    return stable_hash({"benchbench": __version__, "python": sys.executable, "entry_points": eps,
                        "env": {k: os.environ.get(k) for k in ENVIRONMENT}, "extra": extra,
                        "sources": sources}, length=32)


def _module_location(name: str) -> Path | None:
    """A top-level module's folder (a package) or file, found without importing it."""
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__path__", None):
        return Path(list(module.__path__)[0])
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin) if spec.origin else None


def _tree_stat(where: Path | None) -> list:
    """``[relative path, size, mtime_ns]`` of every .py file under a folder (or of a file)."""
    if where is None or not where.exists():
        return []
    files = [where] if where.is_file() else sorted(where.rglob("*.py"))
    out = []
    for f in files:
        st = f.stat()
        out.append([f.relative_to(where).as_posix() if f != where else f.name, st.st_size, st.st_mtime_ns])
    return out


def cached(extra_plugins: Iterable[str] = ()) -> dict[str, Any] | None:
    """The catalog from the index if it is current, else None."""
    path = index_path()
    if path is None:
        return None
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    entry = entries.get(fingerprint(extra_plugins)) if isinstance(entries, dict) else None
    return entry["catalog"] if isinstance(entry, dict) and "catalog" in entry else None


def remember(registry: Any, extra_plugins: Iterable[str] = ()) -> dict[str, Any]:
    """The registry's catalog, written to the index unless a plugin failed to load.
    An index that cannot be written (a read-only home) only costs the next listing time."""
    data = catalog(registry)
    path = index_path()
    if path is None or data["failures"]:
        return data
    try:
        entries = json.loads(path.read_text()) if path.is_file() else {}
        entries = entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):
        entries = {}
    entries.pop(key := fingerprint(extra_plugins), None)
    entries[key] = {"catalog": data}
    entries = dict(list(entries.items())[-KEEP:])  # the newest last
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as fh:
            json.dump(entries, fh)
        os.replace(fh.name, path)  # readers see the old index or the new one, never half
    except OSError:
        pass
    return data
