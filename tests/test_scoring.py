"""Scoring every class: the pure scorer against the closed form (values and gradients), the TopK
screen and the host cascade against the unscreened scorer, and compilation counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrej
from jaxrej import scoring
from tests.gaussian import alpha_var, closed_form_logp, make_params, make_score_fn

C, D, B = 4, 3, 8
TOL = dict(rtol=1e-5, atol=1e-5)
KEY = jax.random.key(0)
SDES = {"vp": jaxrej.VPSDE(), "subvp": jaxrej.SubVPSDE(), "ve": jaxrej.VESDE()}


def _problem(kind="vp", seed=5):
    mus, covs = make_params(C, D, seed=seed, scale=2.0)
    rng = np.random.default_rng(seed + 1)
    y = np.arange(B) % C
    x = mus[y] + 0.7 * rng.normal(size=(B, D))
    truth = np.stack(
        [closed_form_logp(kind, mus, covs, x, np.full(B, c), 1e-5, SDES[kind].prior_std)
         for c in range(C)], 1,
    )  # fmt: skip
    params = (jnp.asarray(mus, jnp.float32), jnp.asarray(covs, jnp.float32))
    return mus, covs, params, jnp.asarray(x, jnp.float32), truth


@pytest.fixture(scope="module")
def problem():
    return _problem()


@pytest.fixture(scope="module")
def plain(problem):
    _, _, params, x, _ = problem
    return jaxrej.class_log_likelihood_result(
        make_score_fn("vp", (D,)), params, SDES["vp"], x, num_classes=C, key=KEY,
        divergence="exact", screen=None, **TOL,
    )  # fmt: skip


def test_unscreened_matches_closed_form(problem, plain):
    _, _, params, x, truth = problem
    np.testing.assert_allclose(plain.logp, truth, rtol=5e-5, atol=2e-3)
    assert bool(plain.refined.all()) and bool(plain.ok.all()) and bool(plain.covered.all())
    arr = jaxrej.class_log_likelihoods(
        make_score_fn("vp", (D,)), params, SDES["vp"], x, num_classes=C, key=KEY,
        solve=jaxrej.FlowSolve(divergence="exact", **TOL), screen=None,
    )  # fmt: skip
    np.testing.assert_allclose(arr, plain.logp, rtol=1e-6)


@pytest.mark.parametrize("kind", ["vp", "subvp", "ve"])
def test_default_tolerance_meets_closed_form(kind):
    """The library default (FlowSolve()) is value-grade: <= 1e-3 relative error |d| / (1 + |logp|)
    against the closed form for every SDE, on every class."""
    _, _, params, x, truth = _problem(kind)
    got = jaxrej.class_log_likelihoods(make_score_fn(kind, (D,)), params, SDES[kind], x,
                                       num_classes=C, key=KEY, divergence="exact", screen=None)  # fmt: skip
    assert np.max(np.abs(np.asarray(got) - truth) / (1 + np.abs(truth))) <= 1e-3


def _closed_form_grad(kind, mus, covs, x, c, eps=1e-5):
    """d log p(x | c) / dx = -M x_T / s^2 with x_T = a_T mu + M (x - a_eps mu), M symmetric."""
    a_e, v_e = alpha_var(kind, eps)
    a_t, v_t = alpha_var(kind, 1.0)
    lam, u = np.linalg.eigh(covs[c])
    m = u @ np.diag(np.sqrt((a_t**2 * lam + v_t) / (a_e**2 * lam + v_e))) @ u.T
    x_t = a_t * mus[c] + (np.asarray(x, np.float64) - a_e * mus[c]) @ m
    return -(x_t @ m) / SDES[kind].prior_std ** 2


@pytest.mark.parametrize("kind", ["vp", "subvp"])
def test_jit_grad_of_all_classes_matches_closed_form(kind):
    """jax.jit(jax.grad) of a fixed weighted sum of ALL class log-likelihoods (exact divergence,
    1e-5) equals the closed-form gradient to 1e-2 relative norm error."""
    mus, covs, params, x, _ = _problem(kind)
    w = np.random.default_rng(0).normal(size=(B, C))
    sf, sde = make_score_fn(kind, (D,)), SDES[kind]

    def f(z):
        ll = jaxrej.class_log_likelihoods(sf, params, sde, z, num_classes=C, key=KEY,
                                          divergence="exact", screen=None, **TOL)  # fmt: skip
        return jnp.sum(jnp.asarray(w, jnp.float32) * ll)

    g = np.asarray(jax.jit(jax.grad(f))(x), np.float64)
    want = sum(w[:, [c]] * _closed_form_grad(kind, mus, covs, x, c) for c in range(C))
    assert np.linalg.norm(g - want) / np.linalg.norm(want) <= 1e-2


def test_topk_refines_the_best_classes(problem, plain):
    """The k best classes of the screen get the accurate solve: equal to the unscreened values
    (same probes, same solve); the true best is refined; the rest carry the screen's estimate."""
    _, _, params, x, truth = problem
    res = jaxrej.class_log_likelihood_result(
        make_score_fn("vp", (D,)), params, SDES["vp"], x, num_classes=C, key=KEY,
        divergence="exact", screen=jaxrej.TopK(k=2, margin=1e3), **TOL,
    )  # fmt: skip
    refined = np.asarray(res.refined)
    assert (refined.sum(1) == 2).all()
    np.testing.assert_allclose(np.asarray(res.logp)[refined], np.asarray(plain.logp)[refined],
                               rtol=1e-5, atol=1e-4)  # fmt: skip
    assert refined[np.arange(B), truth.argmax(1)].all()
    assert not np.asarray(res.covered).any()  # a 1000-nat margin: every unrefined class in reach
    assert (np.asarray(res.nfe)[refined] > np.asarray(plain.nfe)[refined]).all()  # screen + solve


