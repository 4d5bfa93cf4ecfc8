"""The likelihood engine against the closed form of Gaussian data (tests/gaussian.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

import jaxrej
from jaxrej.autodiff import log_likelihood_and_grad
from tests.gaussian import closed_form_logp, make_params, make_score_fn

C, D = 3, 4
SDES = {"vp": jaxrej.VPSDE(), "subvp": jaxrej.SubVPSDE(), "ve": jaxrej.VESDE()}
KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def problem():
    mus, covs = make_params(C, D)
    rng = np.random.default_rng(1)
    y = rng.integers(0, C, 6)
    x = mus[y] + rng.normal(size=(6, D))
    return mus, covs, x, y


def _params(mus, covs, dtype=jnp.float32):
    return jnp.asarray(mus, dtype), jnp.asarray(covs, dtype)


@pytest.mark.parametrize("kind", ["vp", "subvp", "ve"])
def test_exact_divergence_matches_closed_form(problem, kind):
    mus, covs, x, y = problem
    sde = SDES[kind]
    res = jaxrej.log_likelihood(
        make_score_fn(kind, (D,)),
        _params(mus, covs),
        sde,
        jnp.asarray(x, jnp.float32),
        jnp.asarray(y),
        key=KEY,
        divergence="exact",
        rtol=1e-5,
        atol=1e-5,
    )
    truth = closed_form_logp(kind, mus, covs, x, y, 1e-5, sde.prior_std)
    assert bool(res.ok.all())
    assert np.max(np.abs(np.asarray(res.logp) - truth)) <= 2e-3
    assert np.all(np.asarray(res.nfe) > 0)


@pytest.mark.parametrize("kind", ["vp", "ve"])
def test_error_shrinks_as_tolerances_tighten(problem, kind):
    mus, covs, x, y = problem
    sde = SDES[kind]
    truth = closed_form_logp(kind, mus, covs, x, y, 1e-5, sde.prior_std)
    errors = []
    with jax.enable_x64(True):
        for tol in (1e-3, 1e-5, 1e-7):
            res = jaxrej.log_likelihood(
                make_score_fn(kind, (D,)),
                _params(mus, covs, jnp.float64),
                sde,
                jnp.asarray(x, jnp.float64),
                jnp.asarray(y),
                key=KEY,
                divergence="exact",
                rtol=tol,
                atol=tol,
            )
            errors.append(np.max(np.abs(np.asarray(res.logp) - truth)))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 1e-5


def test_event_shape_is_kept(problem):
    """A (2, 2) event gives the same numbers as the flat (4,) event."""
    mus, covs, x, y = problem
    sde = SDES["vp"]
    flat = jaxrej.log_likelihood(
        make_score_fn("vp", (D,)),
        _params(mus, covs),
        sde,
        jnp.asarray(x, jnp.float32),
        jnp.asarray(y),
        key=KEY,
        divergence="exact",
    )
    square = jaxrej.log_likelihood(
        make_score_fn("vp", (2, 2)),
        _params(mus, covs),
        sde,
        jnp.asarray(x, jnp.float32).reshape(-1, 2, 2),
        jnp.asarray(y),
        key=KEY,
        divergence="exact",
    )
    np.testing.assert_allclose(square.logp, flat.logp, rtol=1e-6)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(problem, probe):
    """The mean of many single-probe solves matches the exact value within 4 standard errors."""
    mus, covs, x, y = problem
    sde = SDES["vp"]
    m = 256
    xs = jnp.asarray(np.repeat(x[:1], m, 0), jnp.float32)
    ys = jnp.asarray(np.repeat(y[:1], m, 0))
    sf = make_score_fn("vp", (D,))
    est = jaxrej.log_likelihood(sf, _params(mus, covs), sde, xs, ys, key=KEY, divergence=probe)
    exact = jaxrej.log_likelihood(
        sf, _params(mus, covs), sde, xs[:1], ys[:1], key=KEY, divergence="exact"
    )
    logp = np.asarray(est.logp, np.float64)
    se = logp.std(ddof=1) / math.sqrt(m)
    assert se > 0  # the probes do vary
    assert abs(logp.mean() - float(exact.logp[0])) <= 4 * se


def test_more_probes_less_variance(problem):
    mus, covs, x, y = problem
    sde = SDES["vp"]
    xs = jnp.asarray(np.repeat(x[:1], 64, 0), jnp.float32)
    ys = jnp.asarray(np.repeat(y[:1], 64, 0))
    sf = make_score_fn("vp", (D,))
    sd = [
        np.std(jaxrej.log_likelihood(sf, _params(mus, covs), sde, xs, ys, key=KEY, n_probes=k).logp)
        for k in (1, 16)
    ]
    assert sd[1] < sd[0] / 2  # ~ 1/sqrt(16) = 1/4


def test_class_log_likelihoods_and_marginal(problem):
    mus, covs, x, y = problem
    sde = SDES["vp"]
    ll = jaxrej.class_log_likelihoods(
        make_score_fn("vp", (D,)),
        _params(mus, covs),
        sde,
        jnp.asarray(x, jnp.float32),
        num_classes=C,
        key=KEY,
        divergence="exact",
        rtol=1e-5,
        atol=1e-5,
        screen=None,
    )
    assert ll.shape == (len(x), C)
    truth = np.stack(
        [closed_form_logp("vp", mus, covs, x, np.full(len(x), c), 1e-5, 1.0) for c in range(C)], 1
    )
    np.testing.assert_allclose(ll, truth, atol=2e-3)
    np.testing.assert_allclose(
        jaxrej.marginal_log_likelihood(ll), logsumexp(truth, axis=1) - np.log(C), atol=2e-3
    )
    prior = jnp.log(jnp.array([0.5, 0.3, 0.2]))
    np.testing.assert_allclose(
        jaxrej.marginal_log_likelihood(ll, prior),
        logsumexp(truth + np.asarray(prior), axis=1),
        atol=2e-3,
    )
    # The default (screened) call: the refined class is each example's best, exact to 2e-3.
    res = jaxrej.class_log_likelihood_result(
        make_score_fn("vp", (D,)), _params(mus, covs), sde, jnp.asarray(x, jnp.float32),
        num_classes=C, key=KEY, divergence="exact",
    )  # fmt: skip
    refined = np.asarray(res.refined)
    assert refined[np.arange(len(x)), truth.argmax(1)].all()
    np.testing.assert_allclose(np.asarray(res.logp)[refined], truth[refined], atol=2e-3)


def test_batch_invariance(problem):
    """An example's result alone equals its result inside a batch."""
    mus, covs, x, y = problem
    sde, sf = SDES["vp"], make_score_fn("vp", (D,))
    xs, ys = jnp.asarray(x, jnp.float32), jnp.asarray(y)
    batch = jaxrej.log_likelihood(sf, _params(mus, covs), sde, xs, ys, key=KEY, divergence="exact")
    for i in (0, 3):
        alone = jaxrej.log_likelihood(
            sf, _params(mus, covs), sde, xs[i : i + 1], ys[i : i + 1], key=KEY, divergence="exact"
        )
        np.testing.assert_allclose(alone.logp[0], batch.logp[i], rtol=1e-6)
        assert int(alone.nfe[0]) == int(batch.nfe[i])


