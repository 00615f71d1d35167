"""Publish a run's outputs all at once, under a lock, the way a nightly job must.

A run writes into a staging directory beside its destination and only a
complete run is moved into place, so readers of ``OUT_DIR`` (or of
``ROOT/latest``) see the previous run or the new one, never a mixture:

* ``--output OUT_DIR``: staging ``.OUT_DIR.staging-*`` beside ``OUT_DIR``; the
  finished directory replaces ``OUT_DIR`` (an atomic exchange where the
  kernel offers ``renameat2``, else two renames).
* ``--output-root ROOT``: staging ``ROOT/.staging-*``; the finished directory
  becomes ``ROOT/<as-of>/`` and then the ``ROOT/latest`` link is pointed at
  the newest published night (an atomic ``rename`` of a new link over the
  old one), last: a back-fill of an earlier day leaves ``latest`` where it is.

The case history records the night only once its outputs are published
(issue 14, item 3): a run that fails before, or whose publish fails, leaves
the history as it was.

One lock file per destination (``.OUT_DIR.lock`` beside it, ``ROOT/.lock``)
keeps two runs from overlapping: the second fails at once with
:class:`gridwatch.errors.LockedError` (exit code 5). Staging directories and
``ROOT/.latest.<pid>`` links left by a killed run are removed by the next run
that holds the lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as dt
import errno
import fcntl
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gridwatch.errors import ConfigError, LockedError

log = logging.getLogger(__name__)

LATEST = "latest"
"""Name of the link to the newest run under an output root."""


@dataclass(frozen=True)
class Destination:
    """Where a run publishes: one directory, or one directory per as-of day under a root.

    Attributes
    ----------
    parent : pathlib.Path
        Directory that holds the published directory, its staging directories and the lock.
    name : str or None
        Name of the published directory (``OUT_DIR``'s own name); ``None``
        under an output root, where the as-of day names it.
    """

    parent: Path
    name: str | None = None

    @classmethod
    def for_output(cls, output_dir=None, output_root=None) -> Destination:
        """The destination of ``--output OUT_DIR`` (wins) or ``--output-root ROOT``.

        Raises
        ------
        ConfigError
            When neither is given.
        """
        if output_dir:
            path = Path(output_dir).expanduser().absolute()
            return cls(parent=path.parent, name=path.name)
        if output_root:
            return cls(parent=Path(output_root).expanduser().absolute())
        raise ConfigError("no output given", hint="pass --output OUT_DIR or --output-root DIR, "
                          "or set output.root in the config")

    @property
    def is_root(self) -> bool:
        """True for an output root (one directory per as-of day and a ``latest`` link)."""
        return self.name is None

    @property
    def lock_path(self) -> Path:
        """The lock file of this destination."""
        return self.parent / (".lock" if self.is_root else f".{self.name}.lock")

    @property
    def staging_prefix(self) -> str:
        """Name prefix of this destination's staging directories."""
        return ".staging-" if self.is_root else f".{self.name}.staging-"

    def target(self, as_of: dt.date) -> Path:
        """The published directory of the run for ``as_of``."""
        return self.parent / (as_of.isoformat() if self.is_root else self.name)


@contextlib.contextmanager
def output_lock(destination: Destination):
    """Hold the destination's lock for the duration of the block.

    Raises
    ------
    LockedError
        At once, when another process holds it (its pid and start time are in the message).
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle = open(destination.lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the block
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LockedError(f"another gridwatch run holds the lock ({holder})",
                              file=destination.lock_path,
                              hint="wait for it to finish; the lock is released when that "
                                   "process exits") from None
        handle.seek(0)
        handle.truncate()
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        handle.write(f"pid {os.getpid()} since {started}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock; the file stays (removing it would race)


def remove_stale_staging(destination: Destination) -> int:
    """Remove what killed runs left; call while holding the lock.

    That is staging directories and, under an output root, the
    ``.latest.<pid>`` links a run killed between making the new ``latest``
    link and renaming it over the old one leaves behind (issue 14, item 7).

    Returns
    -------
    int
        How many were removed.
    """
    stale = [path for path in destination.parent.glob(f"{destination.staging_prefix}*")
             if path.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    if stale:
        log.warning("removed %d staging director%s left by an interrupted run", len(stale),
                    "y" if len(stale) == 1 else "ies")
    links = [path for path in destination.parent.glob(f".{LATEST}.*")
             if destination.is_root and path.is_symlink()]
    for path in links:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if links:
        log.warning("removed %d unfinished '%s' link%s left by an interrupted run", len(links),
                    LATEST, "" if len(links) == 1 else "s")
    return len(stale) + len(links)


def make_staging(destination: Destination) -> Path:
    """A new, empty staging directory beside the published ones (same file system)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=destination.staging_prefix, dir=destination.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)  # mkdtemp makes 0700; outputs are for the analysts too
    return path


def publish(staging: Path, destination: Destination, as_of: dt.date) -> Path:
    """Move a complete staging directory into place; under a root, then switch ``latest``.

    Returns
    -------
    pathlib.Path
        The published directory.
    """
    target = destination.target(as_of)
    check_replaceable(target)
    if target.exists():
        replaced = _exchange(staging, target)
        shutil.rmtree(replaced, ignore_errors=True)
    else:
        os.rename(staging, target)
    if destination.is_root:
        point_latest(destination.parent, newest_night(destination.parent) or target.name)
    _fsync_dir(destination.parent)
    return target