def test_spare_budget_refines_close_rivals(problem, plain):
    """TopK(spare=1): every example whose best dropped rival is within the margin gets one more
    accurate solve (equal to the unscreened value); with a margin no rival is within, none does."""
    _, _, params, x, _ = problem
    sf, sde = make_score_fn("vp", (D,)), SDES["vp"]
    for margin, extra in ((1e3, 1), (1e-9, 0)):
        res = jaxrej.class_log_likelihood_result(
            sf, params, sde, x, num_classes=C, key=KEY, divergence="exact",
            screen=jaxrej.TopK(k=1, margin=margin, spare=1.0), **TOL,
        )  # fmt: skip
        refined = np.asarray(res.refined)
        assert (refined.sum(1) == 1 + extra).all(), margin
        np.testing.assert_allclose(np.asarray(res.logp)[refined], np.asarray(plain.logp)[refined],
                                   rtol=1e-5, atol=1e-4)  # fmt: skip
    with pytest.raises(ValueError, match="TopK.spare"):
        jaxrej.TopK(spare=2.0)


def test_topk_labels_are_always_refined(problem):
    _, _, params, x, truth = problem
    worst = jnp.asarray(truth.argmin(1))
    res = jaxrej.class_log_likelihood_result(
        make_score_fn("vp", (D,)), params, SDES["vp"], x, num_classes=C, key=KEY,
        divergence="exact", screen=jaxrej.TopK(k=2), labels=worst, **TOL,
    )  # fmt: skip
    refined = np.asarray(res.refined)
    assert refined[np.arange(B), np.asarray(worst)].all() and (refined.sum(1) == 2).all()


def test_default_call_grad_of_all_classes_matches_closed_form():
    """jax.grad of a random weighted sum of ALL class log-likelihoods through the default
    (screened) call equals the closed-form gradient to 1e-2 relative norm error, as screen=None
    does: the classes the screens leave unrefined are differentiated as the accurate solve."""
    mus, covs, params, x, _ = _problem()
    w = np.random.default_rng(1).normal(size=(B, C))
    sf, sde = make_score_fn("vp", (D,)), SDES["vp"]

    def f(z):
        res = jaxrej.class_log_likelihood_result(sf, params, sde, z, num_classes=C, key=KEY,
                                                 divergence="exact", **TOL)  # fmt: skip
        return jnp.sum(jnp.asarray(w, jnp.float32) * res.logp), res.refined

    g, refined = jax.jit(jax.grad(f, has_aux=True))(x)
    assert not np.asarray(refined).all()  # some classes keep a screen's estimate
    want = sum(w[:, [c]] * _closed_form_grad("vp", mus, covs, x, c) for c in range(C))
    assert np.linalg.norm(np.asarray(g, np.float64) - want) / np.linalg.norm(want) <= 1e-2


def test_stop_unrefined_differentiates_the_refined_classes_alone(problem):
    """Through `stop_unrefined`, d/dx of a weighted sum over all classes with a TopK screen (the
    label forced in) is the closed-form gradient of the refined entries' terms alone."""
    mus, covs, params, x, truth = problem
    w = np.random.default_rng(2).normal(size=(B, C))
    worst = jnp.asarray(truth.argmin(1))
    sf, sde = make_score_fn("vp", (D,)), SDES["vp"]

    def f(z):
        res = jaxrej.class_log_likelihood_result(sf, params, sde, z, num_classes=C, key=KEY,
                                                 divergence="exact", screen=jaxrej.TopK(k=2),
                                                 labels=worst, **TOL)  # fmt: skip
        return jnp.sum(jnp.asarray(w, jnp.float32) * scoring.stop_unrefined(res)), res.refined

    g, refined = jax.jit(jax.grad(f, has_aux=True))(x)
    refined = np.asarray(refined)
    assert refined[np.arange(B), np.asarray(worst)].all() and (refined.sum(1) == 2).all()
    want = sum((w * refined)[:, [c]] * _closed_form_grad("vp", mus, covs, x, c) for c in range(C))
    assert np.linalg.norm(np.asarray(g, np.float64) - want) / np.linalg.norm(want) <= 1e-2


