"""The failures a user fixes from the message alone. The CLI and the Ray job entry points print them as one line
(exit 1), never as a traceback; anything else is a bug and keeps its traceback.

An error type is one by subclassing `UserError` where it is defined: this module imports nothing of the package,
so every layer may, and catching `USER_ERRORS` imports nothing (`litelora --help` does not pay for torch).
"""

from __future__ import annotations


class UserError(Exception):
    """A failure whose message says what to fix (a setting, a file, a version, the bucket, a missing package)."""


class JobFailed(RuntimeError, UserError):
    """A Ray Train job or Tune search ended without a result, or a Serve app did not start; the message carries
    Ray's reason."""


USER_ERRORS: tuple[type[Exception], ...] = (
    UserError,
    FileNotFoundError,
    ValueError,  # a configuration value out of range: the message names it and its bounds
)
