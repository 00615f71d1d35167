"""Run a command in a child process and measure it as the machine sees it.

The peak is that of the SUM of the resident memory of the child's whole
process tree (a Dask client, its scheduler and workers, a plot helper),
sampled every 50 ms: what the machine must hold at once. ``ru_maxrss`` would
give only the largest single process.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from dataclasses import dataclass

import psutil


@dataclass
class Measured:
    """What :func:`run_measured` saw."""

    elapsed_s: float
    peak_mb: float
    returncode: int
    stderr: str
    root_peak_mb: float = 0.0  # the command's own process (a Dask client, without its workers)


def run_measured(command: list[str], *, interval_s: float = 0.05) -> Measured:
    """Run ``command``, wait for it, and return its wall-clock time and tree peak memory."""
    peak = root_peak = 0
    started = time.perf_counter()
    proc = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()

    def sample():
        nonlocal peak, root_peak
        while not stop.is_set():
            total = 0
            for p in [proc, *proc.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    rss = p.memory_info().rss
                    total += rss
                    if p is proc:
                        root_peak = max(root_peak, rss)
            peak = max(peak, total)
            stop.wait(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    return Measured(elapsed_s=elapsed, peak_mb=peak / 2**20, returncode=proc.returncode,
                    stderr=stderr, root_peak_mb=root_peak / 2**20)
