"""jaxrej.attacks against independent truths: the analytic worst case of a linear classifier,
foolbox 3.3.4's PGD, central finite differences of the closed-form Gaussian ODE likelihood,
jaxrej.reject.decide for the reject-aware goal, and the 1/n variance law of EOT averaging."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrej
from jaxrej import attacks
from jaxrej.attacks import eot
from jaxrej.attacks.apgd import _apgd, checkpoint_schedule, top_targets
from jaxrej.attacks.pgd import _pgd
from tests.gaussian import closed_form_logp, make_params, make_score_fn

KEY = jax.random.key(0)


def _linear(seed=0, d=12, c=2):
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.normal(size=(d, c)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(c,)) * 0.1, jnp.float32)
    return w, b, (lambda x: x.reshape(x.shape[0], -1) @ w + b)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_reaches_the_analytic_worst_case_margin_of_a_linear_classifier(norm):
    """Binary linear softmax: min over the eps-ball of s_y - s_o is m - eps ||w_y - w_o||_q
    (q = 1 for L-inf, 2 for L2) when the ball lies inside [0, 1]; PGD-40 gets within 1% of the
    decrease eps ||w_y - w_o||_q and of the margin itself,
    never below it, never outside the ball or the range (boundary points included)."""
    w, b, f = _linear()
    rng = np.random.default_rng(1)
    eps = 0.05 if norm == "linf" else 0.2
    x_in = rng.uniform(0.3, 0.7, size=(16, 12)).astype(np.float32)  # ball inside [0, 1]
    x_edge = rng.choice([0.0, 0.01, 0.99, 1.0], size=(8, 12)).astype(np.float32)
    x = jnp.asarray(np.concatenate([x_in, x_edge]))
    y = jnp.argmax(f(x), axis=1)
    step = 2.5 * eps / 40 if norm == "linf" else eps / 4  # the L2 sphere needs long steps
    res = attacks.pgd(f, x, y, key=KEY, eps=eps, norm=norm, steps=40, step_size=step)
    dw = np.asarray(w[:, 1] - w[:, 0])
    sign = np.where(np.asarray(y) == 1, 1.0, -1.0)
    clean = sign * np.asarray(f(x) @ jnp.asarray([-1.0, 1.0]))
    q = 1 if norm == "linf" else 2
    truth = clean - eps * np.linalg.norm(dw, ord=q)
    got = np.asarray(res.margin)
    drop = eps * np.linalg.norm(dw, ord=q)  # the largest decrease the ball allows
    assert np.all(np.abs(got[:16] - truth[:16]) <= 0.01 * min(drop, np.abs(truth[:16]).min()))
    assert np.all(got >= truth - 1e-4)  # no point of the ball does better than the worst case
    assert np.all(np.asarray(res.norm) <= eps * (1 + 1e-5))
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    np.testing.assert_array_equal(res.success, got < 0)
    np.testing.assert_allclose(res.norm, attacks.lp_norm(res.x_adv - x, norm), rtol=1e-6)


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Dense(32)(x.reshape(x.shape[0], -1)))
        return nn.Dense(3)(h)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_equals_foolbox_pgd_on_a_flax_mlp(norm):
    """Fixed start (random_start=False), the same absolute step and steps, last iterate: the
    adversarial inputs equal foolbox 3.3.4's LinfPGD / L2PGD through fb.JAXModel."""
    fb = pytest.importorskip("foolbox")
    model = _MLP()
    x = jnp.asarray(np.random.default_rng(2).uniform(size=(10, 4, 4, 1)), jnp.float32)
    params = model.init(jax.random.key(3), x)

    def f(z):
        return model.apply(params, z)

    y = jnp.argmax(f(x), axis=1)
    eps, step, steps = (0.06, 0.01, 10) if norm == "linf" else (0.5, 0.08, 10)
    cls = fb.attacks.LinfPGD if norm == "linf" else fb.attacks.L2PGD
    attack = cls(abs_stepsize=step, steps=steps, random_start=False)
    raw, _, _ = attack(fb.JAXModel(f, bounds=(0, 1)), x, y, epsilons=[eps])
    res = attacks.pgd(f, x, y, key=KEY, eps=eps, norm=norm, steps=steps, step_size=step,
                      random_start=False, keep_best=False)  # fmt: skip
    np.testing.assert_allclose(np.asarray(res.x_adv), np.asarray(raw[0]), atol=1e-5)
    assert float(jnp.max(jnp.abs(res.x_adv - x))) > 0.5 * min(eps, step)  # it moved


