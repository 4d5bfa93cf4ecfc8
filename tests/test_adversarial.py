"""The adversarial protocol (jaxrej.eval.adversarial) on planted scorers and attacks whose outcome
is known by construction: the judge, not a label-aware attack view, decides every number; the
per-example worst case over eps is monotone where the independent runs are not; the
fooled-and-accepted rate is a per-example union, not the max of the attacks' rates; solver
failures get their own column; every row carries n and a Wilson interval."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from scipy import stats

from jaxrej import attacks
from jaxrej.eval import adversarial as adv
from jaxrej.eval.protocol import EvalData, EvalOptions, evaluate
from jaxrej.scorers import AttackView, Scorer

C = 4


def _pixels(y, *, flag=None, rng=None):
    """(N, 2, 4, 1) images: pixel c of the first row holds class c's evidence (0.5 for the label,
    0.45 for the others, plus small noise); pixel 4 (second row) a flag in {0, 1}."""
    n = len(y)
    x = np.full((n, 8), 0.45, np.float32)
    x[np.arange(n), y] = 0.5
    if rng is not None:
        x[:, :C] += rng.uniform(-0.01, 0.01, (n, C)).astype(np.float32)
    x[:, 4] = 0.0 if flag is None else flag
    return x.reshape(n, 2, 4, 1)


def pixel_judge(x):
    """Class scores (B, C) = 10 x the first C pixels: label-blind."""
    return 10.0 * x.reshape(x.shape[0], -1)[:, :C]


def _scorer(view=None, fn=pixel_judge, **kw):
    return Scorer(name="planted", fn=fn, num_classes=C, batch_size=8, settings="planted", view=view,
                  **kw)  # fmt: skip


def _fitted(scorer, rng):
    yv = np.tile(np.arange(C), 10).astype(np.int32)
    return scorer.fit_thresholds(_pixels(yv, rng=rng), yv, percentiles=(1.0,))


def _push(x, y, amount, mask=None):
    """x with pixel (y + 1) mod C raised by `amount` where mask (B,) holds (default: all)."""
    b = x.shape[0]
    flat = x.reshape(b, -1)
    m = jnp.ones(b, bool) if mask is None else mask
    hot = jax.nn.one_hot((y + 1) % C, flat.shape[1]) * jnp.where(m, amount, 0.0)[:, None]
    return (flat + hot).reshape(x.shape)


def _result(fn, x, x_adv, y):
    s = fn(x_adv)
    return attacks.AttackResult(x_adv=x_adv, success=jnp.argmax(s, 1) != y,
                                margin=jnp.zeros(x.shape[0]), norm=jnp.zeros(x.shape[0]),
                                scores=s, loss=jnp.zeros(x.shape[0]))  # fmt: skip


def flaky(fn, x, y, *, key, eps, norm):
    """Moves every input across the boundary at eps < 0.15 and returns x itself above: an
    attack that gets weaker as its budget grows."""
    return _result(fn, x, _push(x, y, jnp.where(eps < 0.15, eps, 0.0)), y)


def only_flagged(fn, x, y, *, key, eps, norm):
    """Fools exactly the rows whose flag pixel is 1."""
    return _result(fn, x, _push(x, y, eps, x.reshape(x.shape[0], -1)[:, 4] > 0.5), y)


def only_unflagged(fn, x, y, *, key, eps, norm):
    return _result(fn, x, _push(x, y, eps, x.reshape(x.shape[0], -1)[:, 4] < 0.5), y)


def _opts(eps=(0.1, 0.2), **kw):
    return adv.AdversarialOptions(eps=eps, batch_size=8, **kw)


def test_worst_case_is_monotone_where_the_independent_runs_are_not():
    rng = np.random.default_rng(0)
    sc = _fitted(_scorer(), rng)
    y = np.arange(12, dtype=np.int32) % C
    x = _pixels(y, rng=rng)
    r = adv.evaluate_scorer(sc, x, y, clean_scores=sc.class_scores(x),
                            suite=[adv.AttackSpec(name="flaky", attack=flaky)], options=_opts(),
                            key=jax.random.key(0), log=lambda *_: None)  # fmt: skip
    ind = r["independent"]["p1"]
    assert ind["0.1"]["fooled_accepted"]["rate"] == 1.0
    assert ind["0.2"]["fooled_accepted"]["rate"] == 0.0  # the attack alone is not monotone ...
    assert r["independent_monotone"]["p1"] is False  # ... and the check says so
    assert [r["eps"][e]["p1"]["fooled_accepted"]["rate"] for e in ("0.1", "0.2")] == [1.0, 1.0]
    assert r["eps"]["0.2"]["p1"]["accuracy"]["rate"] == 0.0
    md = adv.markdown({"planted": adv.json_ready(r)}, title="L-inf")
    assert "| planted | flaky | every input | p1: **no**, tpr99: **no** |" in md


def test_fooled_and_accepted_is_a_per_example_union_not_the_max_of_rates():
    rng = np.random.default_rng(1)
    sc = _fitted(_scorer(), rng)
    y = np.arange(16, dtype=np.int32) % C
    flag = (np.arange(16) % 2).astype(np.float32)
    x = _pixels(y, flag=flag, rng=rng)
    suite = [adv.AttackSpec(name="a", attack=only_flagged),
             adv.AttackSpec(name="b", attack=only_unflagged)]  # fmt: skip
    for skip, judge in ((False, "every"), (True, "every"), (True, "best")):
        r = adv.evaluate_scorer(sc, x, y, clean_scores=sc.class_scores(x), suite=suite,
                                options=_opts(eps=(0.1,), skip_fooled=skip, judge=judge),
                                key=jax.random.key(0), log=lambda *_: None)  # fmt: skip
        if not skip:
            per_attack = [
                np.mean(r["_records"][(0.1, k)]["level"]["p1"] == adv.FOOLED) for k in "ab"
            ]
            assert per_attack == [0.5, 0.5]  # each attack alone: half the rows
        else:
            assert r["attacks"]["0.1"]["b"]["n_run"] == 8  # b only attacks the rows a left
        assert r["eps"]["0.1"]["p1"]["fooled_accepted"]["rate"] == 1.0  # their union: all


@pytest.mark.parametrize("judge", ["every", "best"])
def test_the_judge_not_the_label_aware_view_decides_and_clean_accuracy_is_the_clean_tables(
    tmp_path, judge
):
    """A planted label-aware view: it adds 100 to the true class (it is never fooled and calls
    every clean row correct). The judge (label-blind) is wrong on a quarter of the rows. The
    adversarial table's clean accuracy and rejection equal the clean table's (`protocol.evaluate`
    on the same rows), not the view's."""
    rng = np.random.default_rng(2)
    seen = []

    def view(labels):
        seen.append(labels)
        return AttackView(lambda x: pixel_judge(x) + 100.0 * jax.nn.one_hot(labels, C),
                          label_aware=True)  # fmt: skip

    sc = _scorer(view=view)
    yv = np.tile(np.arange(C), 10).astype(np.int32)
    y = np.arange(16, dtype=np.int32) % C
    x = _pixels(y, rng=rng)
    y_judged = y.copy()
    y[::4] = (y[::4] + 2) % C  # the judge is wrong on these rows: its label is another class
    data = EvalData(val=(_pixels(yv, rng=rng), yv), test=(x, y), ood={})
    rep = evaluate({"planted": sc}, data, options=EvalOptions(percentiles=(1.0,), interpolate=()),
                   out_dir=str(tmp_path), progress=False)  # fmt: skip
    clean = rep["scorers"]["planted"]["clean"]
    fitted = sc.fit_thresholds(data.val[0], yv, percentiles=(1.0,))
    with np.load(tmp_path / "scores" / "planted" / "test.npz") as z:
        cached = z["scores"]
    suite = [adv.AttackSpec(name="apgd-ce", attack=attacks.apgd, kwargs=(("steps", 5),))]
    r = adv.evaluate_scorer(fitted, x, y, clean_scores=cached, suite=suite,
                            options=_opts(judge=judge), key=jax.random.key(0),
                            log=lambda *_: None)  # fmt: skip
    assert clean["accuracy"] == 0.75 == r["clean"]["p1"]["accuracy"]["rate"]
    assert r["clean"]["p1"]["rejected"]["rate"] == clean["p1"]["rejection_rate"]
    assert np.mean(np.argmax(cached, 1) == y_judged) == 1.0  # the judge: argmax of its pixels
    assert seen and all(np.asarray(s).shape == (8,) for s in seen)  # the view got the labels
    e = r["eps"]["0.2"]["p1"]
    assert e["view_success"] == 0.0  # the view never sees a mistake ...
    assert e["accuracy"]["rate"] <= 0.75  # ... the judge's numbers are reported


