"""jaxrej.eval.masking: every check FAILS on a planted masked scorer and passes on the honest one
it was made from (linear / Gaussian class scores on 4 x 4 images, whose worst cases are known in
closed form): quantised inputs (gradient 0 almost everywhere), a saturated log-likelihood, a
stop_gradient inside the scorer, a random scorer attacked without EOT."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from jaxrej import attacks
from jaxrej.eval import masking
from jaxrej.metrics import wilson_interval

KEY = jax.random.key(0)
N, C, D = 64, 4, 16


def _linear(seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(D, C)).astype(np.float32)
    b = (0.1 * rng.normal(size=C)).astype(np.float32)
    x = rng.uniform(0.3, 0.7, size=(N, 4, 4, 1)).astype(np.float32)
    s = x.reshape(N, -1).astype(np.float64) @ w + b
    y = s.argmax(1)
    minimal = np.array([min((s[i, y[i]] - s[i, c]) / np.abs(w[:, y[i]] - w[:, c]).sum()
                            for c in range(C) if c != y[i]) for i in range(N)])  # fmt: skip
    wj, bj = jnp.asarray(w), jnp.asarray(b)

    def f(z):
        return z.reshape(z.shape[0], -1) @ wj + bj

    return f, w, b, jnp.asarray(x), jnp.asarray(y, jnp.int32), minimal


def _quantised(f):
    return lambda z: f(jnp.round(z * 255) / 255)  # d round / dz = 0 almost everywhere


def test_unbounded_fails_for_quantised_inputs_and_gives_no_random_start_credit():
    f, w, b, x, y, _ = _linear()
    yn = np.asarray(y)
    # truth: some class beats y somewhere in the box, max_x (w_c - w_y) x + b_c - b_y > 0
    reach = np.array([max(np.maximum(w[:, c] - w[:, yn[i]], 0).sum() + b[c] - b[yn[i]]
                          for c in range(C) if c != yn[i]) for i in range(N)])  # fmt: skip
    assert np.all(reach > 0)
    kw = dict(key=KEY, eps=1.0, steps=20, loss="margin", random_start=False)
    honest = masking.unbounded(attacks.pgd(f, x, y, **kw), clean_correct=np.ones(N, bool))
    masked = masking.unbounded(attacks.pgd(_quantised(f), x, y, **kw))
    assert honest.passed and honest.rates["success"] == 1.0
    assert not masked.passed and masked.rates["success"] == 0.0
    assert masked.intervals["success"] == pytest.approx(wilson_interval(0, N))
    # a random start in the unit box is noise that is misclassified without any attack: crediting
    # it would make the masked scorer look broken-through
    credited = attacks.pgd(_quantised(f), x, y, **(kw | {"random_start": True}))
    assert float(np.mean(credited.success)) > 0.5
    apgd = attacks.apgd(_quantised(f), x, y, key=KEY, eps=1.0, steps=20, random_start=False)
    assert not masking.unbounded(apgd).passed
    # clean-incorrect rows are not counted
    only = masking.unbounded(np.r_[np.ones(5, bool), np.zeros(3, bool)],
                             clean_correct=np.r_[np.ones(5, bool), np.zeros(3, bool)])  # fmt: skip
    assert only.passed and only.n == 5


def _gaussian(saturated):
    """Three Gaussian classes (sigma 0.15) with mu_1 = mu_0 + 0.08 r nearby; saturated: each
    log-likelihood clipped at -5 (its gradient vanishes beyond), with a 1e-3 tie-break that
    keeps class 0 predicted where every class is clipped."""
    rng = np.random.default_rng(1)
    m = rng.uniform(0.3, 0.7, size=(4, 4, 1))
    r = rng.choice([-1.0, 1.0], size=(4, 4, 1))
    mus = jnp.asarray(np.stack([m, m + 0.08 * r, m - 0.3 * r]), jnp.float32)
    bias = jnp.asarray([0.0, -1e-3, -2e-3], jnp.float32)

    def f(z):
        ll = -jnp.sum(jnp.square(z[:, None] - mus[None]), axis=(2, 3, 4)) / (2 * 0.15**2)
        return (jnp.maximum(ll, -5.0) if saturated else ll) + bias

    x = jnp.asarray(mus[0] + 0.01 * rng.normal(size=(N, 4, 4, 1)), jnp.float32)
    return f, x, jnp.zeros(N, jnp.int32)


def test_monotone_fails_for_a_saturated_log_likelihood():
    """PGD with a random start: inside a small ball the clipped likelihood still has gradients,
    in a large one the start lands where every class is clipped (gradient 0, class 0 by the
    tie-break) -- success falls with eps. The honest likelihood is monotone."""
    eps = (0.06, 0.3, 1.0)
    out = {}
    for saturated in (False, True):
        f, x, y = _gaussian(saturated)
        runs = [attacks.pgd(f, x, y, key=jax.random.fold_in(KEY, i), eps=e, steps=20)
                for i, e in enumerate(eps)]  # fmt: skip
        out[saturated] = masking.monotone(eps, runs)
    assert out[False].passed, out[False].reason
    assert not out[True].passed
    assert out[True].rates["eps=0.06"] > 0.9 and out[True].rates["eps=1"] < 0.1
    with pytest.raises(ValueError, match="eps"):
        masking.monotone((0.1, 0.2), [np.ones(3, bool)] * 2)
    with pytest.raises(ValueError, match="eps"):
        masking.monotone((0.1, 0.3, 0.2), [np.ones(3, bool)] * 3)


def test_gradient_free_fails_when_square_beats_a_zero_gradient():
    """At the median analytic L-inf minimum: on the honest linear model PGD is at least as
    strong as Square; on quantised inputs PGD is left with its random start and Square, which
    never asks for a gradient, wins."""
    f, _, _, x, y, minimal = _linear(seed=2)
    eps = float(np.median(minimal))
    checks = {}
    for name, g in (("honest", f), ("masked", _quantised(f))):
        wb = attacks.pgd(g, x, y, key=KEY, eps=eps, steps=20, loss="margin")
        sq = attacks.square(g, x, y, key=KEY, eps=eps, queries=300)
        checks[name] = masking.gradient_free(sq, wb)
    assert checks["honest"].passed, checks["honest"].reason
    assert not checks["masked"].passed
    assert checks["masked"].rates["square"] > 0.3 > checks["masked"].rates["white_box"]


def test_transfer_fails_for_a_stop_gradient_inside_the_scorer():
    """Surrogate: the linear model with perturbed weights. Against the honest model white-box PGD
    beats the transferred inputs; behind a stop_gradient PGD only has its random start and the
    surrogate's inputs fool the model more often."""
    f, w, b, x, y, minimal = _linear(seed=3)
    w_s = jnp.asarray(w + 0.3 * np.random.default_rng(4).normal(size=w.shape), jnp.float32)

    def surrogate(z):
        return z.reshape(z.shape[0], -1) @ w_s + jnp.asarray(b)

    eps = float(np.median(minimal) * 1.2)
    x_tr = attacks.pgd(surrogate, x, y, key=KEY, eps=eps, steps=20, loss="margin").x_adv
    checks = {}
    for name, g in (("honest", f), ("masked", lambda z: f(jax.lax.stop_gradient(z)))):
        wb = attacks.pgd(g, x, y, key=KEY, eps=eps, steps=20, loss="margin")
        tr = np.argmax(np.asarray(g(x_tr)), 1) != np.asarray(y)
        checks[name] = masking.transfer(tr, wb)
    assert checks["honest"].passed, checks["honest"].reason
    assert not checks["masked"].passed
    assert checks["masked"].rates["transfer"] > 0.5 > checks["masked"].rates["white_box"]