def test_attack_gradient_through_the_ode_matches_finite_differences():
    """The margin-loss gradient an attack uses, through class_log_likelihoods (TopK(k=2) screen
    keeping the label, exact divergence, 1e-6), against central differences of the same loss
    computed from the closed-form Gaussian ODE likelihood in float64 (norm-relative error).
    The screen's solve is the exact trace at 1e-3: with the default one Rademacher probe its
    estimate in 3 dimensions errs by ~1 nat and may drop the true rival (then the loss is a
    different class's margin, not a wrong gradient)."""
    c, d, b = 3, 3, 4
    mus, covs = make_params(c, d, seed=7, scale=1.5)
    rng = np.random.default_rng(8)
    y = np.arange(b) % c
    x = mus[y] + 0.4 * (mus[(y + 1) % c] - mus[y]) + 0.3 * rng.normal(size=(b, d))
    sde = jaxrej.VPSDE()
    params = (jnp.asarray(mus, jnp.float32), jnp.asarray(covs, jnp.float32))
    score_fn = make_score_fn("vp", (d,))

    def f(z):
        return jaxrej.class_log_likelihoods(score_fn, params, sde, z, num_classes=c, key=KEY,
                                            screen=jaxrej.TopK(k=2, divergence="exact", rtol=1e-3,
                                                               atol=1e-3),
                                            labels=jnp.asarray(y), divergence="exact", rtol=1e-6,
                                            atol=1e-6)  # fmt: skip

    _, g, _ = jax.jit(lambda z: eot.loss_and_grad(f, z, jnp.asarray(y), KEY, stochastic=False,
                      n_eot=1, loss="margin", targeted=False, thresholds=None))(
        jnp.asarray(x, jnp.float32))  # fmt: skip
    g = np.asarray(g, np.float64)

    def truth_loss(z):
        lp = np.stack([closed_form_logp("vp", mus, covs, z, np.full(b, k), 1e-5, sde.prior_std)
                       for k in range(c)], 1)  # fmt: skip
        own = lp[np.arange(b), y]
        lp[np.arange(b), y] = -np.inf
        return lp.max(1) - own

    h = 1e-4
    for trial in range(3):
        v = np.random.default_rng(20 + trial).normal(size=(b, d))
        fd = (truth_loss(x + h * v) - truth_loss(x - h * v)) / (2 * h)
        err = np.abs(fd - np.sum(g * v, axis=1)) / np.linalg.norm(g, axis=1)
        assert np.all(err < 2e-3), err


def test_reject_goal_agrees_with_reject_decide_and_the_adaptive_loss_sign():
    """goal_reached(thresholds) == misclassified & not rejected by jaxrej.reject.decide, and the
    adaptive loss is > 0 exactly there (random scores, NaN rows included)."""
    rng = np.random.default_rng(4)
    s = rng.normal(size=(400, 5)).astype(np.float32) * 2
    s[:5, 2] = np.nan
    y = rng.integers(0, 5, 400)
    th = jnp.asarray(rng.normal(size=5) + 0.5, jnp.float32)
    pred, rej = jaxrej.reject.decide(jnp.asarray(s), th)
    want = (np.asarray(pred) != y) & ~np.asarray(rej)
    got = attacks.goal_reached(jnp.asarray(s), jnp.asarray(y), thresholds=th)
    np.testing.assert_array_equal(got, want)
    assert 50 < want.sum() < 350
    lv = np.asarray(attacks.attack_loss(jnp.asarray(s[5:]), jnp.asarray(y[5:]), loss="reject",
                                        thresholds=th))  # fmt: skip
    np.testing.assert_array_equal(lv > 0, want[5:])


