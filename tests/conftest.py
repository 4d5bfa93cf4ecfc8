"""Shared test setup: repository-root paths (tests pass from any working directory), the `x64`
fixture and the `slow` marker (registered in pyproject.toml) on CLI and benchmark smoke tests.

No persistent XLA compilation cache: with one, a CI run's worker died in jaxlib's
`executable.serialize()` (a segmentation fault while writing a cache entry, not reproduced here),
and a crash costs more than the ~3 minutes the cache saved.

    python3 -m pytest -q -n 2               # everything, slow tests included
    python3 -m pytest -q -m "not slow"      # skip the CLI and benchmark smoke tests
"""

import sys
from pathlib import Path

import pytest

import jaxrej  # noqa: F401  (first: its XLA flag must precede any computation; jaxrej/xla_flags.py)

ROOT = Path(__file__).resolve().parents[1]  # the repository: jaxrej/, configs/, benchmarks/
CONFIGS = ROOT / "configs"

if str(ROOT) not in sys.path:  # `benchmarks` and `tests` import from any working directory
    sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
    """jax.clear_caches() after each test module: a test worker lives through ~500 tests and
    thousands of compilations, and two CI runs died in XLA:CPU's compiler (a segmentation fault
    on the main thread, in the Square attack's first compilation, ~85% through the run) that the
    same module alone never shows. Compiled programs no later module needs are released."""
    yield
    import jax

    jax.clear_caches()


@pytest.fixture
def x64():
    """jax float64 inside the test; the previous setting is restored afterwards."""
    import jax

    with jax.enable_x64(True):
        yield
