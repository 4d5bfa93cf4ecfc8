"""Shared test setup: repository-root paths (tests pass from any working directory), the `x64`
fixture, the `slow` marker (registered in pyproject.toml) on CLI and benchmark smoke tests, and
one persistent XLA compilation cache for the whole run.

The CLI tests run commands many times over the same toy models, and each command traces fresh
closures, so jax's in-memory cache misses and XLA compiles the same program again; a
persistent cache (keyed by the program itself) serves those repeats. It lives in a fresh
temporary folder made by the first process to load this file (pytest-xdist's workers and the
tests' subprocesses inherit it through JAX_COMPILATION_CACHE_DIR), removed when that process
exits; a JAX_COMPILATION_CACHE_DIR already set is used as it is. A size limit turns on jax's
file lock (the `filelock` package, a test dependency), so that no worker reads an entry another
is still writing; without `filelock` there is no cache.

    python3 -m pytest -q -n 2               # everything, slow tests included
    python3 -m pytest -q -m "not slow"      # skip the CLI and benchmark smoke tests
"""

import atexit
import os
import shutil
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

import pytest

if find_spec("filelock") and "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # before jax loads
    _cache = tempfile.mkdtemp(prefix="jaxrej-tests-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 * 2**30))  # bytes; locks
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]  # the repository: jaxrej/, configs/, benchmarks/
CONFIGS = ROOT / "configs"

if str(ROOT) not in sys.path:  # `benchmarks` and `tests` import from any working directory
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def x64():
    """jax float64 inside the test; the previous setting is restored afterwards."""
    import jax

    with jax.enable_x64(True):
        yield