def test_solver_failures_get_their_own_column_and_count_as_wrong_and_rejected():
    rng = np.random.default_rng(3)

    def judge(x):  # fails (NaN) where any pixel exceeds 0.52
        s = pixel_judge(x)
        return jnp.where(jnp.max(x.reshape(x.shape[0], -1), 1, keepdims=True) > 0.52, jnp.nan, s)

    sc = _fitted(_scorer(fn=judge), rng)
    y = np.arange(8, dtype=np.int32) % C
    x = _pixels(y, rng=rng)
    r = adv.evaluate_scorer(sc, x, y, clean_scores=sc.class_scores(x),
                            suite=[adv.AttackSpec(name="b", attack=only_unflagged)],
                            options=_opts(eps=(0.1,)), key=jax.random.key(0),
                            log=lambda *_: None)  # fmt: skip
    e = r["eps"]["0.1"]["p1"]
    assert e["failures"] == 8 and e["fooled_accepted"]["k"] == 0
    assert e["rejected"]["rate"] == 1.0 and e["accuracy"]["rate"] == 0.0
    assert "| 8 |" in adv.markdown({"planted": adv.json_ready(r)}, title="L-inf")


def test_rates_carry_n_and_the_wilson_interval_of_scipy():
    lv = np.array([0] * 7 + [1] * 2 + [2] + [3] * 3, np.int8)
    r = adv.rates(lv)
    assert r["n"] == 13
    for name, k in (("accuracy", 9), ("rejected", 3), ("fooled_accepted", 3)):
        ci = stats.binomtest(k, 13).proportion_ci(0.95, method="wilson")
        assert r[name]["k"] == k
        np.testing.assert_allclose(r[name]["ci"], [ci.low, ci.high], rtol=1e-9)
    assert adv.cell(r["fooled_accepted"]).startswith("23.1 [")


