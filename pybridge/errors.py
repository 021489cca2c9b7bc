"""The one exception type pybridge raises for bad input or bad files."""


class PybridgeError(ValueError):
    """A user-facing error: the message names the problem and how to fix it."""