def test_adaptive_attack_fools_and_is_accepted_more_often_than_the_plain_attack():
    """Gaussian classes with per-class thresholds: the plain CE attack overshoots into regions the
    reject rule refuses; the reject-aware loss finds accepted wrong classes at least as often,
    and strictly more often here."""
    mus = jnp.asarray([[0.3, 0.3], [0.7, 0.3], [0.5, 0.7]], jnp.float32)

    def f(x):
        return -jnp.sum(jnp.square(x[:, None, :] - mus[None]), -1) / (2 * 0.05**2)

    rng = np.random.default_rng(5)
    y = np.arange(60) % 3
    x = jnp.asarray(np.asarray(mus)[y] + 0.03 * rng.normal(size=(60, 2)), jnp.float32)
    yj = jnp.asarray(y)
    th = jaxrej.reject.fit_class_thresholds(f(x), yj, percentile=5.0)
    kw = dict(key=KEY, eps=0.35, steps=60, thresholds=th)
    plain = attacks.pgd(f, x, yj, loss="ce", **kw)
    adaptive = attacks.pgd(f, x, yj, loss="reject", **kw)
    assert int(adaptive.success.sum()) > int(plain.success.sum())
    pred, rej = jaxrej.reject.decide(adaptive.scores, th)
    np.testing.assert_array_equal(adaptive.success, (np.asarray(pred) != y) & ~np.asarray(rej))


def test_targeted_pgd_and_fgsm_bim():
    """Targeted PGD over the whole box (eps = 1) reaches target t exactly where a linear program
    (scipy) says some x in [0, 1]^D makes t the argmax of a linear 4-class model; FGSM is one
    full step x_adv = clip(x + eps sign(grad)); BIM starts from x (deterministic)."""
    from scipy.optimize import linprog

    w, b, f = _linear(seed=3, d=8, c=4)
    x = jnp.asarray(np.random.default_rng(6).uniform(0.2, 0.8, size=(12, 8)), jnp.float32)
    t = (jnp.argmax(f(x), axis=1) + jnp.arange(12) % 3 + 1) % 4
    res = attacks.pgd(f, x, t, key=KEY, eps=1.0, steps=60, targeted=True, loss="ce")
    wn, bn = np.asarray(w, np.float64), np.asarray(b, np.float64)
    for i, ti in enumerate(np.asarray(t)):  # max m s.t. s_t - s_c >= m for c != t, x in box
        others = [c for c in range(4) if c != ti]
        a_ub = np.stack([np.append(-(wn[:, ti] - wn[:, c]), 1.0) for c in others])
        b_ub = np.array([bn[ti] - bn[c] for c in others])
        lp = linprog(np.append(np.zeros(8), -1.0), A_ub=a_ub, b_ub=b_ub,
                     bounds=[(0, 1)] * 8 + [(None, None)])  # fmt: skip
        best = -lp.fun
        if abs(best) > 0.05:
            assert bool(res.success[i]) == (best > 0), (i, best)
            assert float(-res.margin[i]) <= best + 1e-4
    y = jnp.argmax(f(x), axis=1)
    fg = attacks.fgsm(f, x, y, key=KEY, eps=0.1)
    g = jax.grad(lambda z: jnp.sum(attacks.attack_loss(f(z), y, loss="ce")))(x)
    np.testing.assert_allclose(fg.x_adv, jnp.clip(x + 0.1 * jnp.sign(g), 0, 1), atol=1e-6)
    b1 = attacks.bim(f, x, y, key=jax.random.key(1), eps=0.1)
    b2 = attacks.bim(f, x, y, key=jax.random.key(2), eps=0.1)
    np.testing.assert_array_equal(b1.x_adv, b2.x_adv)


