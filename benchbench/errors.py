"""Errors a user can fix. The CLI prints them as one line (what is wrong, and the fix)
instead of a traceback; anything else is a bug and keeps its traceback."""
import math



class BenchbenchError(Exception):
    """Base of user-facing errors."""


class ConfigError(BenchbenchError):
    """A grid config, a component name or a param is wrong."""


class PluginError(BenchbenchError):
    """A plugin failed to load or broke the plugin contract."""


class DataError(BenchbenchError):
    """User data is missing, malformed or corrupt (the message names the file)."""


class NonFiniteMetric(PluginError):
    """An evaluator returned NaN or +-inf. SQLite stores NaN as NULL and JSON has no inf, so
    such a number would break the store or the leaderboard: the cell fails instead, and a
    re-run retries it."""

    def __init__(self, evaluator: str, metric: str, value: float):
        super().__init__(evaluator, metric, value)  # args stay picklable (Ray, process pools)
        self.evaluator, self.metric, self.value = evaluator, metric, value

    def __str__(self) -> str:
        return (f"evaluator '{self.evaluator}' returned {self.value} for metric '{self.metric}'; "
                f"metrics must be finite numbers")


def check_finite(evaluator: str, metric: str, value: float) -> float:
    """``value`` if it is a finite number, else ``NonFiniteMetric``."""
    if not math.isfinite(value):
        raise NonFiniteMetric(evaluator, metric, value)
    return value


class DivergedError(BenchbenchError):
    """Training or evaluation produced NaN or infinite numbers: the cell fails rather
    than publish (or cache) a diverged model's scores."""
