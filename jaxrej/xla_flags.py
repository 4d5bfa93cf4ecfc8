"""XLA flags jaxrej sets before JAX starts its CPU backend: the workaround of a jaxlib crash.

jaxlib 0.10.2 and 0.11.0 route some f32 multiply-reduce fusions on x86-64 CPUs through YNNPACK
("ynn fusion"), which crashes with a segmentation fault on operands of rank >= 7 with a size-1
dimension (jax-ml/jax#40412, #39257; a 5-line reproduction is in
tests/test_xla_flags.py). The fault happens on a worker thread, so the Python traceback points at
whatever the main thread was doing; this project's CI workers died in unrelated places (the
compilation cache's serialize, the Square attack's compile -- a crash of which remained after
this flag: tests/conftest.py). The fix is in XNNPACK (July 2026) but not in
these wheels; the workaround is the flag `--xla_cpu_experimental_ynn_fusion_type=` (empty: no ynn
fusion), which XLA reads when the backend starts, i.e. at the first computation.

Cost, measured on the 2-core CPU (jaxlib 0.10.2, interleaved runs): an MLP's gradient (128 x 784,
width 512) and a 3x3 convolution's gradient are unchanged within the machine's noise; a broadcast
multiply-reduce (256 x 10 x 784) takes 5-10 ms instead of 0.4-0.7 ms. "-reduce" (ynn's reduce
fusion alone off) also stops the reproduction, but #39257's crash goes through ynn's dot path, so
the whole of ynn fusion is switched off, as its reporters did.

`apply()` (called by `import jaxrej`) appends it to XLA_FLAGS on the affected versions, unless the
user's XLA_FLAGS already set it; it warns if the CPU backend is already running (too late).
"""

import importlib.metadata
import os
import sys
import warnings

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
AFFECTED_JAXLIB = ("0.10.2", "0.11.0")


def jaxlib_version() -> str | None:
    try:
        return importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return None


def needs_workaround(version: str | None, xla_flags: str) -> bool:
    """True where jaxlib `version` has the ynn-fusion crash and `xla_flags` leave ynn on."""
    return version in AFFECTED_JAXLIB and YNN_FLAG not in xla_flags


def _backend_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


def apply() -> bool:
    """Append `--xla_cpu_experimental_ynn_fusion_type=` to XLA_FLAGS where needed; True if set."""
    flags = os.environ.get("XLA_FLAGS", "")
    if not needs_workaround(jaxlib_version(), flags):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}=".strip()
    if _backend_started():
        warnings.warn(
            f"jaxlib {jaxlib_version()} can crash (segmentation fault) in XLA:CPU's ynn fusion; "
            f"JAX had started before jaxrej was imported, so the workaround flag could not take "
            f"effect: import jaxrej first, or run with XLA_FLAGS='{YNN_FLAG}='",
            RuntimeWarning,
            stacklevel=3,
        )
    return True