def test_levels_and_worst_case_by_hand():
    y = np.array([0, 1, 2, 3])
    lv = adv.levels(pred=[0, 1, 0, 0], accepted=[True, False, False, True],
                    ok=[True, True, True, True], y=y)  # fmt: skip
    np.testing.assert_array_equal(lv, [0, 1, 2, 3])
    np.testing.assert_array_equal(adv.levels([0], [True], [False], [0]), [2])  # failed solve
    w = adv.worst_case(np.array([0, 1]), [np.array([3, 0]), np.array([0, 2])])
    np.testing.assert_array_equal(w[0], [3, 1])
    np.testing.assert_array_equal(w[1], [3, 2])


def test_default_suite_on_a_linear_scorer_breaks_what_the_linear_truth_says():
    """A linear classifier s = W x: at eps above the smallest L-inf distance to a boundary,
    min_c (s_y - s_c) / ||W_y - W_c||_1, every row is misclassified by the suite; below it none
    is (a linear classifier's exact worst case). Targeted and reject-aware attacks run."""
    rng = np.random.default_rng(4)
    w = jnp.asarray(rng.normal(size=(8, C)), jnp.float32)

    def linear(x):
        return x.reshape(x.shape[0], -1) @ w

    sc = Scorer(name="linear", fn=linear, num_classes=C, batch_size=8, settings="lin")
    xv = rng.uniform(0.3, 0.7, (80, 2, 4, 1)).astype(np.float32)
    sc = sc.fit_thresholds(xv, np.asarray(jnp.argmax(linear(xv), 1), np.int32), percentiles=(1.0,))
    x = rng.uniform(0.3, 0.7, (16, 2, 4, 1)).astype(np.float32)
    y = np.asarray(jnp.argmax(linear(x), 1), np.int32)
    s = np.asarray(linear(x))
    wn = np.asarray(w)
    dist = np.array([min((s[i, y[i]] - s[i, c]) / np.abs(wn[:, y[i]] - wn[:, c]).sum()
                         for c in range(C) if c != y[i]) for i in range(16)])  # fmt: skip
    lo, hi = 0.5 * dist.min(), min(1.5 * dist.max(), 0.29)
    suite = adv.default_suite(num_classes=C, steps=20, square_queries=0, loop="python")
    assert [a.name for a in suite] == ["pgd-ce", "apgd-ce", "apgd-dlr", "apgd-t3", "apgd-reject"]
    assert all(dict(a.kwargs)["loop"] == "python" for a in suite)
    r = adv.evaluate_scorer(sc, x, y, clean_scores=s, suite=suite,
                            options=_opts(eps=(lo, hi), rules=("p1",)), key=jax.random.key(0),
                            log=lambda *_: None)  # fmt: skip
    rows = list(r["eps"].values())
    assert rows[0]["p1"]["accuracy"]["rate"] == 1.0  # below every boundary: nothing to find
    reach = dist <= hi  # the rows whose boundary lies inside the larger ball (the clip [0, 1]
    # never binds: x in [0.3, 0.7], eps < 0.3)
    assert rows[1]["p1"]["accuracy"]["k"] == int((~reach).sum())
    assert set(r["attacks"][f"{hi:g}"]) == {
        "pgd-ce",
        "apgd-ce",
        "apgd-dlr",
        "apgd-t3",
        "apgd-reject@p1",
    }


