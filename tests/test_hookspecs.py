"""Every hook is documented, and every hook is exercised by a built-in or test plugin."""
import inspect

from benchbench import hookspecs

HOOKS = [n for n, f in vars(hookspecs).items() if n.startswith("benchbench_") and callable(f)]


def test_every_hook_is_documented():
    assert len(HOOKS) >= 6
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and len(doc) > 40, f"{name} needs a docstring that explains it"


def test_every_hook_is_implemented_somewhere(registry, toy_registry):
    implemented = set()
    for reg in (registry, toy_registry):
        for name in HOOKS:
            if getattr(reg.pm.hook, name).get_hookimpls():
                implemented.add(name)
    assert implemented == set(HOOKS)
