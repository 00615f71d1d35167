"""Helper processes that draw some of the plots on the machine's other cores.

A helper is a fresh interpreter that reads pickled per-site data
(:class:`gridwatch.report.data.MeterData` or ``AssetData``) on its standard
input and answers with the PNG's bytes, drawn by a
:class:`gridwatch.report.figures.Renderer`; the calling process writes every
file. :func:`helper_pool` starts them and feeds them jobs from a shared queue;
:func:`helper_main` is the helper's loop. See
:func:`gridwatch.report.plots.plot_sites` for why they are not started
through :mod:`multiprocessing`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import threading
from collections import deque

from gridwatch.report.figures import DPI, Renderer, local_rc
from gridwatch.report.png import png_bytes, write_bytes

#: Most processes that draw plots, this one included.
MAX_PROCESSES = 4
#: At most one helper process per this many sites (a helper costs about half a
#: second of CPU to start: Python, numpy, matplotlib, the templates).
SITES_PER_HELPER = 40
#: A helper that has not answered for this long is stopped; its site is drawn here.
HELPER_TIMEOUT_S = 120.0


def helper_count(n_sites: int) -> int:
    """Helper processes worth starting for ``n_sites`` plots on this machine."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(0, min(cpus - 1, MAX_PROCESSES - 1, n_sites // SITES_PER_HELPER))


@contextlib.contextmanager
def helper_pool(n_helpers: int, queue: deque, failed: list):
    """Start ``n_helpers`` helper processes; yield a function that sets them to work on ``queue``.

    Once set to work, each helper has a thread here that takes
    ``(data, path)`` jobs from the right of ``queue``, sends them to its
    process and waits for the answer; a job the helper could not draw is
    appended to ``failed``. On leaving, the helpers finish their current job
    and stop; on an error, the queue is emptied first.
    """
    processes = [p for p in (_start_helper() for _ in range(n_helpers)) if p is not None]
    threads = [threading.Thread(target=_feed_helper, args=(p, queue, failed),
                                name="gridwatch-plot-helper", daemon=True) for p in processes]

    def start_feeding():
        for thread in threads:
            thread.start()

    try:
        yield start_feeding
    except BaseException:
        queue.clear()
        raise
    finally:
        for thread, process in zip(threads, processes, strict=True):
            if thread.ident is not None:
                thread.join()
            else:  # never set to work
                _stop_helper(process)


def _start_helper():
    """A helper process (see :func:`gridwatch.report.plots.plot_sites`), or None if it cannot be started."""
    if not sys.executable:
        return None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)
    try:
        return subprocess.Popen(
            [sys.executable, "-c", "from gridwatch.report.helpers import helper_main; helper_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
            # Its own process group: Ctrl-C at a terminal (SIGINT to the foreground group)
            # stops only the caller, which prints one line; the helper exits at the end of
            # its input when the caller does.
            process_group=0)
    except OSError:
        return None


def _feed_helper(process, queue: deque, failed: list) -> None:
    """Send jobs from the right of ``queue`` to ``process`` until it is empty or the helper fails."""
    import select

    try:
        while True:
            try:
                job = queue.pop()
            except IndexError:
                return
            data, path = job
            try:
                pickle.dump(data, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                process.stdin.flush()
                if os.name == "posix":
                    ready, _, _ = select.select([process.stdout], [], [], HELPER_TIMEOUT_S)
                    if not ready:
                        raise TimeoutError
                png = pickle.load(process.stdout)
            except (OSError, EOFError, TimeoutError, pickle.UnpicklingError):
                failed.append(job)  # the helper died or hangs: no more jobs for it
                return
            if isinstance(png, bytes):
                write_bytes(png, path)
            else:
                failed.append(job)  # drawn again here, where the error shows its traceback
    finally:
        _stop_helper(process)


def _stop_helper(process) -> None:
    """Close the helper's input (it then exits); kill it if it does not."""
    with contextlib.suppress(OSError):
        process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.stdout.close()


def helper_main() -> None:
    """The loop of a helper process: read a site's data, answer with its PNG.

    The answer is the PNG's bytes or, if drawing failed, the error's text (a
    str). Anything else printed goes to standard error, so it cannot corrupt
    the answers. Files are written by the calling process only.
    """
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    jobs = sys.stdin.buffer
    renderer = Renderer()
    with local_rc():
        while True:
            try:
                data = pickle.load(jobs)
            except EOFError:
                return
            try:
                answer = png_bytes(renderer.render(data), dpi=DPI)
            except Exception as exc:  # noqa: BLE001 - reported; the site is drawn again by the caller
                answer = f"{type(exc).__name__}: {exc}"
            pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
            answers.flush()
