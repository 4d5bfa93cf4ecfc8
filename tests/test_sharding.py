"""The class scorer with mesh= against the unsharded one, on 8 virtual CPU devices.

XLA_FLAGS must be set before jax is imported, so the 8-device checks run in a fresh Python
subprocess (safe under pytest-xdist); it prints JSON that the tests below assert on.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrej
from tests.gaussian import make_params, make_score_fn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.xdist_group("sharding")  # one worker runs the fixture

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    import jaxrej
    from jaxrej import batch_mesh
    from tests.gaussian import closed_form_logp, make_params, make_score_fn

    C, D, B = 3, 4, 11          # B = 11 is not a multiple of 8: two devices get padding
    mus, covs = make_params(C, D, seed=3, scale=2.0)
    rng = np.random.default_rng(4)
    y = np.arange(B) % C
    x = mus[y] + 0.7 * rng.normal(size=(B, D))
    params = (jnp.asarray(mus, jnp.float32), jnp.asarray(covs, jnp.float32))
    xj = jnp.asarray(x, jnp.float32)
    score_fn, sde, key = make_score_fn("vp", (D,)), jaxrej.VPSDE(), jax.random.key(7)
    truth = np.stack(
        [closed_form_logp("vp", mus, covs, x, np.full(B, c), 1e-5, 1.0) for c in range(C)], 1)
    out = {"n_devices": len(jax.devices()), "truth": truth.tolist()}
    for div in ("exact", "rademacher", "gaussian"):
        opts = dict(num_classes=C, key=key, divergence=div, n_probes=2, rtol=1e-5, atol=1e-5,
                    screen=None)
        ref = jaxrej.class_log_likelihood_result(score_fn, params, sde, xj, **opts)
        sh = jaxrej.class_log_likelihood_result(score_fn, params, sde, xj, mesh=batch_mesh(), **opts)
        out[div] = {
            "ref": np.asarray(ref.logp).tolist(), "sharded": np.asarray(sh.logp).tolist(),
            "ref_nfe": np.asarray(ref.nfe).tolist(), "sharded_nfe": np.asarray(sh.nfe).tolist(),
            "ok": bool(np.asarray(sh.ok).all()),
        }
    # A 4-device sub-mesh and a 1-device mesh give the same numbers as well.
    for n in (4, 1):
        sh = jaxrej.class_log_likelihood_result(
            score_fn, params, sde, xj, mesh=batch_mesh(jax.devices()[:n]), screen=None,
            num_classes=C, key=key, divergence="rademacher", n_probes=2, rtol=1e-5, atol=1e-5)
        out[f"rademacher_{n}dev"] = np.asarray(sh.logp).tolist()
    # A TopK screen works sharded too, and jit(grad) goes through the sharded scorer.
    top = dict(num_classes=C, key=key, divergence="exact", rtol=1e-5, atol=1e-5,
               screen=jaxrej.TopK(k=2, margin=5.0))
    ref = jaxrej.class_log_likelihood_result(score_fn, params, sde, xj, **top)
    sh = jaxrej.class_log_likelihood_result(score_fn, params, sde, xj, mesh=batch_mesh(), **top)
    out["topk"] = {k: np.asarray(getattr(r, k)).astype(float).tolist() for r, k in
                   [(ref, "logp"), (ref, "refined")]} | {
                   "sharded_logp": np.asarray(sh.logp).tolist(),
                   "sharded_refined": np.asarray(sh.refined).astype(float).tolist()}
    loss = lambda m: lambda z: jnp.sum(jaxrej.class_log_likelihoods(
        score_fn, params, sde, z, mesh=m, **top) * jnp.arange(C))
    out["grad"] = np.asarray(jax.jit(jax.grad(loss(None)))(xj)).tolist()
    out["sharded_grad"] = np.asarray(jax.jit(jax.grad(loss(batch_mesh())))(xj)).tolist()
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def eight_devices():
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_subprocess_sees_eight_devices(eight_devices):
    assert eight_devices["n_devices"] == 8


@pytest.mark.parametrize("div", ["exact", "rademacher", "gaussian"])
def test_sharded_equals_unsharded(eight_devices, div):
    r = eight_devices[div]
    assert r["ok"]
    # Same probes and the same per-example step-size control: equal up to float rounding.
    np.testing.assert_allclose(r["sharded"], r["ref"], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(r["sharded_nfe"], r["ref_nfe"])


def test_sharded_exact_matches_closed_form(eight_devices):
    np.testing.assert_allclose(
        eight_devices["exact"]["sharded"], eight_devices["truth"], rtol=5e-5, atol=2e-3
    )


def test_result_independent_of_device_count(eight_devices):
    r8 = np.asarray(eight_devices["rademacher"]["sharded"])
    for n in (4, 1):
        np.testing.assert_allclose(eight_devices[f"rademacher_{n}dev"], r8, rtol=1e-5, atol=1e-4)


def test_sharded_topk_screen_and_gradient(eight_devices):
    """A TopK screen works per device (the same refined pairs and values), and jit(grad) of a
    weighted sum of all class log-likelihoods through the sharded scorer equals the unsharded."""
    r = eight_devices["topk"]
    np.testing.assert_array_equal(r["sharded_refined"], r["refined"])
    np.testing.assert_allclose(r["sharded_logp"], r["logp"], rtol=1e-5, atol=1e-4)
    g, gs = np.asarray(eight_devices["grad"]), np.asarray(eight_devices["sharded_grad"])
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
    np.testing.assert_allclose(gs, g, rtol=1e-4, atol=1e-4)


def test_bad_arguments_raise_value_error():
    C, D = 2, 3
    mus, covs = make_params(C, D, seed=0)
    params = (jnp.asarray(mus, jnp.float32), jnp.asarray(covs, jnp.float32))
    score_fn, sde, key = make_score_fn("vp", (D,)), jaxrej.VPSDE(), jax.random.key(0)
    x = jnp.zeros((4, D), jnp.float32)
    score = jaxrej.class_log_likelihoods
    with pytest.raises(ValueError, match="mesh"):
        score(score_fn, params, sde, x, num_classes=C, key=key, mesh="cpu")
    with pytest.raises(ValueError, match="mesh"):
        score(score_fn, params, sde, x, num_classes=C, key=key,
              mesh=jax.sharding.Mesh(np.asarray(jax.devices()), ("data",)))  # fmt: skip
    with pytest.raises(ValueError, match="devices"):
        jaxrej.batch_mesh([])
