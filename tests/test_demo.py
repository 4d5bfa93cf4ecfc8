"""`jaxrej demo` is the three commands in a row: it hands the library (`jaxrej.demo.run_demo` ->
`train_run`, `run_heads`, `evaluate_workdir`) exactly what `jaxrej train`, `jaxrej heads` and
`jaxrej evaluate` hand it for the demo's command lines, so its output files are theirs; a heads
run already in WORKDIR/heads is reused. The library calls are recorded, not run (a demo takes
20 minutes)."""

import argparse
import inspect
import json
import os

import pytest

from jaxrej import cli
from tests.conftest import CONFIGS

# the command lines the demo stands for (README; jaxrej/commands/demo.py's module doc)
TRAIN = ["train", "--config", str(CONFIGS / "digits_sbgc.py")]
HEADS = ["heads", "--config", str(CONFIGS / "digits_heads.py")]
EVALUATE = ["evaluate", "--n-corrupt", "7", "--n-ood", "9", "--attack-n", "5",
            "--attack-sbgc-n", "11", "--attack-sbgc-steps", "3", "--attack-sbgc-norms", "linf",
            "--attack-sbgc-suite", "apgd-ce,apgd-t,apgd-reject,square",
            "--corruption-scale", "1", "--sbgc-batch", "20"]  # fmt: skip
DEMO = ["demo", "--n-corrupt", "7", "--n-ood", "9", "--attack-n", "5", "--attack-sbgc-n", "11",
        "--attack-sbgc-steps", "3", "--no-progress"]  # fmt: skip


@pytest.fixture
def calls(monkeypatch):
    """The library calls of the commands and the demo, recorded: (name, workdir, keywords)."""
    import jaxrej.eval.heads
    import jaxrej.eval.runs
    import jaxrej.training.run

    out = []

    def record(module, name, result):
        sig = inspect.signature(getattr(module, name))

        def fn(*args, **kwargs):  # every argument by name, defaults filled in
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            out.append((name, dict(bound.arguments)))
            return dict(result)

        monkeypatch.setattr(module, name, fn)

    record(jaxrej.training.run, "train_run", {})
    record(jaxrej.eval.heads, "run_heads", {})
    record(jaxrej.eval.runs, "evaluate_workdir", {"out_dir": "x"})
    return out


def test_the_demo_makes_the_library_calls_of_its_three_commands(tmp_path, calls, capsys):
    wd = str(tmp_path / "demo")
    assert cli.main([*DEMO, "--workdir", wd]) == 0
    demo = list(calls)
    summary = json.loads(capsys.readouterr().out)
    assert summary["out_dir"] == "x" and set(summary["seconds"]) == {"train_s", "heads_s", "evaluate_s"}  # fmt: skip
    calls.clear()
    for argv in (TRAIN + ["--workdir", os.path.join(wd, "sbgc")],
                 HEADS + ["--workdir", os.path.join(wd, "heads")],
                 EVALUATE + ["--workdir", wd]):  # fmt: skip
        assert cli.main([*argv, "--no-progress"]) == 0
    commands = list(calls)
    assert [c[0] for c in demo] == ["train_run", "run_heads", "evaluate_workdir"]
    assert demo == commands  # same workdirs, configs, options, progress
    # the demo's evaluation folder is the one its README names
    from jaxrej.eval.runs import evaluate_stem

    kw = {k: v for k, v in demo[2][1].items() if k not in ("workdir", "sbgc_batch", "progress")}
    assert evaluate_stem(**kw) == ("evaluate_nc7_nood9_scale1_atk5_atksbgc11_atksteps3_"
                                   "atknormslinf_atksuiteapgd-ce-apgd-t-apgd-reject-square")  # fmt: skip


def test_a_finished_heads_run_is_reused(tmp_path, calls, capsys):
    from jaxrej.scorers.heads import HEADS_FILE

    wd = tmp_path / "demo"
    (wd / "heads").mkdir(parents=True)
    (wd / "heads" / HEADS_FILE).write_text("x")
    (wd / "heads" / "heads.json").write_text("{}")
    assert cli.main([*DEMO, "--workdir", str(wd)]) == 0
    assert [c[0] for c in calls] == ["train_run", "evaluate_workdir"]
    assert "heads already in" in capsys.readouterr().err


def test_the_demo_config_folder_is_checked(tmp_path, capsys):
    assert cli.main(["demo", "--workdir", str(tmp_path / "w"), "--configs", str(tmp_path)]) == 2
    assert "--configs: no digits_sbgc.py" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_demo_flags_parse():  # the defaults the README's numbers were made with
    from jaxrej.commands import demo

    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    a = p.parse_args([])
    assert (a.n_ood, a.n_corrupt, a.attack_n, a.attack_sbgc_n, a.attack_sbgc_steps) == (
        60, 12, 0, 64, 10)  # fmt: skip
