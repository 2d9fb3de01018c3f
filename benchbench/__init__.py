"""benchbench: a plugin-based robustness benchmark (CLIP poisoning, ReID adversarial)."""
from benchbench.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
