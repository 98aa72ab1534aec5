"""The one exception type users see for bad input.

The CLI turns it into a one-line message and a non-zero exit code; the Python
API raises it (it is a ValueError, so generic handlers still catch it).
"""


class SealFastError(ValueError):
    """Bad input or an unusable file: the message says what and where."""


class Interrupted(Exception):
    """Ctrl-C during long work that kept what it finished; the message says how to resume.
    The CLI exits 130 on it, as on any other interruption."""