class _Noisy(struct.PyTreeNode):
    """s(x; key) = W x + b + 0.02 sin(omega <x, z_c>), z ~ N(0, I) per call: values move by
    <= 0.02, gradients by 0.02 omega z cos(.) whose mean over z is 0 (EOT recovers W's). A pytree
    (omega a leaf): both omegas share one compilation per n_eot."""

    w: jax.Array
    b: jax.Array
    omega: jax.Array

    def __call__(self, z, key):
        zz = jax.random.normal(key, (D, C), z.dtype)
        flat = z.reshape(z.shape[0], -1)
        return flat @ self.w + self.b + 0.02 * jnp.sin(self.omega * (flat @ zz))


def test_eot_fails_for_a_random_scorer_attacked_without_it():
    """High-frequency randomness (omega = 500) drowns the one-draw gradient: PGD without EOT
    fools far fewer than with 32 draws averaged per step. With omega = 1 both agree. Both are
    judged by the expected scores (a single lucky draw is no success)."""
    f, w, b, x, y, minimal = _linear(seed=5)
    yn = np.asarray(y)
    eps = float(np.median(minimal) * 1.5)
    checks = {}
    for name, omega in (("honest", 1.0), ("masked", 500.0)):
        g = _Noisy(jnp.asarray(w), jnp.asarray(b), jnp.float32(omega))
        kw = dict(key=KEY, eps=eps, steps=20, loss="margin", stochastic=True)
        judged = [
            np.argmax(np.asarray(f(attacks.pgd(g, x, y, n_eot=n, **kw).x_adv)), 1) != yn
            for n in (1, 32)
        ]  # re-judged by the expected scores f = E_z s(x; z)
        checks[name] = masking.eot(judged[1], judged[0])
    assert checks["honest"].passed, checks["honest"].reason
    assert not checks["masked"].passed
    assert checks["masked"].rates["eot"] > checks["masked"].rates["plain"] + 0.25


def test_check_records_and_arguments():
    """The record carries the compared rates, n, the Wilson intervals and a reason; JSON-ready;
    inputs of different lengths or non-boolean flags raise ValueError naming the argument."""
    sq = np.r_[np.ones(40, bool), np.zeros(24, bool)]
    wb = np.r_[np.ones(10, bool), np.zeros(54, bool)]
    c = masking.gradient_free({"success": sq}, wb)
    assert not c.passed and c.n == 64
    assert c.rates == {"square": 40 / 64, "white_box": 10 / 64}
    assert c.intervals["square"] == pytest.approx(wilson_interval(40, 64))
    assert "beats" in c.reason
    js = c.to_json()
    assert js["passed"] is False and js["intervals"]["white_box"][1] == pytest.approx(
        wilson_interval(10, 64)[1]
    )
    # inside the interval is not a failure: 35 of 64 Square vs 28 of 64 white-box
    lo = wilson_interval(35, 64)[0]
    assert lo < 28 / 64 and masking.gradient_free(np.arange(64) < 35, np.arange(64) < 28).passed
    assert masking.all_passed({"a": masking.unbounded(np.ones(4, bool))})
    assert not masking.all_passed([c])
    with pytest.raises(ValueError, match="white_box"):
        masking.gradient_free(sq, wb[:10].astype(float) * 2)
    with pytest.raises(ValueError, match="same examples"):
        masking.transfer(sq, wb[:10])
    with pytest.raises(ValueError, match="successes"):
        masking.monotone((0.1, 0.2, 0.3), [sq, sq])
