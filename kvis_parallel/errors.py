"""Exception types that separate user errors from bugs.

A :class:`UserError` is bad input or a bad option: the message is for the
user, the CLI exits with status 2 and the server responds with a 4xx. Any other
exception is a bug: it is logged with its traceback, the CLI exits with
status 1 and the server responds with 500.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input or options; the message names the value and the fix."""


class ArchiveError(UserError):
    """An uploaded or given archive is invalid, truncated or over a limit."""


class SeriesError(UserError):
    """No usable time steps were found, or the steps are inconsistent."""


class FieldError(UserError):
    """The requested field, part or component does not exist in the data."""


class StepReadError(UserError):
    """One time step's file cannot be read or parsed."""
