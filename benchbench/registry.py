"""The plugin registry: a pluggy PluginManager plus a component index.

Why not ``pm.load_setuptools_entrypoints``: it aborts on the first plugin whose import
raises (simonw/llm#1280), so one broken third-party plugin would take the whole tool
down. Here every entry point is loaded on its own; a failure is recorded with its reason,
shown by ``benchbench plugins``, and only fatal under ``strict``.

Why hooks are called one plugin at a time (``subset_hook_caller``): pluggy cannot say
which plugin returned what, and every component must be tagged with the plugin (and
distribution version) that gave it, and a duplicate name must name both plugins.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import importlib.util
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from benchbench import DISTRIBUTION, hookspecs
from benchbench.api import Component, PluginInfo
from benchbench.errors import ConfigError, PluginError

ENTRY_POINT_GROUP = "benchbench"
DISABLE_ENV = "BENCHBENCH_DISABLE_PLUGINS"
BUILTIN_ONLY_ENV = "BENCHBENCH_BUILTIN_ONLY"  # "1": load only benchbench's own entry points (tests)
COMPONENT_HOOKS = {
    "task": "benchbench_tasks",
    "attack": "benchbench_attacks",
    "defense": "benchbench_defenses",
    "evaluator": "benchbench_evaluators",
}


@dataclass
class PluginFailure:
    plugin: str
    reason: str


@dataclass
class Registry:
    pm: pluggy.PluginManager
    components: dict[tuple[str, str, str], type[Component]] = field(default_factory=dict)
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)

    def get(self, kind: str, track: str, name: str) -> type[Component]:
        try:
            return self.components[(kind, track, name)]
        except KeyError:
            known = sorted(n for (k, t, n) in self.components if k == kind and t == track)
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"unknown {kind} '{name}' for track '{track}'; {hint} "
                f"known: {', '.join(known) or 'none'} (see `benchbench plugins`)"
            ) from None

    def tracks(self) -> list[str]:
        return sorted({t for (k, t, _n) in self.components if k == "task"})

    def of_kind(self, kind: str, track: str | None = None) -> list[type[Component]]:
        return [c for (k, t, _n), c in sorted(self.components.items())
                if k == kind and (track is None or t == track)]

    def call_each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Exception]]:
        """Call a hook in every plugin that implements it, each on its own; return
        ``(plugin name, exception)`` for those that raised. With ``pm.hook`` one plugin's
        exception would skip the others and reach the caller."""
        raised = []
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            others = [p for p in self.pm.get_plugins() if p is not impl.plugin]
            try:
                self.pm.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)
            except Exception as exc:  # noqa: BLE001 - the caller reports it
                raised.append((impl.plugin_name, exc))
        return raised


def _make_pm() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    blocked = [n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()]
    for name in blocked:
        pm.set_blocked(name)
    return pm


def _import_path(spec: str):
    """``--plugin`` accepts an importable module name or a path to a .py file."""
    path = Path(spec)
    if spec.endswith(".py") or path.exists():
        if not path.is_file():
            raise PluginError(f"plugin file not found: {spec} (give a module name or a .py path)")
        mod_name = f"benchbench_local_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        module_spec.loader.exec_module(module)
        return module
    return importlib.import_module(spec)


def load_registry(extra_plugins: Iterable[str] = (), strict: bool = False,
                  entry_points: bool = True) -> Registry:
    """Load every plugin (entry points, then ``extra_plugins``) and index its components.

    ``strict``: the first plugin failure raises ``PluginError`` instead of being recorded.
    ``entry_points=False`` loads only ``extra_plugins`` (tests use it for isolation).
    """
    pm = _make_pm()
    reg = Registry(pm)

    def fail(plugin: str, exc: BaseException) -> None:
        reason = _one_line(exc)
        if strict:
            raise PluginError(f"plugin '{plugin}' failed: {reason} "
                              f"(fix or uninstall it, or block it with {DISABLE_ENV}={plugin})") from exc
        reg.failures.append(PluginFailure(plugin, reason))

    candidates: list[tuple[str, object, PluginInfo]] = []
    builtin_only = os.environ.get(BUILTIN_ONLY_ENV) == "1"
    if entry_points:
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist
            if pm.is_blocked(ep.name) or (builtin_only and (dist is None or dist.name != DISTRIBUTION)):
                continue
            info = PluginInfo(ep.name, dist.name if dist else "unknown", dist.version if dist else "0")
            try:
                candidates.append((ep.name, ep.load(), info))
            except Exception as exc:  # noqa: BLE001 - any import error is the plugin's
                fail(ep.name, exc)
    for spec in extra_plugins:
        try:
            module = _import_path(spec)
        except PluginError:
            raise
        except Exception as exc:  # noqa: BLE001
            fail(spec, exc)
            continue
        info = PluginInfo(spec, "local", str(getattr(module, "__version__", "0")))
        candidates.append((spec, module, info))

    for name, plugin, info in candidates:
        if pm.is_blocked(name):
            continue
        try:
            pm.register(plugin, name=name)
        except ValueError:  # the same module under two names: keep the first
            continue
        except Exception as exc:  # noqa: BLE001 - e.g. a hookimpl with a bad signature
            fail(name, exc)
            continue
        reg.plugins[name] = info
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        bad = exc.plugin
        bad_name = pm.get_name(bad) or str(bad)
        pm.unregister(bad)
        reg.plugins.pop(bad_name, None)
        fail(bad_name, exc)

    for plugin_name, info in list(reg.plugins.items()):
        plugin = pm.get_plugin(plugin_name)
        others = [p for p in pm.get_plugins() if p is not plugin]
        for kind, hook_name in COMPONENT_HOOKS.items():
            caller = pm.subset_hook_caller(hook_name, remove_plugins=others)
            try:
                results = caller()
            except Exception as exc:  # noqa: BLE001
                fail(plugin_name, exc)
                continue
            for classes in results:
                if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
                    # a str would otherwise be read as classes, one character at a time
                    fail(plugin_name, PluginError(f"{hook_name} returned {classes!r}; expected a "
                                                  f"list of benchbench.api {kind} classes"))
                    continue
                for cls in classes:
                    problem = _index(reg, kind, cls, info)
                    if problem:
                        fail(plugin_name, PluginError(problem))
    return reg


def _one_line(exc: BaseException) -> str:
    """A load failure as one line. pluggy's validation errors put the reason on their
    last line ("Plugin 'x' for hook 'y' / hookimpl definition / reason"), so their lines
    are joined; for other errors the first line says what went wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = "; ".join(lines) if isinstance(exc, pluggy.PluginValidationError) else (lines or [""])[0]
    return f"{type(exc).__name__}: {text}"


def _index(reg: Registry, kind: str, cls: type[Component], info: PluginInfo) -> str | None:
    """Add one class; return a contract problem (recorded as a plugin failure) or None.
    Two components with one name are fatal: which one a grid used would be ambiguous."""
    if not (isinstance(cls, type) and issubclass(cls, Component) and cls.kind == kind):
        return f"returned {cls!r} from its {kind} hook; expected a benchbench.api {kind} class"
    for attr in ("name", "track"):
        if not getattr(cls, attr, None):
            return f"{cls.__module__}.{cls.__qualname__} has no {attr}"
    key = (kind, cls.track, cls.name)
    if key in reg.components and reg.components[key] is not cls:
        other = reg.components[key].plugin.name
        raise PluginError(f"two {kind}s named '{cls.name}' in track '{cls.track}': from plugin "
                          f"'{other}' and from plugin '{info.name}'; rename one or block one "
                          f"with {DISABLE_ENV}")
    cls.plugin = info
    reg.components[key] = cls
    return None


def distribution_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour the numbers depend on (provenance)."""
    out = {}
    for dist in (DISTRIBUTION, "torch", "torchvision", "open_clip_torch", "POT", "torchreid",
                 "torchattacks", "diffusers", "datasets", "scikit-learn", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out
