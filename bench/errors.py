"""Errors that the CLI turns into a one-line message and an exit code.

Every error a user can cause by what they typed or by a file they handed us is a `UsageError`
(exit 2). Code deeper down raises these with a message that names what was wrong and what is
valid; the CLI prints the message and never a traceback.
"""


class WattbenchError(Exception):
    """Base class for errors wattbench reports to the user as one line."""

    exit_code = 1


class UsageError(WattbenchError):
    """Bad usage or bad input: unknown name, malformed value, damaged file (exit 2)."""

    exit_code = 2


class ResultFileError(UsageError):
    """A result file that cannot be read: damaged, not JSON, or of an unknown schema."""


class Unsupported(Exception):
    """A case that cannot run on this device (dtype, backend, op); the case is recorded as skipped."""
