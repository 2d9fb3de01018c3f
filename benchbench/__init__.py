"""benchbench: a plugin-based robustness benchmark (CLIP poisoning, ReID adversarial)."""
__version__ = "0.1.0"

#: The distribution name on the package index (``benchbench`` there is an unrelated project):
#: ``pip install benchbench-robust`` installs this import package, ``benchbench``.
DISTRIBUTION = "benchbench-robust"

from benchbench.hookspecs import hookimpl  # noqa: E402 - after the constants hookspecs' imports may read

__all__ = ["DISTRIBUTION", "hookimpl", "__version__"]