def test_nan_example_is_flagged_and_isolated(problem):
    mus, covs, x, y = problem
    sde, sf = SDES["vp"], make_score_fn("vp", (D,))
    xs = np.asarray(x, np.float32).copy()
    clean = jaxrej.log_likelihood(
        sf, _params(mus, covs), sde, jnp.asarray(xs), jnp.asarray(y), key=KEY, divergence="exact"
    )
    xs[2, 1] = np.nan
    res = jaxrej.log_likelihood(
        sf, _params(mus, covs), sde, jnp.asarray(xs), jnp.asarray(y), key=KEY, divergence="exact"
    )
    ok = np.asarray(res.ok)
    assert not ok[2] and ok[[0, 1, 3, 4, 5]].all()
    assert np.isnan(res.logp[2])
    keep = [0, 1, 3, 4, 5]
    np.testing.assert_allclose(np.asarray(res.logp)[keep], np.asarray(clean.logp)[keep], rtol=1e-6)


def test_solver_failure_is_flagged_per_example(problem):
    """max_steps too small for the solve -> ok=False and NaN, no exception, no number."""
    mus, covs, x, y = problem
    res = jaxrej.log_likelihood(
        make_score_fn("ve", (D,)),
        _params(mus, covs),
        SDES["ve"],
        jnp.asarray(x, jnp.float32),
        jnp.asarray(y),
        key=KEY,
        divergence="exact",
        max_steps=3,
    )
    assert not bool(res.ok.any())
    assert np.isnan(np.asarray(res.logp)).all()


