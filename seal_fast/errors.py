"""The one exception type users see for bad input.

The CLI turns it into a one-line message and a non-zero exit code; the Python
API raises it (it is a ValueError, so generic handlers still catch it).
"""

from sklearn.exceptions import NotFittedError


class SealFastError(ValueError):
    """Bad input or an unusable file: the message says what and where."""


class SealFastTypeError(SealFastError, TypeError):
    """Input of a type that cannot be used (e.g. an object array holding a dict)."""


class Interrupted(Exception):
    """Ctrl-C during long work that kept what it finished; the message says how to resume.
    The CLI exits 130 on it, as on any other interruption."""


class NotFitted(SealFastError, NotFittedError):
    """predict/transform/save before fit (also scikit-learn's NotFittedError)."""