def newest_night(root: Path) -> str | None:
    """The newest as-of day published under ``root`` (``YYYY-MM-DD/run.json``), or None.

    ``latest`` points there: a back-fill of an earlier day does not move it
    back (issue 14, item 4).
    """
    from gridwatch.cases import published_nights

    nights = published_nights(root)
    return nights[-1] if nights else None


def check_replaceable(target: Path) -> None:
    """Refuse to replace anything but a missing or empty directory or an earlier run's outputs.

    A published directory is replaced as a whole; ``--output ~`` must not
    wipe a home directory.

    Raises
    ------
    ConfigError
        When ``target`` is a file or link, or a directory holding files but no ``run.json``.
    """
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ConfigError("the output path exists and is not a directory", file=target,
                          hint="remove it or choose another --output")
    if target.is_dir() and not (target / "run.json").is_file() and any(target.iterdir()):
        raise ConfigError("the output directory holds files that are not GridWatch outputs "
                          "(no run.json); a run replaces its output directory as a whole",
                          file=target, hint="choose a new or empty directory for --output")


def point_latest(root: Path, name: str) -> None:
    """Point ``root/latest`` at ``root/name`` atomically (a relative link, so the root can move)."""
    link = root / LATEST
    if link.exists() and not link.is_symlink():
        raise ConfigError(f"'{LATEST}' exists and is not a link", file=link,
                          hint="remove it; GridWatch keeps a link there")
    tmp = root / f".{LATEST}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(name, tmp)
    os.replace(tmp, link)


_RENAME_EXCHANGE = 2


def _exchange(staging: Path, target: Path) -> Path:
    """Swap two directories; returns the path now holding the old content.

    Uses Linux ``renameat2(RENAME_EXCHANGE)`` so that ``target`` never
    disappears; elsewhere, moves the old directory aside and the new one in.
    """
    libc_name = ctypes.util.find_library("c")
    renameat2 = getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) \
        if libc_name else None
    if renameat2 is not None:
        at_fdcwd = -100
        status = renameat2(at_fdcwd, os.fsencode(staging), at_fdcwd, os.fsencode(target),
                           _RENAME_EXCHANGE)
        if status == 0:
            return staging
        if ctypes.get_errno() not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(target))
    aside = staging.with_name(f"{staging.name}.old")
    os.rename(target, aside)
    os.rename(staging, target)
    return aside


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def run_published(input_dir=None, *, output_dir=None, output_root=None, as_of=None, config):
    """Run the pipeline under the destination's lock and publish its outputs when complete.

    Parameters
    ----------
    input_dir : str or os.PathLike, optional
        The dataset directory (``None`` for an InfluxDB source).
    output_dir : str or os.PathLike, optional
        ``OUT_DIR``: the outputs go directly in it (the contract's layout).
    output_root : str or os.PathLike, optional
        For scheduled runs: the outputs go in ``ROOT/<as-of>/`` and
        ``ROOT/latest`` points at the newest. ``output_dir`` wins; without
        either, ``config.output.root``.
    as_of : str or datetime.date, optional
        Last day analysed (see :func:`gridwatch.runner.open_source`).
    config : gridwatch.config.Config

    Returns
    -------
    gridwatch.pipeline.RunResult
        With ``paths`` pointing into the published directory.

    Raises
    ------
    LockedError
        Another run holds the destination's lock.
    GridwatchError
        Whatever stopped the run; nothing is published then and the previous
        outputs (and ``latest``) stay as they were.
    """
    from gridwatch.atomic import write_json
    from gridwatch.cases import locate_history
    from gridwatch.pipeline import run
    from gridwatch.redact import redact_data

    destination = Destination.for_output(output_dir, output_root or config.output.root)
    if not destination.is_root:  # OUT_DIR is known now: refuse before hours of work, not after
        check_replaceable(destination.parent / destination.name)
    with output_lock(destination):
        remove_stale_staging(destination)
        history = None
        if config.cases.enabled:  # the destination's history, not the staging directory's
            history = locate_history(
                None if destination.is_root else destination.parent / destination.name,
                output_root=destination.parent if destination.is_root else None,
                database=config.cases.database)
        staging = make_staging(destination)
        try:
            result = run(input_dir, staging, as_of=as_of, config=config, history=history,
                         record_history=False)
            if config.sink.influxdb:
                from gridwatch.influx import write_results

                log.info("writing results to InfluxDB")
                result.info["sink"] = write_results(result, config)
                write_json(staging / "run.json", redact_data(result.info))
            target = publish(staging, destination, result.as_of)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if result.pending_cases is not None:  # published: now the night is history
            _record_published(result, target)
    result.paths = {key: str(target / Path(path).relative_to(staging))
                    for key, path in result.paths.items()}
    log.info("published %s", target)
    return result


def _record_published(result, target: Path) -> None:
    """Record a published night in the case history (the outputs already are in place).

    Raises
    ------
    gridwatch.cases.CaseDatabaseError
        The history cannot take the night: the message says the outputs are
        published and that rerunning the night records it.
    """
    from gridwatch.cases import CaseDatabaseError

    try:
        result.pending_cases.commit()
    except CaseDatabaseError as exc:
        raise CaseDatabaseError(f"published {target} but could not record the night in the case "
                                f"history: {exc.message}", file=exc.file,
                                hint=f"{exc.hint + '; then ' if exc.hint else ''}rerun "
                                     f"--as-of {result.as_of} to record it") from exc
    result.pending_cases = None
