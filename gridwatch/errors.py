"""Errors that stop a run, each naming what is wrong and how to fix it."""

from __future__ import annotations

import errno


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
        return one_line(text)


def one_line(text) -> str:
    r"""``text`` on one line: control characters (a newline in a column name) shown escaped.

    Examples
    --------
    >>> one_line("found: meter_id, time\nstamp")
    'found: meter_id, time\\nstamp'
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class ConfigError(GridwatchError):
    """The configuration file is missing, malformed or out of range."""

    exit_code = 2


class InputError(GridwatchError):
    """An input table cannot be used at all (missing, empty, unparseable)."""

    exit_code = 3


class NoUsableReadings(InputError):
    """Not a single usable reading: raised where it is found, named by the source that was read.

    The analysis raises it without a file (it does not know where the rows
    came from); the run turns it into its source's own message
    (:func:`no_usable_readings` for files), so that no caller decides by a
    file name or a message what kind of error it has.

    Parameters
    ----------
    message : str, default "no usable readings"
    issues : gridwatch.issues.IssueLog, optional
        What the readers and cleaning dropped, for the source's message.
    **kwargs
        As :class:`GridwatchError` (``file``, ``hint``...).
    """

    def __init__(self, message="no usable readings", *, issues=None, **kwargs):
        super().__init__(message, **kwargs)
        self.issues = issues


class NotFittedError(GridwatchError):
    """A model was used before ``fit`` was called."""


class SourceUnreachable(GridwatchError):
    """The data source (an InfluxDB server) cannot be reached or keeps failing."""

    exit_code = 4


class LockedError(GridwatchError):
    """Another run holds the lock on the same output."""

    exit_code = 5


class StorageError(GridwatchError):
    """The machine refused a file: read-only file system, no permission, not a directory, disk full."""

    exit_code = 4


class Stopped(BaseException):  # noqa: N818 - not an error: the run was told to stop
    """The process was told to stop by a signal (SIGTERM, SIGHUP); see :data:`SIGNAL_EXIT_CODES`.

    A :class:`BaseException`, like :class:`KeyboardInterrupt`, so that no
    ``except Exception`` in the library swallows it, while every ``finally``
    and ``except BaseException`` clean-up (the staging directory) still runs.

    Parameters
    ----------
    signum : int
        The signal received.
    """

    def __init__(self, signum: int):
        import signal

        self.signum = int(signum)
        self.name = signal.Signals(self.signum).name
        super().__init__(f"stopped by {self.name}")

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process killed by it."""
        return 128 + self.signum


_STORAGE_HINTS = {
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.EACCES: "no permission: check the owner and mode of the directory",
    errno.EPERM: "not permitted: check the owner and mode of the directory",
    errno.ENOSPC: "the disk is full: free space or choose another location",
    errno.EDQUOT: "the disk quota is exceeded: free space or choose another location",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EEXIST: "a file is in the way of a directory on the path",
    errno.EISDIR: "a directory is in the way of a file",
    errno.ENOENT: "a directory on the path does not exist or cannot hold files",
    errno.EIO: "the device reported an I/O error",
}


def storage_error(exc: OSError, *, file=None) -> StorageError:
    """The one-line :class:`StorageError` of an operating-system refusal.

    Parameters
    ----------
    exc : OSError
        What the operating system raised.
    file : str or os.PathLike, optional
        The path at fault when ``exc`` does not name one (``exc.filename`` wins).

    Returns
    -------
    StorageError
        Naming the path, the system's reason and what to do.

    Examples
    --------
    >>> import errno
    >>> str(storage_error(OSError(errno.EROFS, "Read-only file system", "/mnt/out")))
    '/mnt/out: Read-only file system (the file system is read-only: choose a writable location)'
    """
    path = exc.filename if exc.filename is not None else file
    reason = exc.strerror or str(exc) or type(exc).__name__
    return StorageError(reason, file=path, hint=_STORAGE_HINTS.get(exc.errno))


#: What to check when every reading was dropped for one reason (``data_quality.csv`` codes).
_NO_READINGS_CAUSES = {
    "readings.unknown_meter": "no meter_id of the readings is in the meters table: both tables "
                              "must use the same ids",
    "readings.outside_window": "no reading is in the analysis window: check --as-of and "
                               "analysis.history_days",
    "readings.bad_timestamp": "no timestamp could be read: use ISO 8601",
}


def no_usable_readings(file, issues=None) -> InputError:
    """The :class:`InputError` of a run left without a single reading, naming the cause.

    A failed run writes no ``data_quality.csv``, so the message itself says
    which repairs or refusals took the rows, largest first.

    Parameters
    ----------
    file : str or os.PathLike
        The readings file (or source) that was read.
    issues : gridwatch.issues.IssueLog, optional
        What the readers and cleaning dropped.

    Returns
    -------
    NoUsableReadings
    """
    dropped = {}
    if issues is not None and len(issues):
        frame = issues.to_frame()
        frame = frame[(frame["table"] == "readings") & (frame["action"] == "dropped")]
        dropped = frame.groupby("code")["count"].sum().sort_values(ascending=False).to_dict()
    if not dropped:
        return NoUsableReadings("no usable readings: the table has no rows", file=file,
                                hint="check that the readings file holds data")
    total = sum(int(n) for n in dropped.values())
    reasons = ", ".join(f"{int(n)} {code}" for code, n in list(dropped.items())[:3])
    top = next(iter(dropped))
    hint = _NO_READINGS_CAUSES.get(top, "fix the rows of that kind")
    return NoUsableReadings(f"no usable readings: all {total} rows were dropped ({reasons})",
                            file=file, hint=hint)