def test_label_out_of_range_is_flagged(problem):
    mus, covs, x, y = problem
    y = np.array(y)
    y[1] = C
    res = jaxrej.log_likelihood(
        make_score_fn("vp", (D,)),
        _params(mus, covs),
        SDES["vp"],
        jnp.asarray(x, jnp.float32),
        jnp.asarray(y),
        key=KEY,
        divergence="exact",
        num_classes=C,
    )
    assert not bool(res.ok[1]) and np.isnan(res.logp[1])
    assert bool(res.ok[0])


def test_nfe_counts_vector_field_evaluations(problem):
    """The reported NFE equals a host-side count of score evaluations (one example, unbatched)."""
    mus, covs, x, y = problem
    count = [0]
    inner = make_score_fn("vp", (D,))

    def counted(params, z, t, label):
        jax.debug.callback(lambda: count.__setitem__(0, count[0] + 1))
        return inner(params, z, t, label)

    for solver, n_steps in [(s, None) for s in ("tsit5", "dopri5", "dopri8", "heun")] + [
        (s, 20) for s in ("tsit5", "dopri8", "heun", "euler")
    ]:
        count[0] = 0
        res = jaxrej.log_likelihood(
            counted,
            _params(mus, covs),
            SDES["vp"],
            jnp.asarray(x[:1], jnp.float32),
            jnp.asarray(y[:1]),
            key=KEY,
            divergence="rademacher",
            solver=solver,
            n_steps=n_steps,
        )
        jax.block_until_ready(res.logp)
        jax.effects_barrier()
        assert count[0] == int(res.nfe[0]), (solver, n_steps)


def test_fixed_step_solvers(problem):
    mus, covs, x, y = problem
    sde, sf = SDES["vp"], make_score_fn("vp", (D,))
    truth = closed_form_logp("vp", mus, covs, x, y, 1e-3, 1.0)
    errs = []
    for n in (200, 800):
        res = jaxrej.log_likelihood(
            sf,
            _params(mus, covs),
            sde,
            jnp.asarray(x, jnp.float32),
            jnp.asarray(y),
            key=KEY,
            divergence="exact",
            solver="heun",
            n_steps=n,
            eps=1e-3,
        )
        assert (np.asarray(res.nfe) == 2 * n).all()
        errs.append(np.max(np.abs(np.asarray(res.logp) - truth)))
    assert errs[1] < errs[0] / 4  # second order: 4x the steps, ~16x smaller error
    with pytest.raises(ValueError, match="n_steps"):
        jaxrej.log_likelihood(
            sf,
            _params(mus, covs),
            sde,
            jnp.asarray(x, jnp.float32),
            jnp.asarray(y),
            key=KEY,
            solver="euler",
        )