def test_options_validate():
    with pytest.raises(ValueError, match="norm"):
        adv.AdversarialOptions(eps=(0.1,), norm="l3")
    with pytest.raises(ValueError, match="eps"):
        adv.AdversarialOptions(eps=())
    assert adv.AdversarialOptions(eps=(0.3, 0.1)).eps == (0.1, 0.3)
    with pytest.raises(ValueError, match="eot_draws"):  # one draw would compare a run with itself
        adv.AdversarialOptions(eps=(0.1,), eot_draws=1)
    sc = _fitted(_scorer(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="rules"):
        adv.evaluate_scorer(sc, np.zeros((1, 2, 4, 1)), np.zeros(1, int), clean_scores=np.zeros((1, C)),
                            suite=[], options=_opts(rules=("p7",)), key=jax.random.key(0))  # fmt: skip


@pytest.mark.parametrize("masked", [False, True])
def test_masking_checks_fail_on_a_quantised_scorer_and_pass_on_the_honest_one(masked):
    """A linear classifier on pixels rounded to 1/4 (zero gradient almost everywhere) against
    the same classifier unrounded: on the quantised one APGD finds nothing while Square (no
    gradient) does, and the unbounded attack from the clean input fails -- both checks FAIL and
    the rows are marked; on the honest one every check passes."""
    rng = np.random.default_rng(5)
    w = jnp.asarray(rng.normal(size=(8, C)), jnp.float32)

    def judge(x):
        z = x.reshape(x.shape[0], -1)
        return (jnp.round(z * 4) / 4 if masked else z) @ w

    sc = Scorer(name="lin", fn=judge, num_classes=C, batch_size=16, settings="")
    xv = rng.uniform(0.2, 0.8, (64, 2, 4, 1)).astype(np.float32)
    sc = sc.fit_thresholds(xv, np.asarray(jnp.argmax(judge(xv), 1), np.int32), percentiles=(1.0,))
    x = rng.uniform(0.2, 0.8, (16, 2, 4, 1)).astype(np.float32)
    y = np.asarray(jnp.argmax(judge(x), 1), np.int32)
    suite = [adv.AttackSpec(name="apgd-ce", attack=attacks.apgd, kwargs=(("steps", 10),)),
             adv.AttackSpec(name="square", attack=attacks.square, gradient_free=True,
                            kwargs=(("queries", 200),))]  # fmt: skip
    r = adv.evaluate_scorer(sc, x, y, clean_scores=sc.class_scores(x), suite=suite,
                            options=_opts(eps=(0.1, 0.2, 0.3), rules=("p1",), unbounded=True),
                            key=jax.random.key(0), log=lambda *_: None)  # fmt: skip
    passed = {c["name"]: c["passed"] for c in r["checks"]}
    assert set(passed) == {"monotone", "gradient_free@0.1", "gradient_free@0.2",
                           "gradient_free@0.3", "unbounded"}  # fmt: skip
    md = adv.markdown({"lin": adv.json_ready(r)}, title="L-inf")
    if masked:
        assert not passed["unbounded"] and not passed["gradient_free@0.3"]
        assert "| lin (masked?) | p1 |" in md and "**FAIL**" in md
    else:
        assert all(passed.values()) and "masked?" not in md


def _linear_pair():
    """(honest, quantised, validation rows, attacked rows x, their labels y): a linear
    classifier on the pixels, and the same on pixels rounded to 1/4 (zero gradient almost
    everywhere)."""
    rng = np.random.default_rng(5)
    w = jnp.asarray(rng.normal(size=(8, C)), jnp.float32)
    honest = lambda x: x.reshape(x.shape[0], -1) @ w  # noqa: E731
    quantised = lambda x: jnp.round(x.reshape(x.shape[0], -1) * 4) / 4 @ w  # noqa: E731
    xv = rng.uniform(0.2, 0.8, (64, 2, 4, 1)).astype(np.float32)
    x = rng.uniform(0.2, 0.8, (16, 2, 4, 1)).astype(np.float32)
    return honest, quantised, xv, x, np.asarray(jnp.argmax(honest(x), 1), np.int32)


@pytest.mark.parametrize("masked", [False, True])
def test_transfer_check_fails_when_a_surrogates_inputs_beat_the_white_box_suite(masked):
    """The model is a linear classifier on pixels rounded to 1/4 (its gradient is zero almost
    everywhere, so APGD on it finds nothing); the surrogate is the same classifier unrounded.
    The surrogate's worst inputs (`_worst_x`), re-judged by the model, fool it where its own
    suite did not: the transfer check FAILS at the largest eps. With the honest model (the
    surrogate itself) transfer adds nothing and every transfer check passes."""
    honest, quantised, xv, x, y = _linear_pair()
    suite = [adv.AttackSpec(name="apgd-ce", attack=attacks.apgd, kwargs=(("steps", 10),))]
    opts = _opts(eps=(0.1, 0.3), rules=("p1",))

    def run(fn):
        sc = Scorer(name="lin", fn=fn, num_classes=C, batch_size=16, settings="")
        sc = sc.fit_thresholds(xv, np.asarray(jnp.argmax(fn(xv), 1), np.int32), percentiles=(1.0,))
        return sc, adv.evaluate_scorer(sc, x, y, clean_scores=sc.class_scores(x), suite=suite,
                                       options=opts, key=jax.random.key(0), log=lambda *_: None)  # fmt: skip

    _, surrogate = run(honest)
    assert surrogate["_worst_x"].shape == (2, *x.shape)
    model, result = run(quantised if masked else honest)
    checks = adv.transfer_checks(model, adv.json_ready(result), surrogate["_worst_x"], y,
                                 surrogate="lin")  # fmt: skip
    assert [c.name for c in checks] == ["transfer(lin)@0.1", "transfer(lin)@0.3"]
    if masked:
        assert not checks[-1].passed
        assert checks[-1].rates["transfer"] > checks[-1].rates["white_box"]
    else:
        assert all(c.passed for c in checks)
    with pytest.raises(ValueError, match="surrogate_x"):
        adv.transfer_checks(model, result, surrogate["_worst_x"][:1], y, surrogate="lin")


def test_evaluate_runs_the_transfer_check_from_a_head_onto_a_model_and_rereads_its_cache(tmp_path):
    """`jaxrej.eval.runs.adversarial` with a head ("msp": the honest linear classifier) and a
    model ("abs" here: the same classifier on quantised pixels, whose gradient is zero): the
    head's worst inputs are saved beside its JSON and re-judged by the model, whose transfer
    check FAILS and marks its rows; a second call reads both caches and gives the same checks,
    not a second copy, without judging again."""
    import types

    from jaxrej.eval.runs import AttackRunOptions, adversarial

    honest, quantised, xv, x, y = _linear_pair()
    judges = {}
    for name, fn in (("msp", honest), ("abs", quantised)):
        sc = Scorer(name=name, fn=fn, num_classes=C, batch_size=16, settings=name)
        judges[name] = sc.fit_thresholds(xv, np.asarray(jnp.argmax(fn(xv), 1), np.int32),
                                         percentiles=(1.0,))  # fmt: skip
    clean = {k: np.asarray(sc.class_scores(x)) for k, sc in judges.items()}
    opts = AttackRunOptions(n_model=16, linf_eps=(0.3,), l2_eps=(), steps=5, model_steps=5,
                            model_attacks=("apgd-ce",), square_queries=20, n_targets=1)  # fmt: skip
    data = types.SimpleNamespace(test=(x, y))
    logs = []
    first = adversarial(judges, data, clean_test=clean, options=opts, out_dir=str(tmp_path),
                        log=logs.append)  # fmt: skip
    assert os.path.isfile(tmp_path / "adversarial" / "linf_msp_worst.npz")
    checks = {c["name"]: c for c in first["report"]["linf"]["abs"]["checks"]}
    assert not checks["transfer(msp)@0.3"]["passed"]
    assert "| abs (masked?) |" in first["markdown"]

    def never(x):
        raise AssertionError("the cached transfer check was computed again")

    cached = judges | {"abs": dataclasses.replace(judges["abs"], fn=never)}
    second = adversarial(cached, data, clean_test=clean, options=opts, out_dir=str(tmp_path),
                         log=logs.append)  # fmt: skip
    assert second["report"]["linf"]["abs"]["checks"] == first["report"]["linf"]["abs"]["checks"]
    # --attack-scorers: only the named scorers are attacked (no surrogate: no transfer check)
    only = adversarial(judges, data, clean_test=clean, options=dataclasses.replace(opts, scorers=("abs",)),
                       out_dir=str(tmp_path / "only"), log=logs.append)  # fmt: skip
    assert set(only["report"]["linf"]) == {"abs"}
    assert not any(
        c["name"].startswith("transfer(") for c in only["report"]["linf"]["abs"]["checks"]
    )
    with pytest.raises(ValueError, match="--attack-scorers"):
        adversarial(judges, data, clean_test=clean, options=dataclasses.replace(opts, scorers=("x",)),
                    out_dir=str(tmp_path / "x"), log=logs.append)  # fmt: skip


class _NoisyLinear(struct.PyTreeNode):
    """An attack view s(x; key) = x W + 0.02 sin(omega x Z), Z ~ N(0, I) per call: its values
    stay within 0.02 of the judge's x W, its one-draw gradient carries 0.02 omega Z cos(.),
    which averages to 0 over draws (EOT recovers W)."""

    w: jax.Array
    omega: jax.Array

    def __call__(self, x, key):
        flat = x.reshape(x.shape[0], -1)
        z = jax.random.normal(key, (flat.shape[1], C), flat.dtype)
        return flat @ self.w + 0.02 * jnp.sin(self.omega * (flat @ z))


@pytest.mark.parametrize("masked", [False, True])
def test_evaluate_scorer_runs_the_eot_check_for_a_stochastic_view_and_it_fails_when_masked(masked):
    """The judge is a linear classifier x W; its attack view adds randomness drawn afresh at every
    attack step. With omega = 500 the one-draw gradient is noise: PGD with one draw per step
    fools far fewer rows than with 8 draws averaged (EOT), and `evaluate_scorer`'s eot check
    FAILS; with omega = 1 both agree and it passes. A deterministic view gets no eot check."""
    rng = np.random.default_rng(5)
    w = jnp.asarray(rng.normal(size=(8, C)), jnp.float32)
    judge = lambda x: x.reshape(x.shape[0], -1) @ w  # noqa: E731
    noisy = _NoisyLinear(w, jnp.float32(500.0 if masked else 1.0))
    view = lambda labels: AttackView(noisy, stochastic=True)  # noqa: E731
    x = rng.uniform(0.2, 0.8, (64, 2, 4, 1)).astype(np.float32)
    y = np.asarray(jnp.argmax(judge(x), 1), np.int32)
    # each row's smallest L-inf radius that flips the linear judge (margin / ||w_y - w_j||_1)
    s, wn = np.asarray(judge(x)), np.asarray(w)
    gap = np.where(np.arange(C) == y[:, None], np.inf, s[np.arange(64), y][:, None] - s)
    l1 = np.abs(wn[:, y].T[:, :, None] - wn[None]).sum(1)  # (N, C)
    eps = tuple(float(e) for e in np.quantile((gap / l1).min(1), [0.3, 0.5, 0.7]) * 1.2)
    suite = [adv.AttackSpec(name="pgd", attack=attacks.pgd,
                            kwargs=(("steps", 20), ("loss", "margin")))]  # fmt: skip
    xv = rng.uniform(0.2, 0.8, (64, 2, 4, 1)).astype(np.float32)
    checks = {}
    for name, v in (("stochastic", view), ("deterministic", None)):
        sc = Scorer(name="lin", fn=judge, num_classes=C, batch_size=64, settings="", view=v)
        sc = sc.fit_thresholds(xv, np.asarray(jnp.argmax(judge(xv), 1), np.int32),
                               percentiles=(1.0,))  # fmt: skip
        r = adv.evaluate_scorer(sc, x, y, clean_scores=sc.class_scores(x), suite=suite,
                                options=adv.AdversarialOptions(eps=eps, rules=("p1",), batch_size=64),
                                key=jax.random.key(0), log=lambda *_: None)  # fmt: skip
        checks[name] = {c["name"].split("@")[0]: c for c in r["checks"]}
    assert "eot(pgd, 8 draws)" not in checks["deterministic"]
    c = checks["stochastic"]["eot(pgd, 8 draws)"]
    if masked:
        assert not c["passed"] and c["rates"]["eot"] > c["rates"]["plain"] + 0.1, c
    else:
        assert c["passed"], c
