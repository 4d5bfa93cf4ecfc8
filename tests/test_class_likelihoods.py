"""Scoring every class: the plain path against the closed form, the cascade against the plain path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrej
from tests.gaussian import closed_form_logp, make_params, make_score_fn

C, D = 4, 3
TOL = dict(rtol=1e-5, atol=1e-5)  # the closed-form checks' 2e-3 nats need 1e-5
KEY = jax.random.key(0)
SDE = jaxrej.VPSDE()


@pytest.fixture(scope="module")
def problem():
    mus, covs = make_params(C, D, seed=5, scale=2.0)
    rng = np.random.default_rng(6)
    y = np.arange(8) % C
    x = mus[y] + 0.7 * rng.normal(size=(8, D))
    params = (jnp.asarray(mus, jnp.float32), jnp.asarray(covs, jnp.float32))
    truth = np.stack(
        [closed_form_logp("vp", mus, covs, x, np.full(8, c), 1e-5, 1.0) for c in range(C)], 1
    )
    return params, jnp.asarray(x, jnp.float32), truth


@pytest.fixture(scope="module")
def plain(problem):
    params, x, _ = problem
    return jaxrej.class_log_likelihood_result(
        make_score_fn("vp", (D,)), params, SDE, x, num_classes=C, key=KEY, divergence="exact",
        **TOL,
    )  # fmt: skip


def test_plain_matches_closed_form(problem, plain):
    _, _, truth = problem
    np.testing.assert_allclose(plain.logp, truth, rtol=5e-5, atol=2e-3)
    assert bool(plain.refined.all()) and bool(plain.ok.all())
    # The array entry point returns the same numbers.
    params, x, _ = problem
    arr = jaxrej.class_log_likelihoods(
        make_score_fn("vp", (D,)), params, SDE, x, num_classes=C, key=KEY, divergence="exact",
        **TOL,
    )  # fmt: skip
    np.testing.assert_allclose(arr, plain.logp, rtol=1e-6)


@pytest.mark.parametrize("margin", [3.0, 1000.0])
def test_cascade_refines_what_is_in_reach(problem, plain, margin):
    params, x, truth = problem
    screens = [jaxrej.Screen(margin=margin)]
    res = jaxrej.class_log_likelihood_result(
        make_score_fn("vp", (D,)),
        params,
        SDE,
        x,
        num_classes=C,
        key=KEY,
        divergence="exact",
        screen=screens,
        chunk_size=5,
        **TOL,
    )
    refined = np.asarray(res.refined)
    logp = np.asarray(res.logp)
    # Refined pairs carry the full-accuracy solve: equal to the plain path.
    np.testing.assert_allclose(logp[refined], np.asarray(plain.logp)[refined], rtol=1e-5, atol=1e-4)
    # The true best class is refined on every example, so the decision is the plain one.
    best = truth.argmax(1)
    assert refined[np.arange(len(best)), best].all()
    np.testing.assert_array_equal(logp.argmax(1), np.asarray(plain.logp).argmax(1))
    # The screen's NFE are added on top of the refinement's.
    assert (np.asarray(res.nfe)[refined] > np.asarray(plain.nfe)[refined]).all()
    if margin > 100:
        assert refined.all()
    else:
        assert not refined.all()  # the margin drops far classes...
        # ...and only classes far below the best: every dropped class is > 1 nat below in truth.
        gap = truth.max(1, keepdims=True) - truth
        assert (gap[~refined] > 1.0).all()


def test_chunking_does_not_change_results(problem, plain):
    params, x, _ = problem
    res = jaxrej.class_log_likelihood_result(
        make_score_fn("vp", (D,)),
        params,
        SDE,
        x,
        num_classes=C,
        key=KEY,
        divergence="exact",
        chunk_size=3,
        **TOL,
    )
    np.testing.assert_allclose(res.logp, plain.logp, rtol=1e-5)
    # Batched matmuls of another shape round differently, which can flip a step's accept/reject
    # decision: at most one Tsit5 step (6 evaluations) apart, and equal on most pairs.
    diff = np.abs(np.asarray(res.nfe) - np.asarray(plain.nfe))
    assert diff.max() <= 6 and (diff == 0).mean() >= 0.75


def test_failed_example_is_nan_everywhere(problem):
    params, x, _ = problem
    x = np.asarray(x).copy()
    x[1, 0] = np.nan
    res = jaxrej.class_log_likelihood_result(
        make_score_fn("vp", (D,)),
        params,
        SDE,
        jnp.asarray(x),
        num_classes=C,
        key=KEY,
        divergence="exact",
        screen=jaxrej.Screen(margin=5.0),
    )
    assert np.isnan(np.asarray(res.logp)[1]).all() and not np.asarray(res.ok)[1].any()
    assert np.asarray(res.ok)[0].any()


def test_bad_screen_arguments(problem):
    params, x, _ = problem
    with pytest.raises(ValueError, match="margin"):
        jaxrej.Screen(margin=0.0)
    with pytest.raises(ValueError, match="screen"):
        jaxrej.class_log_likelihood_result(
            make_score_fn("vp", (D,)), params, SDE, x, num_classes=C, key=KEY, screen=["fast"]
        )
    with pytest.raises(ValueError, match="divergence"):
        jaxrej.class_log_likelihood_result(
            make_score_fn("vp", (D,)),
            params,
            SDE,
            x,
            num_classes=C,
            key=KEY,
            screen=jaxrej.Screen(divergence="hutch"),
        )
    with pytest.raises(ValueError, match="chunk_size"):
        jaxrej.class_log_likelihood_result(
            make_score_fn("vp", (D,)), params, SDE, x, num_classes=C, key=KEY, chunk_size=0
        )
