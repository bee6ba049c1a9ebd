"""Errors the CLI turns into clear messages (exit status 2) instead of tracebacks."""


class DiffdaError(Exception):
    """Base of every user-facing error: the message names the field and the fix."""


class InputError(DiffdaError):
    """Bad input data: a missing variable, a wrong grid, NaNs, a time gap."""


class CollectiveError(DiffdaError):
    """Raised on every rank at the same point, after the ranks agreed (a collective) that the run
    must stop: a non-finite particle, a locked output. The ranks stop together and exit with
    status 2, rank 0 reporting; no rank is aborted, so no rank's last output is lost."""