def test_bits_per_dim_closed_form():
    # A uniform density on [0, 1]^D has logp = 0: bpd = log2(256) = 8 for 8-bit data.
    np.testing.assert_allclose(jaxrej.bits_per_dim(jnp.zeros(3), (2, 2)), 8.0)
    # Uniform on [-1, 1]^D: logp = -D log 2; the offset is 7 (score_sde) and bpd is again 8.
    d = 12
    np.testing.assert_allclose(
        jaxrej.bits_per_dim(jnp.array([-d * math.log(2.0)]), (3, 4), data_width=2.0), 8.0, rtol=1e-6
    )
    # 17-level digits, logp = -D ln 17: exactly log2(17) + log2(17).
    np.testing.assert_allclose(
        jaxrej.bits_per_dim(jnp.array([-64 * math.log(17.0)]), (8, 8, 1), n_levels=17),
        2 * math.log2(17),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"divergence": "hutch"}, "divergence"),
        ({"solver": "rk4"}, "solver"),
        ({"adjoint": "magic"}, "adjoint"),
        ({"eps": 0.0}, "eps"),
        ({"eps": 1.5}, "eps"),
        ({"rtol": -1.0}, "rtol"),
        ({"n_probes": 0}, "n_probes"),
    ],
)
def test_bad_options_raise(problem, kwargs, match):
    mus, covs, x, y = problem
    with pytest.raises(ValueError, match=match):
        jaxrej.log_likelihood(
            make_score_fn("vp", (D,)),
            _params(mus, covs),
            SDES["vp"],
            jnp.asarray(x, jnp.float32),
            jnp.asarray(y),
            key=KEY,
            **kwargs,
        )


def test_bad_shapes_raise(problem):
    mus, covs, x, y = problem
    sf, p, sde = make_score_fn("vp", (D,)), _params(mus, covs), SDES["vp"]
    xs = jnp.asarray(x, jnp.float32)
    with pytest.raises(ValueError, match="y"):
        jaxrej.log_likelihood(sf, p, sde, xs, jnp.asarray(y[:3]), key=KEY)
    with pytest.raises(ValueError, match="y"):
        jaxrej.log_likelihood(sf, p, sde, xs, jnp.asarray(y, jnp.float32), key=KEY)
    with pytest.raises(ValueError, match="x"):
        jaxrej.log_likelihood(sf, p, sde, xs[0], jnp.asarray(y), key=KEY)
    with pytest.raises(ValueError, match="x"):
        jaxrej.log_likelihood(sf, p, sde, xs.astype(jnp.int32), jnp.asarray(y), key=KEY)
    with pytest.raises(ValueError, match="sde"):
        jaxrej.log_likelihood(sf, p, "vp", xs, jnp.asarray(y), key=KEY)
    with pytest.raises(ValueError, match="num_classes"):
        jaxrej.class_log_likelihoods(sf, p, sde, xs, num_classes=0, key=KEY)
    with pytest.raises(ValueError, match="x_shape"):
        jaxrej.bits_per_dim(jnp.zeros(2), ())


def test_given_probes_scaled_basis_give_the_exact_trace(problem):
    """Hutchinson with the K = D probes sqrt(D) e_k is the exact trace: (1/D) sum_k D J_kk = tr J.
    So `probes=` must reproduce divergence='exact'; bad probes raise naming the argument."""
    mus, covs, x, y = problem
    sf, p, sde = make_score_fn("vp", (D,)), _params(mus, covs), SDES["vp"]
    xs, ys = jnp.asarray(x, jnp.float32), jnp.asarray(y)
    basis = math.sqrt(D) * jnp.broadcast_to(jnp.eye(D), (len(y), D, D))
    tol = dict(rtol=1e-6, atol=1e-6)
    got = jaxrej.log_likelihood(sf, p, sde, xs, ys, key=KEY, divergence="rademacher", probes=basis,
                                **tol)  # fmt: skip
    want = jaxrej.log_likelihood(sf, p, sde, xs, ys, key=KEY, divergence="exact", **tol)
    np.testing.assert_allclose(got.logp, want.logp, rtol=1e-5)
    with pytest.raises(ValueError, match="probes"):
        jaxrej.log_likelihood(sf, p, sde, xs, ys, key=KEY, divergence="exact", probes=basis)
    with pytest.raises(ValueError, match="probes"):
        jaxrej.log_likelihood(sf, p, sde, xs, ys, key=KEY, probes=basis[:, :, :2])
    with pytest.raises(ValueError, match="n_probes"):
        jaxrej.log_likelihood(sf, p, sde, xs, ys, key=KEY, n_probes=2, probes=basis)


