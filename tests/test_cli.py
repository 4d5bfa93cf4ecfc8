"""The one override parser (`jaxrej.config.apply_overrides`), used by train, heads and score."""

import ml_collections
import pytest

from jaxrej.config import apply_overrides, config_diff, flatten_config, load_config
from tests.conftest import CONFIGS


def _config():
    return {"seed": 0, "eval": {"rtol": 1e-4, "batch_size": 72, "divergence": "exact",
                                "screen": True, "shape": [8, 8], "path": None}}  # fmt: skip


def test_values_keep_their_field_types():
    c = apply_overrides(_config(), ["--config.eval.rtol=1e-3", "--config.eval.batch_size=4",
                                    "--config.eval.divergence=rademacher", "--config.eval.screen=False",
                                    "--config.eval.shape=(4, 4)", "--config.eval.path='x.npz'",
                                    "--config.seed=3"])  # fmt: skip
    assert c == {"seed": 3, "eval": {"rtol": 1e-3, "batch_size": 4, "divergence": "rademacher",
                                     "screen": False, "shape": [4, 4], "path": "x.npz"}}  # fmt: skip
    c = apply_overrides(_config(), ["--config.eval.rtol=1"])  # an int for a float field
    assert c["eval"]["rtol"] == 1.0 and isinstance(c["eval"]["rtol"], float)


@pytest.mark.parametrize(
    "item,message",
    [("--config.eval.batch_size=1.5", "expected a int like 72"),
     ("--config.eval.batch_size=True", "expected a int"),
     ("--config.eval.screen=1", "expected a bool"),
     ("--config.eval.rtol=fast", "expected a float"),
     ("--config.eval.nope=1", "no field 'nope'"),
     ("--config.nope.rtol=1", "no field 'nope'"),
     ("--eval.rtol=1", "overrides look like --config.a.b=value"),
     ("--config.eval.rtol", "overrides look like")],
)  # fmt: skip
def test_bad_overrides_name_themselves(item, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(_config(), [item])


def test_sections_limit_what_may_be_set():
    c = apply_overrides(_config(), ["--config.eval.rtol=0.01"], sections=("eval",))
    assert c["eval"]["rtol"] == 0.01
    for item in ("--config.seed=1", "--config.training.lr=1.0"):
        with pytest.raises(ValueError, match=r"only --config\.eval\.<field>=<value>"):
            apply_overrides(_config(), [item], sections=("eval",))


def test_flattened_keys_are_the_override_addresses():
    flat = flatten_config(_config())
    assert sorted(flat) == ["eval.batch_size", "eval.divergence", "eval.path", "eval.rtol",
                            "eval.screen", "eval.shape", "seed"]  # fmt: skip
    # each dotted key is the address an override sets, and the value is the field's
    c = apply_overrides(_config(), [f"--config.{k}={v!r}" for k, v in flat.items()])
    assert c == _config() and flatten_config(c) == flat


def test_config_diff_names_each_changed_key_and_reads_absent_as_none():
    """The one config comparison (train, ABS train, --init-from, gwin resume): dotted keys of the
    changed settings with (old, new); a tuple equals the list config.json stores; a key absent
    from one side equals None on the other (every reader uses .get), but no other value."""
    old = {"seed": 0, "model": {"hidden": 16, "widths": [8, 16], "extra": None},
           "data": {"dataset": "digits"}}  # fmt: skip
    assert config_diff(old, {"seed": 0, "model": {"hidden": 16, "widths": (8, 16)},
                             "data": {"dataset": "digits"}}) == {}  # fmt: skip
    new = {"seed": 1, "model": {"hidden": 32, "widths": (8, 32), "extra": 0},
           "data": {"dataset": "digits", "data_dir": "/d"}}  # fmt: skip
    assert config_diff(old, new) == {
        "data.data_dir": (None, "/d"),
        "model.extra": (None, 0),
        "model.hidden": (16, 32),
        "model.widths": ([8, 16], [8, 32]),
        "seed": (0, 1),
    }
    assert list(config_diff(old, new)) == sorted(config_diff(old, new))
    assert config_diff({"a": {"b": 1}}, {"a": 1}) == {"a": (None, 1), "a.b": (1, None)}


def test_load_config_applies_overrides_to_a_config_dict():
    c = load_config(str(CONFIGS / "digits_heads.py"), ["--config.reject.percentiles=(5.0,)"])
    assert isinstance(c, ml_collections.ConfigDict) and tuple(c.reject.percentiles) == (5.0,)
    with pytest.raises(ValueError, match="no such config file"):
        load_config(str(CONFIGS / "absent.py"))


def test_score_summary_warns_on_a_density_worse_than_uniform_and_label_blind_scores():
    """`jaxrej score`'s warnings (jaxrej.eval.run_scores) against closed forms: rows b_i + o_c
    (class offsets o shared by every row) have class spread std(o) and example spread std(b)
    exactly."""
    import numpy as np

    from jaxrej.eval.run_scores import LABEL_DEPENDENCE_MIN, summarize, warnings_for
    from jaxrej.metrics import label_dependence

    rng = np.random.default_rng(0)
    d, levels = 64, 17
    b = rng.normal(150.0, 20.0, 200)
    labels = rng.integers(0, 10, 200)
    for o_scale, blind in ((10.0, False), (1e-3, True)):
        o = rng.normal(0.0, o_scale, 10)
        lp = b[:, None] + o[None, :]
        ld = label_dependence(lp)
        assert ld["class_spread"] == pytest.approx(np.std(o), rel=1e-9)
        assert ld["example_spread"] == pytest.approx(np.std(b), rel=1e-9)
        s = summarize(lp, labels, event_shape=(8, 8, 1), n_levels=levels)
        w = " ".join(warnings_for(s))
        assert ("barely depend on the label" in w) == blind == (ld["ratio"] < LABEL_DEPENDENCE_MIN)
        if blind:  # a small ratio whose labels show the ranking works is not warned about
            s_ok = summarize(lp, np.argmax(lp, 1), event_shape=(8, 8, 1), n_levels=levels)
            assert s_ok["accuracy"] == 1.0 and "barely depend" not in " ".join(warnings_for(s_ok))
        # log p(x) ~ +150 nats over 64 dims, 17 levels: log2 17 - 150 / (64 ln 2) ~ 0.7 bits/dim
        assert s["bits_per_dim"] < np.log2(levels) and "uniform density" not in w
    # a density below the uniform one on the levels: log p(x) < 0 on [0, 1)^D means bpd > log2 L
    bad = np.full((5, 10), -1.0 * d)  # -1 nat per dimension
    s = summarize(bad, np.zeros(5, int), event_shape=(8, 8, 1), n_levels=levels)
    assert s["bits_per_dim"] == pytest.approx(1 / np.log(2) + np.log2(levels))
    assert any("worse than a uniform density" in x for x in warnings_for(s))
    # a failed row counts as wrong and is left out of the spreads; no labels: no accuracy
    lp = b[:, None] + rng.normal(0, 10, 10)[None, :]
    lp[0, 3] = np.nan
    s = summarize(lp, None, event_shape=(8, 8, 1), n_levels=levels)
    assert s["accuracy"] is None and s["n_failed"] == 1 and s["pred"][0] == -1
    assert s["label_dependence"]["example_spread"] == pytest.approx(np.std(lp[1:].mean(1)))


def test_result_file_names_keep_sets_and_limited_runs_apart():
    from jaxrej.eval.heads import heads_stem
    from jaxrej.training.workdir import score_stem

    names = {score_stem("test", 0), score_stem("test", 60),
             score_stem("fashion", 0), score_stem("ood_fashion", 60)}  # fmt: skip
    assert names == {
        "score_test",
        "score_test_limit60",
        "score_fashion",
        "score_ood_fashion_limit60",
    }
    assert heads_stem(None, None) == "heads"
    assert heads_stem("c=mnist_corrupted/fog", ["f=npz:f.npz", "kmnist"]) == (
        "heads_c_ood_f_kmnist"
    )


def test_evaluate_folder_names_every_option_off_its_default():
    import argparse

    from jaxrej.commands import evaluate

    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)

    def stem(*argv):
        return evaluate.result_stem(parser.parse_args(["--workdir", "w", *argv]))

    assert stem() == "evaluate"
    # the demo's sizes (jaxrej demo): each tag names the option and its value
    demo = ["--n-corrupt", "12", "--n-ood", "60", "--corruption-scale", "1"]
    assert stem(*demo) == "evaluate_nc12_nood60_scale1"
    assert stem("--severities", "1,5", "--corruptions", "fog,snow") == (
        "evaluate_corrupt-fog-snow_sev15"
    )
    # attack sizes matter only when attacking
    assert stem("--no-attack", "--attack-n", "5") == "evaluate_noattack"
    assert stem("--attack-n", "5", "--limit", "24") == "evaluate_limit24_atk5"
    assert stem("--attack-sbgc-unbounded") == "evaluate_atkunb"
    assert stem("--attack-fresh-probes") == "evaluate_atkfresh"
    assert stem("--attack-scorers", "abs, msp") == "evaluate_atkonly-abs-msp"
    assert stem("--attack-sbgc-queries", "1000") == "evaluate_atkq1000"
    with pytest.raises(ValueError, match="--attack-sbgc-queries"):
        stem("--attack-sbgc-queries", "0")
    # a skipped norm reads as skipped, not as radii
    assert stem("--l2-eps", "") == "evaluate_nol2"
    assert stem("--linf-eps", "", "--l2-eps", "1.5") == "evaluate_nolinf_l21.5"
    assert len({stem(), stem(*demo), stem("--no-attack"), stem("--n-ood", "60")}) == 4


