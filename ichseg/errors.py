"""Exceptions that carry a one-line, user-facing message."""

from __future__ import annotations


class IchsegError(Exception):
    """Base class: the message is shown to the user as one line, without a traceback."""

    exit_code = 2


class InputError(IchsegError):
    """An input file or folder cannot be used (missing, unreadable, not a head CT, ...)."""


class OutputError(IchsegError):
    """An output cannot be written (exists and must not be overwritten, no space, ...)."""
