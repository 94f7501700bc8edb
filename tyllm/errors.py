"""Errors raised for bad user input: each message names the problem and the fix."""


class TyllmError(ValueError):
    """A user-facing error: the message says what is wrong and how to fix it."""


class ArtifactError(TyllmError):
    """An artifact tree is missing, incomplete, corrupted or does not fit the request."""
