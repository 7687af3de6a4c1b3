"""The one exception family for problems a user can cause and fix.

Every message is a sentence for a person who has never seen a traceback: it names the
column (or setting) at fault and says what to do about it.
"""

from __future__ import annotations


class HteError(Exception):
    """A problem with the user's input or choices; ``str(error)`` is the message to show."""


class DataError(HteError):
    """The table cannot be read or does not hold a usable experiment."""


class SpecError(HteError):
    """The chosen roles, factors or settings do not fit the data."""


class ReportError(HteError):
    """A shared report cannot be published or opened."""
