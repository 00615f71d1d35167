"""GridWatch: find steady, mining-like loads in smart-meter and transformer data.

The public API is small on purpose::

    from gridwatch import run, load_config
    result = run("sample_data", "out", config=load_config(None))
"""

import logging

from gridwatch.version import __version__

# A library logs, the application decides where to: no "No handlers" fallback to stderr.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["Config", "RunResult", "__version__", "load_config", "run"]


def __getattr__(name):
    # Lazy so that ``import gridwatch.columns`` stays cheap.
    if name in ("Config", "load_config"):
        from gridwatch import config

        return getattr(config, name)
    if name in ("RunResult", "run"):
        from gridwatch import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'gridwatch' has no attribute {name!r}")
