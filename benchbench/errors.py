"""Errors a user can fix. The CLI prints them as one line (what is wrong, and the fix)
instead of a traceback; anything else is a bug and keeps its traceback."""


class BenchbenchError(Exception):
    """Base of user-facing errors."""


class ConfigError(BenchbenchError):
    """A grid config, a component name or a param is wrong."""


class PluginError(BenchbenchError):
    """A plugin failed to load or broke the plugin contract."""


class DataError(BenchbenchError):
    """User data is missing, malformed or corrupt (the message names the file)."""


class DivergedError(BenchbenchError):
    """Training or evaluation produced NaN or infinite numbers: the cell fails rather
    than publish (or cache) a diverged model's scores."""
