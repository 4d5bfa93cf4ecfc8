"""The ynn-fusion workaround (jaxrej/xla_flags.py): a fresh Python that imports jaxrej runs the
reproduction of jax-ml/jax#40412 (an f32 multiply-reduce of rank 7 with a size-1 dimension),
which kills the process with SIGSEGV on jaxlib 0.10.2 without the flag."""

import os
import subprocess
import sys

from jaxrej import xla_flags

REPRO = """
import jaxrej, jax, jax.numpy as jnp
S = (3, 1, 2, 2, 8, 8, 8)
u = jax.random.normal(jax.random.PRNGKey(0), S, dtype=jnp.float32)
v = jax.random.normal(jax.random.PRNGKey(1), S, dtype=jnp.float32)
out = jax.jit(lambda a, b: jnp.sum(a * b, axis=3))(u, v)
import numpy as np
np.testing.assert_allclose(np.asarray(out), np.sum(np.asarray(u) * np.asarray(v), axis=3),
                           rtol=1e-5, atol=1e-5)
print("OK", __import__("os").environ.get("XLA_FLAGS"))
"""


def test_needs_workaround_only_on_the_affected_jaxlib_and_never_over_the_users_flag():
    assert xla_flags.needs_workaround("0.10.2", "")
    assert xla_flags.needs_workaround("0.11.0", "--xla_force_host_platform_device_count=8")
    assert not xla_flags.needs_workaround("0.10.1", "")
    assert not xla_flags.needs_workaround(None, "")
    assert not xla_flags.needs_workaround("0.10.2", "--xla_cpu_experimental_ynn_fusion_type=x")


def test_the_crashing_reduction_runs_after_import_jaxrej():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", REPRO], env=dict(env, JAX_PLATFORMS="cpu"),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    if xla_flags.jaxlib_version() in xla_flags.AFFECTED_JAXLIB:
        assert xla_flags.YNN_FLAG in proc.stdout