def _mlp_problem():
    model = _MLP()
    x = jnp.asarray(np.random.default_rng(9).uniform(size=(64, 4, 4, 1)), jnp.float32)
    params = model.init(jax.random.key(10), x)
    params = jax.tree_util.tree_map(lambda p: 3 * p, params)  # a sharper, less linear net

    def f(z):
        return model.apply(params, z)

    return f, x, jnp.argmax(f(x), axis=1)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_is_at_least_as_strong_as_pgd(loss):
    """Same budget (40 gradient evaluations): APGD's success count is >= PGD's and its margins
    are no larger on average (an MLP at an eps where PGD succeeds on a fraction)."""
    f, x, y = _mlp_problem()
    eps = 0.04
    p = attacks.pgd(f, x, y, key=KEY, eps=eps, steps=40, loss=loss)
    a = attacks.apgd(f, x, y, key=KEY, eps=eps, steps=40, loss=loss)
    assert 0 < int(p.success.sum()) < 64
    assert int(a.success.sum()) >= int(p.success.sum())
    assert float(a.margin.mean()) <= float(p.margin.mean()) + 1e-6
    assert np.all(np.asarray(a.norm) <= eps * (1 + 1e-5))
    assert checkpoint_schedule(100) == (22, 3, 6)


def test_more_steps_and_restarts_never_lower_success():
    """keep_best makes success monotone in steps, restarts select per example."""
    f, x, y = _mlp_problem()
    counts = [int(attacks.pgd(f, x, y, key=KEY, eps=0.03, steps=s, restarts=r).success.sum())
              for s, r in [(5, 1), (20, 1), (20, 3)]]  # fmt: skip
    assert counts[0] <= counts[1] <= counts[2]


def test_one_compilation_per_attack_across_inputs_eps_and_params():
    """The attack is one jitted region: new x, eps, keys and scorer parameters of the same shapes
    (a pytree scorer) reuse the compilation."""
    from flax import struct

    class Lin(struct.PyTreeNode):
        w: jax.Array

        def __call__(self, x):
            return x @ self.w

    rng = np.random.default_rng(11)
    x = jnp.asarray(rng.uniform(size=(6, 5)), jnp.float32)
    y = jnp.zeros(6, jnp.int32)
    n_pgd, n_apgd = _pgd._cache_size(), _apgd._cache_size()
    for i in range(3):
        scorer = Lin(jnp.asarray(rng.normal(size=(5, 3)), jnp.float32))
        attacks.pgd(scorer, x + i * 0.01, y, key=jax.random.key(i), eps=0.1 + i, steps=7)
        attacks.apgd(scorer, x + i * 0.01, y, key=jax.random.key(i), eps=0.1 + i, steps=7)
    assert _pgd._cache_size() == n_pgd + 1
    assert _apgd._cache_size() == n_apgd + 1


def test_eot_gradient_variance_falls_as_one_over_n():
    """Stochastic toy s = (x * (1 + sigma z)) W, z ~ N(0, I) per call: the margin-loss gradient
    is (1 + sigma z) * (w_o - w_y), whose per-entry variance is sigma^2 (w_o - w_y)^2 / n for n
    EOT draws (closed form); measured over 4000 keys within 10%."""
    w, _, _ = _linear(seed=12, d=6, c=2)
    sigma = 0.5

    def f(x, key):
        z = jax.random.normal(key, x.shape, x.dtype)
        return (x * (1 + sigma * z)) @ w

    x = jnp.full((1, 6), 0.5, jnp.float32)
    y = jnp.zeros(1, jnp.int32)
    truth = sigma**2 * np.square(np.asarray(w[:, 1] - w[:, 0]))
    keys = jax.random.split(jax.random.key(13), 4000)
    for n in (1, 4, 16):
        grads = jax.jit(jax.vmap(lambda k, n=n: eot.loss_and_grad(
            f, x, y, k, stochastic=True, n_eot=n, loss="margin", targeted=False,
            thresholds=None)[1][0]))(keys)  # fmt: skip
        var = np.var(np.asarray(grads), axis=0)
        np.testing.assert_allclose(var * n, truth, rtol=0.1)
    with pytest.raises(ValueError, match="stochastic=True"):
        attacks.pgd(f, x, y, key=KEY, eps=0.1)
    res = attacks.pgd(f, x, y, key=KEY, eps=0.1, steps=3, stochastic=True, n_eot=4)
    assert res.x_adv.shape == x.shape


