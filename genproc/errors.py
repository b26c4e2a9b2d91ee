"""The one exception type for user mistakes.

A :class:`GenprocError` carries a single line that names what was wrong and what
was expected. The CLI prints it as ``error: <message>`` and exits with status 2,
never with a traceback.
"""


class GenprocError(Exception):
    """A user-facing error: bad recipe, missing data, unusable checkpoint, ..."""
