"""The scorer layer (jaxrej.scorers): heads scorers equal the heads library and survive a save /
load round trip; thresholds against numpy's percentiles and a brute-force search; the registry
maps runs to scorer names; the ODE scorer's judge against the closed-form Gaussian likelihood and
its attack view keeps the label refined; a judge's row scores do not depend on its batch."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrej import reject, scorers
from jaxrej.heads.gmm import EMOptions
from jaxrej.scorers import Scorer, heads, sbgc
from tests import gaussian

EM = dict(covariance_type="full", reg_covar=1e-3, tol=1e-3, max_iter=20, n_init=1)


def _data(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(np.int32)
    x = rng.uniform(0, 0.4, size=(n, 4, 4, 1)).astype(np.float32)
    x[np.arange(n), y, y, 0] += 0.6  # class c lights pixel (c, c)
    return x, y


@pytest.fixture(scope="module")
def fitted():
    return heads.fit_heads(
        _data(240, 0), _data(60, 1), num_classes=3, model="mlp", model_kwargs={"hidden": (16,)},
        train=dict(epochs=20, batch_size=32), sdim=dict(epochs=20, batch_size=40),
        gmm=EMOptions(n_components=2, **EM), gmm_cc=EMOptions(n_components=1, **EM), key=jax.random.key(0),
    )  # fmt: skip


def test_heads_scorers_equal_the_heads_library_and_round_trip(fitted, tmp_path):
    """Each head scorer equals the heads library applied to classifiers.apply's logits/features;
    the GMM scorer keeps the base prediction with s_pred = log p(h); saved and loaded through
    the registry, every scorer gives the same scores."""
    from jaxrej import classifiers
    from jaxrej.heads import baselines, gmm, sdim_logit

    x, _ = _data(20, 2)
    z, h = (np.asarray(a) for a in classifiers.apply(fitted.module(), fitted.state, x))
    want = {
        "msp": jax.nn.log_softmax(z), "msp_temperature": jax.nn.log_softmax(z / fitted.temperature),
        "sdim_logit": sdim_logit.class_scores(fitted.sdim, z),
        "gmm_cc": gmm.class_log_prob(fitted.gmm_cc, h),
        "mahalanobis": baselines.mahalanobis_class_scores(fitted.mahalanobis, h),
    }  # fmt: skip
    fns = heads.head_scorers(fitted)
    for name, w in want.items():
        np.testing.assert_allclose(fns[name](jnp.asarray(x)), w, rtol=1e-5, atol=1e-5)
    g = np.asarray(fns["gmm"](jnp.asarray(x)))
    np.testing.assert_array_equal(np.argmax(g, 1), np.argmax(z, 1))
    np.testing.assert_allclose(np.max(g, 1), gmm.log_prob(fitted.gmm, h), rtol=1e-5, atol=1e-5)
    heads.save_heads(str(tmp_path / "heads"), fitted)
    found = scorers.find_runs(str(tmp_path))
    assert found == {k: str(tmp_path / "heads") for k in heads.HEAD_SCORERS}
    for name, fn in fns.items():
        sc = scorers.load(str(tmp_path), name, batch_size=8)  # 20 rows: padded batches of 8
        np.testing.assert_allclose(sc.class_scores(x), fn(jnp.asarray(x)), rtol=1e-6, atol=1e-6)
        assert sc.for_attack(labels=jnp.zeros(8, jnp.int32)).label_aware is False
    with pytest.raises(ValueError, match="workdir"):
        heads.load_heads(str(tmp_path / "missing"))


def test_registry_names_each_kind_of_run(tmp_path):
    for name, cfg in (("a_ode", {"eval": {}}), ("b_elbo", {"eval": {"scorer": "elbo"}}),
                      ("c_abs", {"model": {"name": "abs"}})):  # fmt: skip
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "d_empty").mkdir()
    assert scorers.find_runs(str(tmp_path)) == {
        "sbgc": str(tmp_path / "a_ode"), "elbo": str(tmp_path / "b_elbo"),
        "abs": str(tmp_path / "c_abs"),
    }  # fmt: skip
    with pytest.raises(ValueError, match="holds no trained"):
        scorers.find_runs(str(tmp_path / "d_empty"))
    with pytest.raises(ValueError, match="name"):
        scorers.load(str(tmp_path), "nope")


def _linear(w):
    return lambda x: x.reshape(x.shape[0], -1) @ w


def test_thresholds_per_class_percentiles_accept_correct_and_the_fallback():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    sc = Scorer(name="lin", fn=_linear(w), num_classes=3, batch_size=16, settings="")
    xv = rng.normal(size=(300, 2, 2, 1)).astype(np.float32)
    s = np.asarray(_linear(w)(xv), np.float64)
    yv = np.where(rng.uniform(size=300) < 0.8, s.argmax(1), rng.integers(0, 3, 300)).astype(
        np.int32
    )
    fitted = sc.fit_thresholds(xv, yv, percentiles=(1.0, 5.0))
    assert list(fitted.thresholds) == ["p1", "p5", "tpr99"]
    correct = s.argmax(1) == yv
    own = s[np.arange(300), yv]
    for p in (1.0, 5.0):
        want = [np.percentile(own[correct & (yv == c)], p) for c in range(3)]
        np.testing.assert_allclose(fitted.thresholds[f"p{p:g}"], want, rtol=1e-5)
    # tpr99: the largest t accepting >= 99% of the correct rows, by brute force over the scores
    t = fitted.thresholds["tpr99"]
    cands = np.sort(own[correct])
    best = max(c for c in cands if np.mean(own[correct] >= c) >= 0.99)
    assert np.all(t == t[0]) and t[0] == pytest.approx(best, rel=1e-6)
    pred, acc = fitted.decide(xv, rule="tpr99")
    assert np.mean(acc[correct]) >= 0.99 and not acc[correct].all()  # the largest such t
    p_ref, r_ref = reject.decide(jnp.asarray(s), jnp.asarray(fitted.thresholds["p1"]))
    pred, acc = fitted.decide(xv)  # the first rule
    np.testing.assert_array_equal(pred, p_ref)
    np.testing.assert_array_equal(acc, ~np.asarray(r_ref))
    # a class never right falls back to the percentile over every correct row
    s2 = np.array([[0.0, -1.0, -2.0], [-3.0, 0.0, -1.0], [-1.0, 0.0, -5.0], [0.5, -1.0, -2.0]])
    th = reject.fit_thresholds(s2, np.array([0, 1, 2, 0]), percentiles=(50.0,))
    np.testing.assert_allclose(th["p50"], [0.25, 0.0, np.percentile([0.0, 0.0, 0.5], 50)])
    assert reject.missing_classes(s2, np.array([0, 1, 2, 0])) == [2]
    with pytest.raises(ValueError, match="fit_thresholds first"):
        sc.decide(xv)


def test_ode_judge_matches_the_closed_form_and_its_view_keeps_the_label(x64):
    """The judge (exact divergence, every class refined) equals the closed-form Gaussian
    log-likelihood at the bin-centre input; the attack view (a cheap 1-probe solve, TopK(k=1)
    keeping the label) gives the label class -- here the WORST class -- its cheap accurate solve,
    which `jaxrej.log_likelihood` with the same key reproduces."""
    import jaxrej
    from jaxrej.flow import FlowSolve
    from jaxrej.scoring import TopK

    mus, covs = gaussian.make_params(3, 4, seed=1, scale=2.0)
    params = (jnp.asarray(mus), jnp.asarray(covs))
    sde = jaxrej.VPSDE(beta_min=0.1, beta_max=20.0)
    fn = gaussian.make_score_fn("vp", (2, 2, 1))
    rng = np.random.default_rng(0)
    y0 = rng.integers(0, 3, 4)
    x = np.clip(0.5 + 0.1 * (mus[y0] + rng.normal(size=(4, 4))), 0, 1).reshape(4, 2, 2, 1)
    key = jax.random.key(3)
    solve = FlowSolve(divergence="exact", rtol=1e-7, atol=1e-7)
    judge = sbgc.SBGCScorer(params=params, key=key, score_fn=fn, sde=sde, num_classes=3,
                            n_levels=17, options=(("solve", solve), ("screen", None)))  # fmt: skip
    xm = np.asarray(judge.model_input(jnp.asarray(x))).reshape(4, 4)
    exact = np.stack([gaussian.closed_form_logp("vp", mus, covs, xm, np.full(4, c), 1e-5, 1.0)
                      for c in range(3)], 1)  # fmt: skip
    np.testing.assert_allclose(judge(jnp.asarray(x)), exact, rtol=1e-4, atol=1e-4)
    worst = jnp.asarray(np.argmin(exact, 1), jnp.int32)
    cheap = FlowSolve(divergence="rademacher", n_probes=1, rtol=1e-3, atol=1e-3, max_steps=64)
    view = judge.replace(labels=worst, options=(("solve", cheap), ("screen", (TopK(k=1),))))
    got = np.asarray(view(jnp.asarray(x)))[np.arange(4), np.asarray(worst)]
    ref = jaxrej.log_likelihood(fn, params, sde, jnp.asarray(xm.reshape(4, 2, 2, 1)), worst,
                                key=key, solve=cheap).logp  # fmt: skip
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_a_judges_row_scores_do_not_depend_on_its_batch():
    """A run's judge (row_keys: each row's dequantisation noise and Hutchinson probes from a hash
    of its pixels) gives a row the same scores alone, in a batch and in the reversed batch; with
    positional keys (the attack view's) the reversed batch gives its rows other draws. The
    judge's model input is ((L - 1) x + u) / L with u in [0, 1): noise within the row's bins."""
    import jaxrej
    from jaxrej.flow import FlowSolve

    mus, covs = gaussian.make_params(3, 4, seed=1, scale=2.0)
    params = (jnp.asarray(mus), jnp.asarray(covs))
    sde = jaxrej.VPSDE(beta_min=0.1, beta_max=20.0)
    fn = gaussian.make_score_fn("vp", (2, 2, 1))
    x = jnp.asarray(np.random.default_rng(0).integers(0, 17, (5, 2, 2, 1)) / 16, jnp.float32)
    solve = FlowSolve(divergence="rademacher", n_probes=1, rtol=1e-5, atol=1e-5)
    judge = sbgc.SBGCScorer(params=params, key=jax.random.key(3), score_fn=fn, sde=sde,
                            num_classes=3, n_levels=17, options=(("solve", solve), ("screen", None)),
                            dequantize="uniform", row_keys=True)  # fmt: skip
    batch = np.asarray(judge(x))
    alone = np.concatenate([np.asarray(judge(x[i : i + 1])) for i in range(5)])
    np.testing.assert_allclose(alone, batch, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(np.asarray(judge(x[::-1]))[::-1], batch, rtol=1e-6, atol=1e-5)
    u = 17 * np.asarray(judge.model_input(x)) - 16 * np.asarray(x)
    assert np.all((u >= -1e-5) & (u < 1 + 1e-5)) and np.ptp(u) > 0.5
    view = judge.replace(row_keys=False)
    assert np.abs(np.asarray(view(x[::-1]))[::-1] - np.asarray(view(x))).max() > 1e-2