def test_bad_options_raise_value_error_naming_the_argument():
    _, _, f = _linear()
    x, y = jnp.zeros((2, 12)), jnp.zeros(2, jnp.int32)
    for kw, name in [({"norm": "l1"}, "norm"), ({"loss": "hinge"}, "loss"),
                     ({"loss": "dlr"}, "loss"), ({"loss": "reject"}, "thresholds"),
                     ({"steps": 0}, "steps"), ({"eps": -1.0}, "eps"),
                     ({"clip": (1.0, 0.0)}, "clip"), ({"thresholds": jnp.zeros(3)}, "thresholds")]:  # fmt: skip
        with pytest.raises(ValueError, match=name):
            attacks.pgd(f, x, y, key=KEY, **({"eps": 0.1} | kw))
    with pytest.raises(ValueError, match="y:"):
        attacks.pgd(f, x, jnp.zeros(3, jnp.int32), key=KEY, eps=0.1)


def test_top_targets_rank_the_other_classes_by_clean_score():
    rng = np.random.default_rng(30)
    s = rng.normal(size=(50, 7)).astype(np.float32)
    y = rng.integers(0, 7, 50)
    got = np.asarray(top_targets(jnp.asarray(s), jnp.asarray(y), 3))
    masked = s.copy()
    masked[np.arange(50), y] = -np.inf
    np.testing.assert_array_equal(got, np.argsort(-masked, axis=1)[:, :3].T)


def test_apgd_targeted_reaches_the_analytic_minimum_over_its_three_targets():
    """Linear 6-class model: a target c is reachable in the L-inf ball iff
    eps >= m_c = (s_y - s_c) / ||w_y - w_c||_1. APGD-T (targeted DLR, 3 targets ranked 2nd-4th
    by the clean scores) flips nearly every example at 1.05 x min over ITS targets of m_c, and
    none at 0.95 x min over ALL classes (per-example eps, batches of one)."""
    rng = np.random.default_rng(31)
    d, c, n = 16, 6, 24
    w = rng.normal(size=(d, c)).astype(np.float32)
    b = (0.1 * rng.normal(size=c)).astype(np.float32)
    f = lambda z: z.reshape(z.shape[0], -1) @ jnp.asarray(w) + jnp.asarray(b)  # noqa: E731
    x = rng.uniform(0.3, 0.7, size=(n, d)).astype(np.float32)
    s = x.astype(np.float64) @ w + b
    y = s.argmax(1)
    m = np.array([[np.inf if k == y[i] else (s[i, y[i]] - s[i, k]) / np.abs(w[:, y[i]] - w[:, k]).sum()
                   for k in range(c)] for i in range(n)])  # fmt: skip
    top3 = np.argsort(-np.where(np.eye(c, dtype=bool)[y], -np.inf, s), axis=1)[:, :3]
    m_t = np.take_along_axis(m, top3, axis=1).min(1)

    def run(i, eps):
        r = attacks.apgd_targeted(f, jnp.asarray(x[i : i + 1]), jnp.asarray(y[i : i + 1]),
                                  key=jax.random.key(i), eps=float(eps), steps=40)  # fmt: skip
        return bool(r.success[0])

    above = sum(run(i, 1.05 * m_t[i]) for i in range(n))
    below = sum(run(i, 0.95 * m.min(1)[i]) for i in range(n))
    assert above >= n - 1 and below == 0