def test_run_eval_reads_every_shipped_score_model_config_and_names_bad_fields():
    """`RunEval`: the eval section of each score-model config becomes options (its solve is the
    FlowSolve of those fields); an unknown, missing or bad field is named."""
    from jaxrej.config import RunEval
    from jaxrej.flow import FlowSolve

    for name in ("digits_sbgc.py", "mnist_sbgc.py"):
        e = load_config(str(CONFIGS / name)).to_dict()["eval"]
        ev = RunEval.from_dict(e)
        assert {k: getattr(ev, k) for k in e} == e  # every field kept, none invented
        assert ev.solve == FlowSolve(divergence=e["divergence"], n_probes=e["n_probes"],
                                     rtol=e["rtol"], atol=e["atol"], eps=e["eps"])  # fmt: skip
    e = load_config(str(CONFIGS / "digits_sbgc.py")).to_dict()["eval"]
    old = {k: v for k, v in e.items() if not k.startswith("elbo_") and k != "scorer"}
    assert RunEval.from_dict(old).scorer == "ode"  # a config from before the ELBO scorer
    for bad, named in [({**e, "screen_margin": 1.0}, "screen_margin"),
                       ({k: v for k, v in e.items() if k != "rtol"}, "rtol"),
                       ({**e, "divergence": "trace"}, "eval.divergence"),
                       ({**e, "elbo_n_times": 0}, "eval.elbo_n_times"),
                       ({**e, "chunk_size": -1}, "eval.chunk_size"),
                       ({**e, "eps": 1.5}, "eval.eps"),
                       ({**e, "batch_size": True}, "eval.batch_size")]:  # fmt: skip
        with pytest.raises(ValueError, match=named):
            RunEval.from_dict(bad)