def test_chunking_does_not_change_results(problem, plain):
    _, _, params, x, _ = problem
    res = jaxrej.class_log_likelihood_result(
        make_score_fn("vp", (D,)), params, SDES["vp"], x, num_classes=C, key=KEY,
        divergence="exact", screen=None, chunk_size=5, **TOL,
    )  # fmt: skip
    np.testing.assert_allclose(res.logp, plain.logp, rtol=1e-5)
    # Matmuls of another batch shape round differently, which can flip one step's acceptance.
    diff = np.abs(np.asarray(res.nfe) - np.asarray(plain.nfe))
    assert diff.max() <= 6 and (diff == 0).mean() >= 0.75


@pytest.mark.parametrize("margin", [3.0, 1000.0])
def test_cascade_refines_what_is_in_reach(problem, plain, margin):
    _, _, params, x, truth = problem
    res = jaxrej.cascade_class_log_likelihoods(
        make_score_fn("vp", (D,)), params, SDES["vp"], x, num_classes=C, key=KEY,
        screens=[jaxrej.Screen(margin=margin)], chunk_size=8, divergence="exact", **TOL,
    )  # fmt: skip
    refined, logp = np.asarray(res.refined), np.asarray(res.logp)
    np.testing.assert_allclose(logp[refined], np.asarray(plain.logp)[refined], rtol=1e-5, atol=1e-4)
    best = truth.argmax(1)
    assert refined[np.arange(B), best].all()
    np.testing.assert_array_equal(logp.argmax(1), np.asarray(plain.logp).argmax(1))
    if margin > 100:
        assert refined.all()
    else:
        assert not refined.all()
        gap = truth.max(1, keepdims=True) - truth
        assert (gap[~refined] > 1.0).all()


def test_cascade_compiles_a_bounded_number_of_times(problem):
    """Power-of-two buckets: over batches of every size 1..B and two margins, each pass's solve
    compiles only for shapes in {1, 2, 4, ..., chunk_size}."""
    _, _, params, x, _ = problem
    scoring._solve_pairs_jit.clear_cache()
    chunk, sf = 8, make_score_fn("vp", (D,))
    for b in range(1, B + 1):
        for margin in (2.0, 30.0):
            jaxrej.cascade_class_log_likelihoods(
                sf, params, SDES["vp"], x[:b], num_classes=C, key=KEY,
                screens=jaxrej.Screen(margin=margin), chunk_size=chunk, divergence="exact",
            )  # fmt: skip
    # two solve settings (screen, accurate) x shapes {1, 2, 4, 8}
    assert scoring._solve_pairs_jit._cache_size() <= 2 * 4
    assert [scoring.bucket(r, 8) for r in (1, 3, 5, 8, 9, 100)] == [1, 4, 8, 8, 8, 8]


def test_failed_example_is_nan_everywhere(problem):
    _, _, params, x, _ = problem
    x = np.asarray(x).copy()
    x[1, 0] = np.nan
    for screen in (None, jaxrej.TopK(k=2)):
        res = jaxrej.class_log_likelihood_result(
            make_score_fn("vp", (D,)), params, SDES["vp"], jnp.asarray(x), num_classes=C, key=KEY,
            divergence="exact", screen=screen,
        )  # fmt: skip
        assert np.isnan(np.asarray(res.logp)[1]).all() and not np.asarray(res.ok)[1].any()
        assert np.asarray(res.ok)[0].all()


def test_bad_arguments(problem):
    _, _, params, x, _ = problem
    sf, sde = make_score_fn("vp", (D,)), SDES["vp"]
    score = jaxrej.class_log_likelihood_result
    with pytest.raises(ValueError, match="Screen.margin"):
        jaxrej.Screen(margin=0.0)
    with pytest.raises(ValueError, match="TopK.k"):
        jaxrej.TopK(k=0)
    with pytest.raises(ValueError, match="FlowSolve.divergence"):
        jaxrej.TopK(divergence="hutch")
    with pytest.raises(ValueError, match="screen"):
        score(sf, params, sde, x, num_classes=C, key=KEY, screen=jaxrej.Screen())
    with pytest.raises(ValueError, match="screen"):
        score(sf, params, sde, x, num_classes=C, key=KEY, screen="fast")
    with pytest.raises(ValueError, match="chunk_size"):
        score(sf, params, sde, x, num_classes=C, key=KEY, chunk_size=0)
    with pytest.raises(ValueError, match="labels"):
        score(sf, params, sde, x, num_classes=C, key=KEY, labels=jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="rtol: not a solve option|not a solve option"):
        score(sf, params, sde, x, num_classes=C, key=KEY, rtoll=1e-3)