def test_targeted_reject_aware_apgd_finds_the_accepted_class_the_untargeted_one_misses():
    """Gaussian class scores: class 1 sharp and reachable, class 2 broad and far (it wins as
    soon as x leaves mu_0 but is never accepted there). The untargeted reject-aware loss is a
    max over classes and follows class 2's plateau; APGD-T's per-target reject loss, aimed at
    class 1 too, finds the fooled-and-accepted points (checked with jaxrej.reject.decide)."""
    rng = np.random.default_rng(32)
    m = rng.uniform(0.3, 0.7, size=(16,))
    mus = jnp.asarray(np.stack([m, m + 0.12 * rng.choice([-1.0, 1.0], size=16), m + 0.5]),
                      jnp.float32)  # fmt: skip
    inv_var = jnp.asarray([1 / 0.1**2, 1 / 0.1**2, 1.0], jnp.float32)

    def f(z):
        return -0.5 * jnp.sum(jnp.square(z[:, None] - mus[None]), axis=-1) * inv_var

    y_fit = np.arange(300) % 3
    x_fit = jnp.asarray(mus[y_fit] + 0.02 * rng.normal(size=(300, 16)), jnp.float32)
    th = jaxrej.reject.fit_class_thresholds(f(x_fit), jnp.asarray(y_fit), percentile=5.0)
    x = jnp.asarray(mus[0] + 0.02 * rng.normal(size=(32, 16)), jnp.float32)
    y = jnp.zeros(32, jnp.int32)
    kw = dict(key=KEY, eps=0.15, steps=40, loss="reject", thresholds=th)
    plain = attacks.apgd(f, x, y, **kw)
    tgt = attacks.apgd_targeted(f, x, y, n_targets=2, **kw)
    pred, rej = jaxrej.reject.decide(tgt.scores, th)
    np.testing.assert_array_equal(tgt.success, (np.asarray(pred) != 0) & ~np.asarray(rej))
    assert int(tgt.success.sum()) >= 30 and int(plain.success.sum()) <= 2


def test_apgd_from_the_clean_input_and_targeted_options():
    """random_start=False: every restart starts at x, so the result does not depend on the key;
    bad APGD-T options raise ValueError naming the argument."""
    f, x, y = _mlp_problem()
    a = attacks.apgd(f, x, y, key=jax.random.key(1), eps=0.03, steps=10, random_start=False)
    b = attacks.apgd(f, x, y, key=jax.random.key(2), eps=0.03, steps=10, random_start=False)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)
    with pytest.raises(ValueError, match="n_targets"):
        attacks.apgd_targeted(f, x, y, key=KEY, eps=0.1, n_targets=3, loss="ce")  # C = 3
    with pytest.raises(ValueError, match="loss"):
        attacks.apgd_targeted(f, x, y, key=KEY, eps=0.1, n_targets=2)  # dlr-T needs C >= 4
    with pytest.raises(ValueError, match="thresholds"):
        attacks.apgd_targeted(f, x, y, key=KEY, eps=0.1, n_targets=2, loss="reject")


def test_python_loop_equals_the_compiled_region_and_shares_one_gradient_compilation():
    """loop='python' (the shared gradient step of jaxrej.attacks.stepper + small jitted updates)
    returns bit-equal results to the one-region attacks, and PGD-CE, APGD-DLR, APGD-T and the
    reject-aware APGD at two budgets compile the scorer's gradient ONCE between them."""
    from jaxrej.attacks import stepper

    class Five(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(5)(nn.tanh(nn.Dense(16)(x.reshape(x.shape[0], -1))))

    model = Five()
    x = jnp.asarray(np.random.default_rng(40).uniform(size=(24, 4, 4, 1)), jnp.float32)
    params = jax.tree_util.tree_map(lambda p: 3 * p, model.init(jax.random.key(41), x))

    def f(z):
        return model.apply(params, z)

    y = jnp.argmax(f(x), axis=1)
    th = jnp.quantile(f(x).max(1), 0.3) * jnp.ones(5)
    runs = [
        (attacks.pgd, dict(loss="ce", restarts=2)),
        (attacks.apgd, dict(loss="dlr")),
        (attacks.apgd_targeted, dict(n_targets=3)),
        (attacks.apgd, dict(loss="reject", thresholds=th, random_start=False)),
    ]
    n0 = stepper._step._cache_size()
    for eps in (0.03, 0.08):
        for attack, kw in runs:
            a = attack(f, x, y, key=KEY, eps=eps, steps=6, **kw)
            b = attack(f, x, y, key=KEY, eps=eps, steps=6, loop="python", **kw)
            np.testing.assert_array_equal(a.x_adv, b.x_adv)
            np.testing.assert_array_equal(a.success, b.success)
            np.testing.assert_array_equal(a.scores, b.scores)
    assert stepper._step._cache_size() == n0 + 1
    with pytest.raises(ValueError, match="loop"):
        attacks.pgd(f, x, y, key=KEY, eps=0.1, loop="scan")
