"""Errors the CLI turns into clear messages (exit status 2) instead of tracebacks."""


class DiffdaError(Exception):
    """Base of every user-facing error: the message names the field and the fix."""


class InputError(DiffdaError):
    """Bad input data: a missing variable, a wrong grid, NaNs, a time gap."""
