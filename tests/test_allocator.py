"""Freed memory stays in the process for the next partition (glibc malloc)."""

import os
import subprocess
import sys

import pytest

from gridwatch import allocator

pytestmark = pytest.mark.skipif(allocator._glibc() is None, reason="glibc's malloc only")

# Allocates and frees 256 MB, then prints how much of it the process still holds [MB].
_HELD_AFTER_FREE = """
import sys
import numpy as np
import psutil
from gridwatch.allocator import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
rss = psutil.Process().memory_info().rss
block = np.ones(2**25)  # 256 MB, every page touched
del block
print((psutil.Process().memory_info().rss - rss) / 2**20)
"""


def _held_after_free_mb(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _HELD_AFTER_FREE, mode], check=True,
                         capture_output=True, text=True)
    return float(out.stdout)


def test_by_default_a_large_freed_array_goes_back_to_the_kernel():
    assert _held_after_free_mb("default") < 50


def test_reuse_freed_memory_keeps_it_for_the_next_allocation():
    assert _held_after_free_mb("reuse") > 200


def test_the_environment_for_a_new_process_has_the_same_effect():
    assert set(allocator.ENVIRON) == {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                      "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", _HELD_AFTER_FREE, "default"], check=True,
                         capture_output=True, text=True,
                         env={**os.environ, **allocator.ENVIRON})
    assert float(out.stdout) > 200


_RELEASED_AFTER_FREE = """
import numpy as np
import psutil
from gridwatch.allocator import release_freed_memory, reuse_freed_memory
assert reuse_freed_memory()
rss = psutil.Process().memory_info().rss
block = np.ones(2**25)
del block
release_freed_memory()
print((psutil.Process().memory_info().rss - rss) / 2**20)
"""


def test_release_gives_kept_memory_back_between_passes():
    out = subprocess.run([sys.executable, "-c", _RELEASED_AFTER_FREE], check=True,
                         capture_output=True, text=True)
    assert float(out.stdout) < 50


_ARROW_POOL = """
import sys
from gridwatch.allocator import reuse_freed_memory
import pyarrow as pa
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
pa.array(range(1000))
print(pa.default_memory_pool().backend_name)
"""


@pytest.mark.parametrize(("mode", "env", "pool"), [
    pytest.param("reuse", {}, "system", id="reuse_freed_memory"),
    pytest.param("default", allocator.ENVIRON, "system", id="environment"),
])
def test_arrow_allocates_with_the_same_malloc(mode, env, pool):
    # pyarrow's bundled mimalloc faulted fresh huge pages in again and again (issue 15)
    out = subprocess.run([sys.executable, "-c", _ARROW_POOL, mode], check=True,
                         capture_output=True, text=True, env={**os.environ, **env})
    assert out.stdout.strip() == pool
