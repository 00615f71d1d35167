"""Errors that stop a run, each naming what is wrong and how to fix it."""

from __future__ import annotations


class GridwatchError(Exception):
    """Base of every error GridWatch raises on purpose.

    The message is one line: what is wrong, where (file, column, row, meter),
    and what to do about it. The command line prints it to stderr as is.

    Parameters
    ----------
    message : str
        What is wrong.
    file : str, optional
        The file at fault.
    column, row, meter_id : optional
        Where in that file.
    hint : str, optional
        What the user should do.
    """

    exit_code = 1

    def __init__(self, message, *, file=None, column=None, row=None, meter_id=None, hint=None):
        self.message = message
        self.file = None if file is None else str(file)
        self.column = column
        self.row = row
        self.meter_id = meter_id
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column:
            where.append(f"column '{self.column}'")
        if self.meter_id is not None:
            where.append(f"meter {self.meter_id}")
        text = f"{': '.join([', '.join(where)] if where else [])}{': ' if where else ''}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class ConfigError(GridwatchError):
    """The configuration file is missing, malformed or out of range."""

    exit_code = 2


class InputError(GridwatchError):
    """An input table cannot be used at all (missing, empty, unparseable)."""

    exit_code = 3


class NotFittedError(GridwatchError):
    """A model was used before ``fit`` was called."""


class SourceUnreachable(GridwatchError):
    """The data source (an InfluxDB server) cannot be reached or keeps failing."""

    exit_code = 4


class LockedError(GridwatchError):
    """Another run holds the lock on the same output."""

    exit_code = 5