def test_pixel_histogram_baseline_against_hand_counts():
    """The trivial per-pixel baseline: add-one counts done by hand on a 3-row, 2-pixel set, and
    an image drawn from the same histogram has bits/dim near the per-pixel entropy."""
    from jaxrej.likelihood import pixel_histogram_bits_per_dim

    tr = np.array([[0, 1], [0, 1], [1, 1]])
    got = pixel_histogram_bits_per_dim(tr, np.array([[0, 1], [1, 0]]), n_levels=2, alpha=1.0)
    # pixel 0: counts (2, 1) + 1 -> (3, 2) / 5; pixel 1: counts (0, 3) + 1 -> (1, 4) / 5
    want = [-(np.log2(3 / 5) + np.log2(4 / 5)) / 2, -(np.log2(2 / 5) + np.log2(1 / 5)) / 2]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=3)  # 3 pixels, 4 levels
    draw = lambda n: np.stack([rng.choice(4, n, p=q) for q in p], 1)  # noqa: E731
    bpd = pixel_histogram_bits_per_dim(draw(20000), draw(20000), n_levels=4).mean()
    entropy = -np.mean(np.sum(p * np.log2(p), axis=1))
    assert abs(bpd - entropy) < 0.01
    with pytest.raises(ValueError, match="images"):
        pixel_histogram_bits_per_dim(tr, np.array([[0, 2]]), n_levels=2)


@pytest.mark.parametrize("kind", ["vp", "subvp", "ve"])
def test_time_changes_solve_the_same_ode(problem, kind):
    """FlowSolve.time_change: the solve in u = sqrt(t) ("square" (the default) and in t ("none")
    both converge to the closed form (float64, tight tolerance), the square time's input gradients
    (checkpoint and backsolve adjoints) agree with the checkpoint gradient in t, and at the
    default tolerance the square time needs fewer evaluations under VP, whose field changes on
    the time scale of t near t = eps."""
    mus, covs, x, y = problem
    sde, sf = SDES[kind], make_score_fn(kind, (D,))
    truth = closed_form_logp(kind, mus, covs, x, y, 1e-5, sde.prior_std)
    assert jaxrej.FlowSolve().time_change == "square"
    with jax.enable_x64(True):
        p64, x64, y64 = _params(mus, covs, jnp.float64), jnp.asarray(x, jnp.float64), jnp.asarray(y)
        grads = {}
        for tc in ("none", "square"):
            res = jaxrej.log_likelihood(sf, p64, sde, x64, y64, key=KEY, divergence="exact",
                                        rtol=1e-8, atol=1e-8, time_change=tc)  # fmt: skip
            assert bool(res.ok.all())
            np.testing.assert_allclose(np.asarray(res.logp), truth, atol=1e-5, rtol=0)
            for adjoint in ("checkpoint", "backsolve") if tc == "square" else ("checkpoint",):
                grads[tc, adjoint] = np.asarray(
                    log_likelihood_and_grad(sf, p64, sde, x64, y64, key=KEY,
                                                   divergence="exact", rtol=1e-7, atol=1e-7,
                                                   time_change=tc, adjoint=adjoint)[1]
                )  # fmt: skip
        ref = grads["none", "checkpoint"]
        for k, g in grads.items():
            assert np.linalg.norm(g - ref) <= 1e-4 * np.linalg.norm(ref), k
    if kind == "vp":
        nfe = {
            tc: int(jaxrej.log_likelihood(sf, _params(mus, covs), sde, jnp.asarray(x, jnp.float32),
                                          jnp.asarray(y), key=KEY, divergence="exact",
                                          time_change=tc).nfe.sum())
            for tc in ("none", "square")
        }  # fmt: skip
        assert nfe["square"] < nfe["none"], nfe
