"""jaxrej.abs: the bound against the closed-form log-likelihood of a linear-Gaussian decoder,
batch invariance of the latent search, bit-identical resume after a kill, the CLI on digits."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from jaxrej import abs as A
from tests.conftest import CONFIGS


def _linear_model(D=12, d=3, C=2, sigma=0.3, seed=0):
    """A linear-Gaussian ABS model: G_c(z) = W_c z + b_c, exact log p(x | c) in closed form."""
    model = A.ABSModel(num_classes=C, event_shape=(D,), latent_dim=d, hidden=(), sigma=sigma,
                       encoder=False, output="linear")  # fmt: skip
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(C, d, D)) * 0.5  # flax Dense kernel: (in, out)
    b = rng.normal(size=(C, D)) * 0.2
    params = {"dec": {"params": {"Dense_0": {"kernel": jnp.asarray(W, jnp.float32),
                                             "bias": jnp.asarray(b, jnp.float32)}}}, "enc": {}}  # fmt: skip
    exact = lambda x, c: multivariate_normal(b[c], W[c].T @ W[c] + sigma**2 * np.eye(D)).logpdf(x)  # noqa: E731
    return model, params, W, b, exact


def test_linearised_elbo_is_a_bound_with_equality_at_the_posterior_mean():
    model, params, W, b, exact = _linear_model()
    rng = np.random.default_rng(1)
    x = rng.normal(size=12)
    dec0 = jax.tree_util.tree_map(lambda a: a[0], params["dec"])
    fn = lambda z: A.decode(model, dec0, z)  # noqa: E731
    truth = exact(x, 0)
    for _ in range(5):  # any latent: a lower bound
        z = jnp.asarray(rng.normal(size=3), jnp.float32)
        assert float(A.linearised_elbo(model, fn, jnp.asarray(x, jnp.float32), z)) <= truth + 1e-4
    Wt = W[0].T  # (D, d): the posterior mean (W^T W + sigma^2 I)^-1 W^T (x - b)
    m = np.linalg.solve(Wt.T @ Wt + 0.09 * np.eye(3), Wt.T @ (x - b[0]))
    got = float(
        A.linearised_elbo(model, fn, jnp.asarray(x, jnp.float32), jnp.asarray(m, jnp.float32))
    )
    assert got == pytest.approx(truth, abs=2e-3)


def _bernoulli_linear(D=10, d=3, seed=0):
    """A decoder whose logits are linear in z (hidden=()), Bernoulli likelihood."""
    model = A.ABSModel(num_classes=2, event_shape=(D,), latent_dim=d, hidden=(), encoder=False,
                       likelihood="bernoulli")  # fmt: skip
    rng = np.random.default_rng(seed)
    W, b = rng.normal(size=(d, D)), rng.normal(size=D)
    p = {"params": {"Dense_0": {"kernel": jnp.asarray(W, jnp.float64), "bias": jnp.asarray(b)}}}
    return model, p, W, b


def test_bernoulli_likelihood_is_scipys_and_its_linear_terms_match(x64):
    from scipy.stats import bernoulli

    model, p, W, b = _bernoulli_linear()
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, size=10).astype(np.float64)
    z = rng.normal(size=3)
    h = A.decode_raw(model, p, jnp.asarray(z))
    np.testing.assert_allclose(np.asarray(h), z @ W + b, rtol=1e-12)
    want = bernoulli.logpmf(x, 1 / (1 + np.exp(-(z @ W + b)))).sum()
    assert float(A.bound.log_likelihood(model, jnp.asarray(x), h)) == pytest.approx(want, rel=1e-10)
    # <x, a> + b is the likelihood up to a term of x alone: equal differences between two h
    h2 = A.decode_raw(model, p, jnp.asarray(rng.normal(size=3)))
    for m in (
        model,
        A.ABSModel(num_classes=2, event_shape=(10,), latent_dim=3, hidden=(), sigma=0.3),
    ):
        (a1, o1), (a2, o2) = A.bound.linear_terms(m, h), A.bound.linear_terms(m, h2)
        ll = lambda hh: A.bound.log_likelihood(m, jnp.asarray(x), hh)  # noqa: E731
        lin = float(jnp.dot(jnp.asarray(x), a1 - a2) + o1 - o2)
        assert lin == pytest.approx(float(ll(h) - ll(h2)), rel=1e-9)


def test_laplace_correction_is_the_hessian_log_det_for_linear_logits(x64):
    """With logits linear in z the Gauss-Newton weight is the exact Hessian of -log p(x | z)."""
    model, p, _, _ = _bernoulli_linear()
    rng = np.random.default_rng(2)
    x, z = jnp.asarray(rng.random(10)), jnp.asarray(rng.normal(size=3))
    raw = lambda zz: A.decode_raw(model, p, zz)  # noqa: E731
    hess = jax.hessian(lambda zz: A.bound.log_joint(model, x, raw(zz), zz))(z)
    want = 1.5 * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(-np.asarray(hess))[1]
    got = A.bound.laplace_correction(model, raw(z), jax.jacfwd(raw)(z))
    assert float(got) == pytest.approx(want, rel=1e-10)


def test_latent_search_reaches_the_closed_form_log_likelihood():
    model, params, _, _, exact = _linear_model()
    x = np.random.default_rng(2).normal(size=(4, 12)).astype(np.float32)
    bank = A.latent_bank(model, params, n=64, key=jax.random.key(0))
    opts = A.LatentOptions(steps=300, lr=0.05, encoder_start=False)
    res = A.class_bounds(model, params, bank, jnp.asarray(x), options=opts)
    truth = np.array([[exact(xi, c) for c in range(2)] for xi in x])
    np.testing.assert_allclose(np.asarray(res.score), truth, atol=5e-3)
    # without the Laplace term the score is the log joint at the optimum, not log p(x | c)
    assert np.all(np.abs(np.asarray(res.log_joint) - truth) > 0.1)
    no_steps = A.class_bounds(model, params, bank, jnp.asarray(x), options=A.LatentOptions(steps=0))
    assert np.all(np.asarray(no_steps.score) <= truth + 1e-3)  # a bank latent: still a bound


def _small_model():
    model = A.ABSModel(num_classes=3, event_shape=(4, 4, 1), latent_dim=2, hidden=(8,),
                       encoder_hidden=(8,), sigma=0.3)  # fmt: skip
    return model, A.init_params(model, key=jax.random.key(0))


def test_latent_search_is_batch_invariant():
    model, params = _small_model()
    bank = A.latent_bank(model, params, n=16, key=jax.random.key(1))
    x = jax.random.uniform(jax.random.key(2), (5, 4, 4, 1))
    opts = A.LatentOptions(steps=10, n_starts=2)
    f = jax.jit(lambda xb: A.class_bounds(model, params, bank, xb, options=opts).score)
    a = f(x[jnp.array([0, 1, 2])])
    b = f(x[jnp.array([0, 3, 4])])  # same row 0, other neighbours, same shape
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
    np.testing.assert_allclose(np.asarray(f(x[:1])[0]), np.asarray(a[0]), rtol=1e-5)


def test_scores_are_differentiable_through_the_unrolled_search(x64):
    """The attack view: d score / dx through the Adam steps matches central finite differences
    (the start selection is piecewise constant, so a small step does not cross it)."""
    model, params = _small_model()
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    bank = A.latent_bank(model, params, n=16, key=jax.random.key(1))
    opts = A.LatentOptions(steps=5, n_starts=1)
    x = jax.random.uniform(jax.random.key(2), (2, 4, 4, 1), jnp.float64)
    v = jax.random.normal(jax.random.key(3), x.shape, jnp.float64)
    f = lambda x: jnp.sum(A.class_bounds(model, params, bank, x, options=opts).score[:, 1])  # noqa: E731
    g = jax.grad(f)(x)
    h = 1e-5
    fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
    assert np.isfinite(np.asarray(g)).all()
    assert abs(float(fd) - float(jnp.vdot(g, v))) / float(jnp.linalg.norm(g)) < 1e-4


@pytest.mark.parametrize("members", [1, 2])
def test_training_resumes_bit_identically_after_a_kill(tmp_path, members):
    model = A.ABSModel(num_classes=3, event_shape=(4, 4, 1), latent_dim=2, hidden=(8,),
                       encoder_hidden=(8,), sigma=0.3, members=members)  # fmt: skip
    params = A.init_params(model, key=jax.random.key(0))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 4, 4, 1)).astype(np.uint8)
    labels = np.arange(30) % 3
    opts = A.ABSTrainOptions(n_iters=6, per_class=4, checkpoint_every=2, log_every=1,
                             disc_weight=1.0 if members == 1 else 0.0, margin=5.0)  # fmt: skip
    kw = dict(model=model, init_params=params, images=images, labels=labels, opts=opts,
              key=jax.random.key(3), progress=False)  # fmt: skip
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole, _ = A.train(workdir=str(tmp_path / "a"), **kw)

    class Killed(Exception):
        pass

    def kill(state):
        if int(state.step) == 5:  # after the checkpoint at step 4, before the one at 6
            raise Killed

    with pytest.raises(Killed):
        A.train(workdir=str(tmp_path / "b"), on_step=kill, **kw)
    resumed, summary = A.train(workdir=str(tmp_path / "b"), **kw)
    assert summary["start_step"] == 4 and int(resumed.step) == 6
    for u, v in zip(jax.tree_util.tree_leaves(whole.params),
                    jax.tree_util.tree_leaves(resumed.params), strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    rows = [json.loads(r) for r in open(tmp_path / "b" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_bad_options_name_the_argument():
    with pytest.raises(ValueError, match="latent_dim"):
        A.ABSModel(latent_dim=0)
    with pytest.raises(ValueError, match="steps"):
        A.LatentOptions(steps=-1)
    with pytest.raises(ValueError, match="training.per_class"):
        A.ABSTrainOptions(per_class=0)
    model, params = _small_model()
    bank = A.latent_bank(model, params, n=4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="x: expected"):
        A.class_bounds(model, params, bank, jnp.zeros((2, 5, 5, 1)), options=A.LatentOptions())


TINY = ["--config.training.n_iters=20", "--config.training.eval_every=10",
        "--config.training.eval_rows=20", "--config.model.hidden=(16,)",
        "--config.model.encoder_hidden=(16,)", "--config.training.checkpoint_every=10",
        "--config.eval.steps=5"]  # fmt: skip


@pytest.fixture(scope="module")
def abs_run(tmp_path_factory):
    """A digits ABS run at toy size (20 steps; a 5-step latent search in its eval section)."""
    from jaxrej.cli import main

    wd = str(tmp_path_factory.mktemp("abs") / "run")
    cfg = str(CONFIGS / "digits_abs.py")
    assert main(["train", "--config", cfg, "--workdir", wd, "--no-progress", *TINY]) == 0
    return wd


@pytest.mark.slow
def test_cli_train_and_score_digits(abs_run, tmp_path, capsys):
    from jaxrej.cli import main

    wd, cfg = abs_run, str(CONFIGS / "digits_abs.py")
    train = json.load(open(f"{wd}/train.json"))
    assert train["final_step"] == 20 and train["model"] == "abs"
    assert "eval_accuracy" in train["last_metrics"]
    np.savez(tmp_path / "noise.npz", images=np.random.default_rng(0).integers(0, 17, (10, 8, 8, 1)))
    score = ["score", "--workdir", wd, "--no-progress", "--limit", "30", "--config.eval.steps=5"]
    assert main([*score, "--ood", f"noise=npz:{tmp_path / 'noise.npz'}"]) == 0
    s = json.load(open(f"{wd}/score_test_limit30.json"))
    assert s["n"] == 30 and 0.0 <= s["accuracy"] <= 1.0 and s["checkpoint_step"] == 20
    assert 0.0 <= s["ood"]["noise"]["auroc"] <= 1.0
    z = np.load(f"{wd}/score_test_limit30.npz")
    assert z["class_logp"].shape == (30, 10)
    # the summary is what the saved bounds say (independent recomputation)
    lp, labels = z["class_logp"], z["labels"]
    np.testing.assert_array_equal(z["pred"], lp.argmax(1))
    assert s["accuracy"] == pytest.approx(np.mean(lp.argmax(1) == labels))
    lse = np.log(np.exp(lp - lp.max(1, keepdims=True)).sum(1)) + lp.max(1) - np.log(10)
    assert s["bound_nats"] == pytest.approx(lse.mean(), rel=1e-6)  # float32 logsumexp
    assert s["bound_nats_conditional"] == pytest.approx(lp[np.arange(30), labels].mean())
    # an eval override is honoured and tags the files' names (the run's own stay)
    assert main([*score[:5], "5", "--config.eval.bank_size=50"]) == 0
    s50 = json.load(open(f"{wd}/score_test_limit5_bank_size50.json"))
    assert s50["eval"]["bank_size"] == 50 and s50["n"] == 5
    for bad, msg in (("--scorer=ode", "--scorer"), ("--raw-params", "--raw-params"),
                     ("--config.eval.bank_size=0", "eval.bank_size")):  # fmt: skip
        assert main([*score, bad]) == 2
        assert msg in capsys.readouterr().err
    from jaxrej import scorers  # jaxrej evaluate finds the run as ABS, not as a score model

    assert scorers.find_runs(wd) == {"abs": wd}
    sc = scorers.load(wd, "abs", batch_size=4)
    x = np.random.default_rng(1).random((4, 8, 8, 1)).astype(np.float32)
    assert sc.class_scores(x).shape == (4, 10) and np.all(np.isfinite(sc.class_scores(x)))
    # a second train call with a different model refuses to touch the run
    assert main(["train", "--config", cfg, "--workdir", wd, "--no-progress", *TINY,
                 "--config.model.sigma=0.5"]) == 2  # fmt: skip
    assert "different config" in capsys.readouterr().err


@pytest.mark.slow
def test_abs_training_holds_out_the_rows_evaluate_fits_thresholds_on(abs_run, tmp_path):
    """data.val_fraction (digits_abs.py: 0.15) keeps the validation rows of `jaxrej evaluate`
    (the heads' stratified split, same seed) out of ABS training: its training rows are exactly
    the heads' fit rows, none of the 216 validation digits among them (without it, all 216 are);
    evaluate takes the run's fraction and notes nothing, and notes a run trained without it."""
    import shutil

    from jaxrej.abs.run import prepare
    from jaxrej.config import load_config, new_run
    from jaxrej.eval.heads import load_heads_data
    from jaxrej.eval.runs import _run_data

    def rows(images, scale):  # images as hashable rows on the levels 0..16
        return {
            np.rint(np.asarray(a, np.float64) * scale).astype(np.int8).tobytes() for a in images
        }

    cfg = load_config(str(CONFIGS / "digits_abs.py")).to_dict()
    assert cfg["data"]["val_fraction"] == 0.15
    heads = load_heads_data("digits", val_fraction=0.15, seed=cfg["seed"])
    val = rows(heads.val[0], 16)
    assert len(val) == 216
    train = rows(prepare(new_run(cfg)).train.images, 1)
    assert train == rows(heads.fit[0], 16) and not train & val
    leaky = {**cfg, "data": {**cfg["data"], "val_fraction": None}}
    assert val <= rows(prepare(new_run(leaky)).train.images, 1)
    settings, notes = _run_data({"heads": [], "sbgc": [], "abs": [abs_run]})
    assert settings["val_fraction"] == 0.15 and notes == []
    old = tmp_path / "old"  # a run trained before the hold-out: its config has none
    shutil.copytree(abs_run, old)
    c = json.load(open(old / "config.json"))
    c["data"]["val_fraction"] = None
    json.dump(c, open(old / "config.json", "w"))
    _, notes = _run_data({"heads": [], "sbgc": [], "abs": [str(old)]})
    assert len(notes) == 1 and "rows the runs trained on" in notes[0]


@pytest.mark.slow
def test_score_and_evaluate_give_an_abs_row_the_same_scores(abs_run, tmp_path, capsys):
    """`jaxrej score`'s saved ABS bounds (and its summary) equal the clean-table scores `jaxrej
    evaluate` computes (jaxrej.eval.runs.load_scorers, eval.protocol) of the same run and test
    rows: one scorer (jaxrej.abs.scorer.load_scorer) on the pixels k / (L - 1); batches of 4
    rows here and 100 there change nothing (the latent search is per row)."""
    from jaxrej import scorers
    from jaxrej.cli import main
    from jaxrej.eval import protocol, runs

    wd = abs_run
    assert main(["score", "--workdir", wd, "--limit", "9", "--no-progress",
                 "--config.eval.batch_size=4"]) == 0  # fmt: skip
    capsys.readouterr()
    found = scorers.find_runs(wd)
    data, _, _ = runs.eval_data(found, test=None, ood=None, limit=9)
    judges = runs.load_scorers(found, sbgc_batch=5)
    assert set(judges) == {"abs"} and judges["abs"].batch_size == 100
    got = protocol.population_scores(judges, {"test": data.test[0]},
                                     out_dir=str(tmp_path / "evaluate"), progress=False)  # fmt: skip
    got = got["abs"]["test"]
    z = np.load(f"{wd}/score_test_limit9_batch_size4.npz")
    s = json.load(open(f"{wd}/score_test_limit9_batch_size4.json"))
    np.testing.assert_array_equal(z["labels"], data.test[1])
    assert np.all(np.isfinite(got)) and z["ok"].all() and s["n_failed"] == 0
    np.testing.assert_allclose(got, z["class_logp"], rtol=0, atol=1e-4)
    assert s["accuracy"] == pytest.approx(np.mean(got.argmax(1) == data.test[1]))
    lse = np.log(np.exp(got - got.max(1, keepdims=True)).sum(1)) + got.max(1) - np.log(10)
    assert s["bound_nats"] == pytest.approx(lse.mean(), abs=1e-4)


def test_an_abs_config_becomes_options_at_the_boundary():
    """jaxrej.config turns an ABS config into ABSModel / ABSTrainOptions / ABSEval once; a bad
    field is named before any data is loaded (training) or once the data is known (model)."""
    from jaxrej.config import load_config, new_run

    cfg = load_config(str(CONFIGS / "digits_abs.py"), ["--config.model.members=2"]).to_dict()
    new = new_run(cfg)
    run = new.spec(num_classes=10, n_levels=17, event_shape=(8, 8, 1))
    assert run.kind == "abs" and run.net.members == 2 and run.net.event_shape == (8, 8, 1)
    assert (
        run.training.n_iters == cfg["training"]["n_iters"]
        and run.eval.steps == cfg["eval"]["steps"]
    )
    with pytest.raises(ValueError, match=r"training: unknown field\(s\) \['n_iter'\]"):
        new_run({**cfg, "training": {**cfg["training"], "n_iter": 3}})
    bad = new_run({**cfg, "model": {**cfg["model"], "width": 3}})
    with pytest.raises(ValueError, match=r"model: unknown field\(s\) \['width'\]"):
        bad.spec(num_classes=10, n_levels=17, event_shape=(8, 8, 1))
