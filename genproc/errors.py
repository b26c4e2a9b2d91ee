"""The one exception type for user mistakes.

A :class:`GenprocError` carries a single line that names what was wrong and what
was expected. The CLI prints it as ``error: <message>`` and exits with status 2,
never with a traceback.
"""


class GenprocError(Exception):
    """A user-facing error: bad recipe, missing data, unusable checkpoint, ..."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C inside a long library call that writes as it goes, carrying what the call had written (``kept``: one
    phrase each, e.g. ``"fid in runs/x/eval/fid-….json"``) and what it had not done (``left``: e.g. metric names), so
    the caller can say how to continue. Still a KeyboardInterrupt: code that does not know it stops as before."""

    def __init__(self, kept: list[str] | None = None, left: list[str] | None = None):
        self.kept, self.left = list(kept or []), list(left or [])
        super().__init__(f"interrupted; kept {', '.join(self.kept) or 'nothing'}")