def test_attack_ascent_compiles_once_on_the_digits_model():
    """A k-step ascent on the digits score model (the architecture of
    configs/digits_sbgc.py, untrained): a forward TopK screen over all classes and the gradient
    through the top classes, jitted as one step, compiles once for all steps and all batches of
    one size."""
    import importlib.util
    from pathlib import Path

    from jaxrej.models.score import init_params, make_score_fn
    from jaxrej.training.workdir import build_net

    path = Path(__file__).resolve().parents[1] / "configs" / "digits_sbgc.py"
    spec = importlib.util.spec_from_file_location("digits_sbgc", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = dict(module.get_config().model)
    net = build_net(model.pop("name"), num_classes=10, **model)
    sde = jaxrej.VPSDE()
    score_fn = make_score_fn(net, sde)
    params = init_params(net, (8, 8, 1), key=jax.random.key(0))
    screen = jaxrej.TopK(k=2)

    @jax.jit
    def step(x, y, key):
        def loss(z):
            ll = jaxrej.class_log_likelihoods(score_fn, params, sde, z, num_classes=10, key=key,
                                              screen=screen, labels=y, rtol=1e-3, atol=1e-3,
                                              max_steps=64)  # fmt: skip
            true = jnp.take_along_axis(ll, y[:, None], axis=1)[:, 0]
            other = jnp.max(jnp.where(jax.nn.one_hot(y, 10, dtype=bool), -jnp.inf, ll), axis=1)
            # the margin, and the true class's log-likelihood: the untrained model's classes
            # agree, so the margin alone is flat in x (its gradient is exactly zero)
            return jnp.sum(other - true) - jnp.sum(true)

        g = jax.grad(loss)(x)
        return jnp.clip(x + 0.01 * jnp.sign(g), 0.0, 1.0)

    rng = np.random.default_rng(0)
    for _ in range(2):
        x = jnp.asarray(rng.uniform(size=(3, 8, 8, 1)), jnp.float32)
        y = jnp.asarray(rng.integers(0, 10, 3), jnp.int32)
        for k in range(3):
            x_new = step(x, y, jax.random.fold_in(jax.random.key(1), k))
            assert x_new.shape == x.shape and x_new.dtype == x.dtype
            # the gradient reaches every pixel through the screened solve: each pixel the clip
            # leaves alone moves by the full step (a zero gradient, sign 0, would not move it)
            inside = np.asarray((x > 0.011) & (x < 0.989))
            moved = np.abs(np.asarray(x_new - x))[inside]
            np.testing.assert_allclose(moved, 0.01, rtol=1e-4)
            x = x_new
    assert step._cache_size() == 1


@pytest.mark.parametrize("cascade", [False, True])
def test_a_screen_that_misjudges_is_flagged_inconsistent(problem, plain, cascade):
    """`consistent` is False exactly where a planted bad screen (2 Euler steps) missed the accurate
    value of a class it passed on by more than its 1-nat margin: the truth from the screen's and
    the accurate solve's values computed separately (exact divergence: deterministic); an
    accurate screen (the accurate solve itself) and no screen are consistent everywhere."""
    _, _, params, x, _ = problem
    score_fn, sde = make_score_fn("vp", (D,)), SDES["vp"]

    def run(**screen_solve):
        if cascade:
            return jaxrej.cascade_class_log_likelihoods(
                score_fn, params, sde, x, num_classes=C, key=KEY, chunk_size=8,
                screens=[jaxrej.Screen(margin=1.0, divergence="exact", **screen_solve)],
                divergence="exact", **TOL,
            )  # fmt: skip
        return jaxrej.class_log_likelihood_result(
            score_fn, params, sde, x, num_classes=C, key=KEY, divergence="exact", **TOL,
            screen=jaxrej.TopK(k=2, margin=1.0, divergence="exact", **screen_solve),
        )  # fmt: skip

    # 2 Euler steps uniform in t (in the default u = sqrt(t) they err on no example here)
    bad = run(solver="euler", n_steps=2, time_change="none")
    screen_vals = jaxrej.class_log_likelihood_result(
        score_fn, params, sde, x, num_classes=C, key=KEY, divergence="exact", screen=None,
        solver="euler", n_steps=2, time_change="none",
    ).logp  # fmt: skip
    off = np.abs(np.asarray(screen_vals) - np.asarray(plain.logp)) > 1.0
    want = ~np.any(off & np.asarray(bad.refined), axis=1)
    assert want.any() and not want.all()  # the planted screen errs on some examples only
    np.testing.assert_array_equal(np.asarray(bad.consistent), want)
    assert np.asarray(run(**TOL).consistent).all()
    assert np.asarray(plain.consistent).all()
