"""SDIM-logit: its loss terms against scipy / numpy, and a fit on synthetic logits."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxrej import reject
from jaxrej.heads import sdim_logit as S


def test_class_scores_are_per_dimension_gaussian_loglik_with_clamp():
    r = np.random.default_rng(0)
    x = r.normal(size=(7, 3))
    mu = r.normal(size=(4, 3))
    ls = r.normal(size=(4, 3))
    ls[0, 0] = -9.0  # below the clamp log(0.02)
    got = S.gaussian_class_scores(jnp.asarray(x), jnp.asarray(mu), jnp.asarray(ls))
    sig = np.exp(np.maximum(ls, math.log(0.02)))
    ref = stats.norm.logpdf(x[:, None, :], mu[None], sig[None]).mean(-1)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_jsd_mi_loss_formula_and_its_limit():
    r = np.random.default_rng(1)
    t = r.normal(size=(5, 5)) * 2

    def softplus(v):
        return np.logaddexp(0.0, v)

    pos = np.mean(np.log(2) - softplus(-np.diag(t)))
    off = ~np.eye(5, dtype=bool)
    neg = np.mean((softplus(-t) + t - np.log(2))[off])
    assert float(S.jsd_mi_loss(jnp.asarray(t))) == pytest.approx(neg - pos, rel=1e-5)
    # a perfect critic (+inf on positives, -inf on negatives) attains the bound: loss -> -2 log 2
    perfect = jnp.where(jnp.eye(5, dtype=bool), 50.0, -50.0)
    assert float(S.jsd_mi_loss(perfect)) == pytest.approx(-2 * math.log(2), abs=1e-6)


def test_margin_loss_matches_a_loop():
    r = np.random.default_rng(2)
    s = r.normal(size=(6, 4)) * 5
    y = r.integers(0, 4, 6)
    ref = np.mean([max(0.0, 10.0 - s[i, y[i]] + np.delete(s[i], y[i]).max()) for i in range(6)])
    assert float(S.margin_loss(jnp.asarray(s), jnp.asarray(y), 10.0)) == pytest.approx(
        ref, rel=1e-6
    )


def _blobs(n, seed, c=4):
    r = np.random.default_rng(seed)
    y = r.integers(0, c, n)
    logits = r.normal(size=(n, c)) + 6.0 * np.eye(c)[y]
    return logits.astype(np.float32), y.astype(np.int32)


def test_fit_classifies_and_rejects_far_inputs():
    x, y = _blobs(600, 0)
    head = S.fit(x, y, key=jax.random.key(0), epochs=80, batch_size=50)
    losses = np.asarray(head.losses)
    assert losses.shape == (80, 4) and losses[-1, 0] < losses[0, 0]
    xt, yt = _blobs(400, 1)
    acc_base = np.mean(np.argmax(xt, 1) == yt)
    acc = np.mean(np.asarray(S.predict(head, xt)) == yt)
    assert acc >= acc_base - 0.01
    th = reject.fit_class_thresholds(S.class_scores(head, x), y, percentile=1.0)
    _, rej_in = reject.decide(S.class_scores(head, xt), th)
    far = np.random.default_rng(2).normal(size=(200, 4)).astype(np.float32) * 30.0
    _, rej_far = reject.decide(S.class_scores(head, far), th)
    assert float(np.mean(rej_in)) < 0.06  # ~1% by construction, a few % on fresh data
    assert float(np.mean(rej_far)) > 0.9


def test_progress_bar_changes_nothing(capsys):
    """The per-epoch loop with its tqdm bar trains the same head as without it."""
    x, y = _blobs(200, 0)
    quiet = S.fit(x, y, key=jax.random.key(3), epochs=3, batch_size=50)
    shown = S.fit(x, y, key=jax.random.key(3), epochs=3, batch_size=50, progress=True)
    assert "sdim-logit" in capsys.readouterr().err
    for a, b in zip(
        jax.tree_util.tree_leaves(quiet), jax.tree_util.tree_leaves(shown), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_input():
    x, y = _blobs(50, 0)
    with pytest.raises(ValueError, match="logits"):
        S.fit(np.where(np.eye(50, 4, dtype=bool), np.nan, x), y, key=jax.random.key(0))
    with pytest.raises(ValueError, match="labels"):
        S.fit(x, y + 4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="batch_size"):
        S.fit(x, y, key=jax.random.key(0), batch_size=1)
