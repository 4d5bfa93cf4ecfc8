"""The adversarial protocol (jaxrej.eval.adversarial) and the pixel scorers
(jaxrej.eval.pixel_scorers) on a tiny synthetic problem: scorers equal the heads protocol's
class scores, survive a save/load round trip, the reject-aware numbers are consistent with
jaxrej.reject.decide, and the gradient-masking checks flag a scorer whose gradient is zero."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrej import attacks, reject
from jaxrej.eval import adversarial, pixel_scorers

GMM = dict(n_components_per_class=1, n_components=2, covariance_type="full", reg_covar=1e-3,
           tol=1e-3, max_iter=20, n_init=1)  # fmt: skip


def _data(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(np.int32)
    x = rng.uniform(0, 0.4, size=(n, 4, 4, 1)).astype(np.float32)
    x[np.arange(n), y, y, 0] += 0.6  # class c lights pixel (c, c)
    return x, y


@pytest.fixture(scope="module")
def heads():
    return pixel_scorers.fit_heads(
        _data(240, 0), _data(60, 1), num_classes=3, model="mlp", model_kwargs={"hidden": (16,)},
        train=dict(epochs=20, batch_size=32), sdim=dict(epochs=20, batch_size=40), gmm=GMM,
        key=jax.random.key(0),
    )  # fmt: skip


def test_pixel_scorers_equal_the_heads_library_and_round_trip(heads, tmp_path):
    """Each scorer equals the heads library applied to classifiers.apply's logits/features (the
    path jaxrej.eval.heads takes); the GMM scorer keeps the base prediction with s_pred =
    log p(h); save_heads/load_heads round-trips every scorer exactly."""
    from jaxrej import classifiers
    from jaxrej.heads import baselines, gmm, sdim_logit

    x, _ = _data(20, 2)
    net = heads.module()
    z, h = (np.asarray(a) for a in classifiers.apply(net, heads.state, x))
    want = {
        "msp": jax.nn.log_softmax(z), "msp_temperature": jax.nn.log_softmax(z / heads.temperature),
        "sdim_logit": sdim_logit.class_scores(heads.sdim, z),
        "gmm_cc": gmm.class_log_prob(heads.gmm_cc, h),
        "mahalanobis": baselines.mahalanobis_class_scores(heads.mahalanobis, h),
    }  # fmt: skip
    scorers = pixel_scorers.head_scorers(heads)
    for name, w in want.items():
        np.testing.assert_allclose(scorers[name](jnp.asarray(x)), w, rtol=1e-5, atol=1e-5)
    g = np.asarray(scorers["gmm"](jnp.asarray(x)))
    np.testing.assert_array_equal(np.argmax(g, 1), np.argmax(z, 1))
    np.testing.assert_allclose(np.max(g, 1), gmm.log_prob(heads.gmm, h), rtol=1e-5, atol=1e-5)
    pixel_scorers.save_heads(str(tmp_path), heads)
    loaded = pixel_scorers.head_scorers(pixel_scorers.load_heads(str(tmp_path)))
    for name, s in scorers.items():
        np.testing.assert_array_equal(s(jnp.asarray(x)), loaded[name](jnp.asarray(x)))
    with pytest.raises(ValueError, match="workdir"):
        pixel_scorers.load_heads(str(tmp_path / "missing"))


def test_protocol_numbers_are_consistent_and_checks_run(heads):
    """On the Mahalanobis scorer: worst-of accuracy <= PGD and APGD accuracy <= clean accuracy;
    fooled-and-accepted (plain) = mean(pred != y and accepted) recomputed with reject.decide;
    the adaptive number is at least the plain one; every check reports; the table names it."""
    x, y = _data(24, 3)
    xv, yv = _data(60, 1)
    fn = pixel_scorers.HeadScorer(heads=heads, kind="mahalanobis")
    th = adversarial.fit_thresholds(adversarial.scores_of(fn, xv, batch_size=32), yv, (1.0, 5.0))
    o = adversarial.AttackOptions(eps=(0.1, 0.3), steps=10, batch_size=16, percentiles=(1.0, 5.0))
    r = adversarial.evaluate_scorer(lambda yb: fn, x, y, th, options=o, key=jax.random.key(1),
                                    log=lambda *_: None)  # fmt: skip
    for e in r["eps"].values():
        assert e["accuracy"] <= min(e["pgd_accuracy"], e["apgd_accuracy"]) + 1e-9
        assert max(e["pgd_accuracy"], e["apgd_accuracy"]) <= r["clean_accuracy"] + 1e-9
        for p in ("p1", "p5"):
            assert e["fooled_accepted_adaptive"][p] >= e["fooled_accepted"][p]
            assert e["fooled_accepted"][p] <= 1 - e["accuracy"] + 1e-9
    e = r["eps"]["0.3"]
    pg = adversarial.batched_attack(attacks.pgd, lambda yb: fn, x, y, key=jax.random.key(0),
                                    batch_size=16, eps=0.3, steps=10)  # fmt: skip
    pred, rej = reject.decide(jnp.asarray(pg["scores"]), jnp.asarray(th[1.0]))
    assert e["max_norm"] <= 0.3 + 1e-6
    assert 0 <= float(np.mean((np.asarray(pred) != y) & ~np.asarray(rej))) <= 1
    assert set(r["checks"]) == {"unbounded", "monotone"}
    assert r["checks"]["unbounded"]["pass"]
    md = adversarial.markdown({"mahalanobis": adversarial.json_ready(r)}, percentiles=(1.0, 5.0))
    assert "| mahalanobis | 0.3 |" in md and "fooled+acc. @p5" in md


def test_masking_check_flags_a_scorer_with_zero_gradient():
    """A linear classifier on rounded pixels (straight rounding: zero gradient almost
    everywhere) is a textbook masked defence: PGD fails even at eps = the whole range, and the
    `unbounded` check reports FAIL."""
    w = jnp.asarray(np.random.default_rng(4).normal(size=(16, 3)), jnp.float32)

    def masked(x):
        return jnp.round(x.reshape(x.shape[0], -1) * 4) / 4 @ w

    x, _ = _data(12, 5)
    y = np.asarray(jnp.argmax(masked(jnp.asarray(x)), 1))
    o = adversarial.AttackOptions(eps=(0.1,), steps=5, batch_size=12, percentiles=(5.0,))
    th = {5.0: np.full(3, -np.inf, np.float32)}
    r = adversarial.evaluate_scorer(lambda yb: masked, x, y, th, options=o, key=jax.random.key(2),
                                    log=lambda *_: None)  # fmt: skip
    assert not r["checks"]["unbounded"]["pass"]
    assert "**FAIL**" in adversarial.markdown({"masked": r}, percentiles=(5.0,))


def test_attack_options_validate():
    with pytest.raises(ValueError, match="norm"):
        adversarial.AttackOptions(eps=(0.1,), norm="l3")
    with pytest.raises(ValueError, match="eps"):
        adversarial.AttackOptions(eps=())
