"""Errors raised for bad user input, each message naming the problem and the fix; and the
failure of a die, after which a session cannot go on."""


class TyllmError(ValueError):
    """A user-facing error: the message says what is wrong and how to fix it."""


class ArtifactError(TyllmError):
    """An artifact tree is missing, incomplete, corrupted or does not fit the request."""


class DieFailure(RuntimeError):
    """A die worker failed; the session cannot continue."""
