"""Writing the plots' PNGs: a fast encoder for drawn images, and an encoder thread.

:func:`png_bytes` compresses an RGB image without row filters at zlib level
``PNG_COMPRESS_LEVEL``; :func:`write_png` and :func:`write_bytes` write
through the atomic writer; :func:`encoder` overlaps the compression of one
site's image with the drawing of the next. The module knows pixels and
bytes only: the resolution recorded in a file is the caller's (``dpi``).
"""

from __future__ import annotations

import contextlib
from collections import deque

import numpy as np

#: zlib level of the PNGs: on these flat-coloured plots level 1 is about twice as
#: fast as the default (6), for files about 10 % larger.
PNG_COMPRESS_LEVEL = 1
_ENCODE_QUEUE = 2  # drawn images waiting for the PNG encoder thread


def write_png(rgb: np.ndarray, path, *, dpi: float) -> None:
    """Write an ``(height, width, 3)`` uint8 image as a PNG at ``path``, atomically.

    Parameters
    ----------
    rgb : numpy.ndarray of shape (height, width, 3), uint8
    path : str or os.PathLike
    dpi : float
        Resolution recorded in the file [dots per inch].
    """
    write_bytes(png_bytes(rgb, dpi=dpi), path)


def write_bytes(data: bytes, path) -> None:
    """Write ``data`` to ``path`` atomically."""
    from gridwatch.atomic import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(data)


def png_bytes(rgb: np.ndarray, *, dpi: float) -> bytes:
    """An 8-bit RGB PNG of ``rgb`` (``(height, width, 3)`` uint8), rows unfiltered.

    Pillow's encoder tries five row filters on every row, which takes two
    thirds of its time on these plots and makes the file no smaller (large
    flat areas deflate well as they are); zlib level 1 is the fastest level
    that still compresses well.

    References
    ----------
    PNG (Third Edition), W3C Recommendation, sections 5.3 (chunk layout),
    11.2.1 (IHDR), 11.3.5.3 (pHYs).
    """
    import struct
    import zlib

    height, width, _ = rgb.shape
    raw = np.empty((height, 1 + 3 * width), dtype=np.uint8)
    raw[:, 0] = 0  # filter type None
    raw[:, 1:] = rgb.reshape(height, 3 * width)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels_per_metre = round(dpi / 0.0254)
    return b"".join([
        b"\x89PNG\r\n\x1a\n",
        chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),  # 8-bit RGB
        chunk(b"pHYs", struct.pack(">IIB", pixels_per_metre, pixels_per_metre, 1)),
        chunk(b"IDAT", zlib.compress(raw.tobytes(), PNG_COMPRESS_LEVEL)),
        chunk(b"IEND", b""),
    ])


@contextlib.contextmanager
def encoder(*, dpi: float):
    """Yield ``encode(rgb, path)``: write the PNG on a second thread, overlapping the next drawing.

    zlib releases the GIL, so the PNG of one site is compressed while the next
    one is drawn. At most ``_ENCODE_QUEUE`` images wait (each is a copy of the
    canvas, ~1.7 MB). Leaving waits for the last file; an error while writing
    is raised here.
    """
    from concurrent.futures import ThreadPoolExecutor

    pending = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gridwatch-png") as pool:

        def encode(rgb, path):
            pending.append(pool.submit(write_png, rgb.copy(), path, dpi=dpi))
            while len(pending) > _ENCODE_QUEUE:
                pending.popleft().result()

        yield encode
        while pending:
            pending.popleft().result()
