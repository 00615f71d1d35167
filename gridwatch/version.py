"""The package's version, in one place; it imports nothing.

``gridwatch.__version__`` re-exports it; modules of the package that need it
(``pipeline``, for ``run.json``) import it from here, not from the package,
whose lazy public API imports them.
"""

__version__ = "0.1.0"
