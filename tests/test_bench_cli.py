"""`jaxrej bench`: name resolution, errors, every benchmark's quick mode, and benchmarks end to
end on toy problems."""

import importlib
import importlib.util
import json
import os

import numpy as np
import pytest

from jaxrej import cli
from jaxrej.commands import bench

pytestmark = pytest.mark.slow


def test_available_lists_the_benchmarks_and_not_the_helpers():
    names = bench.available()
    for n in (
        "solver_tolerance",
        "hutchinson",
        "adjoint",
        "scaling",
        "likelihood_speed",
        "rk_skip",
    ):
        assert n in names
    for helper in ("__init__", "report", "trained"):
        assert helper not in names


def test_a_benchmark_defines_main_and_writes_a_report(tmp_path):
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    files = {
        "__init__.py": "",
        "real.py": "from benchmarks.report import write_report\n\ndef main(argv=None):\n    pass\n",
        "helper.py": "import os\n\ndef main(argv=None):  # a tool, writes no results\n    pass\n",
        "library.py": "from benchmarks.report import write_report\n\ndef run():\n    pass\n",
        "_private.py": "from benchmarks.report import write_report\n\ndef main():\n    pass\n",
        "notes.txt": "def main(",
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    assert bench.available(str(tmp_path)) == ["real"]


def test_results_path_follows_results_dir_and_out():
    default = os.path.join("/repo", "benchmarks", "results")
    assert bench.results_path("/repo", "scaling", ["--quick"]) == f"{default}/scaling.json"
    assert bench.results_path("/repo", "scaling", ["--results-dir", "/x"]) == "/x/scaling.json"
    assert (
        bench.results_path("/repo", "adjoint", ["--results-dir=/x", "--out", "a2"]) == "/x/a2.json"
    )


def test_unknown_name_is_a_clear_error(capsys):
    assert cli.main(["bench", "no_such_bench"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'no_such_bench'" in err
    assert "solver_tolerance" in err and "scaling" in err  # the available ones are listed


def test_hutchinson_quick_through_the_cli(tmp_path, capsys):
    # Toy Gaussian data: the exact score's Jacobian is c(t) * I for every class, so a Rademacher
    # estimate (e^T c I e = c D) is exact, a Gaussian one is not, and probes shared across the
    # classes of an example give every class the same error (the argmax margin is untouched).
    rc = cli.main(["bench", "hutchinson", "--quick", "--n", "6", "--results-dir", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.rindex("\n{\n") + 1 :])  # the summary: printed last
    assert summary["results"] == str(
        tmp_path / "hutchinson.json"
    )  # where it wrote, not the default
    out = json.loads((tmp_path / "hutchinson.json").read_text())
    assert (tmp_path / "hutchinson.md").read_text().startswith("Device: ")
    assert (tmp_path / "hutchinson.png").stat().st_size > 0
    rows = out["rows"]
    assert rows[0]["divergence"] == "exact" and rows[0]["err_rms"] == 0.0
    for r in rows[1:]:
        assert r["failed"] == 0
        if r["divergence"] == "rademacher":
            assert r["err_rms"] < 1e-3
        else:
            assert r["err_rms"] > 0.05
            if r["probes"] == "shared":
                assert r["margin_err_rms"] < 1e-3
            else:
                assert r["margin_err_rms"] > 0.05
    # Gaussian errors shrink with more probes (1 vs 4 probes, same examples).
    g = {(r["n_probes"], r["probes"]): r["err_rms"] for r in rows if r["divergence"] == "gaussian"}
    assert g[(4, "shared")] < g[(1, "shared")]
    # Pointwise: Rademacher Hutchinson is exact on c(t) I; Hutch++ is exact once its sketch spans
    # R^D (M = 12 products, 4 sketch vectors, D = 4) and not before (its projected probes are no
    # longer +-1).
    for r in out["pointwise"]:
        assert r["hutchinson_var"] < 1e-10
        assert (r["hutchpp_var"] < 1e-8) == (r["products"] // 3 == 4)


def test_recommendation_is_the_loosest_setting_stable_under_tightening():
    from benchmarks.solver_tolerance import recommend

    def row(solver, tol, agree, nfe):
        return dict(solver=solver, tol=tol, decision_agree=agree, failed=0, nfe_mean=nfe,
                    logp_err_max=0.0)  # fmt: skip

    rows = [
        row("tsit5", 1e-2, 1.0, 40),  # passes, but 1e-3 below fails: not stable
        row("tsit5", 1e-3, 0.97, 80),
        row("tsit5", 1e-4, 1.0, 150),
        row("tsit5", 1e-5, 1.0, 350),
        row("dopri8", 1e-2, 0.9, 100),
        row("dopri8", 1e-3, 1.0, 200),
        row("dopri8", 1e-4, 1.0, 300),
    ]
    rec = recommend(rows, ("tsit5", "dopri8"))
    assert (rec["solver"], rec["rtol"]) == ("tsit5", 1e-4)
    assert recommend([row("tsit5", 1e-2, 0.5, 1)], ("tsit5",)) is None


def test_flips_counts_label_and_reject_changes():
    from benchmarks.solver_tolerance import flips

    truth = (np.array([0, 1, 2, 3]), np.array([False, False, True, True]))
    other = (np.array([0, 2, 1, 3]), np.array([False, False, True, False]))
    # row 1: accepted with another label (flip); row 2: rejected in both (no flip, label moot);
    # row 3: rejected -> accepted (flip).
    np.testing.assert_array_equal(flips(other, truth), [False, True, False, True])


@pytest.mark.parametrize("name", bench.available())
def test_every_import_inside_every_benchmark_resolves(name):
    """Benchmarks import the library inside their functions, where a renamed or deleted module
    only shows up when the benchmark runs: every `from jaxrej... / benchmarks... import x` and
    `import jaxrej...` of the module's source, at any depth, names a module that imports and an
    attribute (or submodule) that exists."""
    import ast

    import benchmarks

    path = os.path.join(os.path.dirname(benchmarks.__file__), f"{name}.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    checked = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in ("jaxrej", "benchmarks"):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                ok = hasattr(module, alias.name) or importlib.util.find_spec(
                    f"{node.module}.{alias.name}"
                )
                assert ok, f"{name}.py line {node.lineno}: {node.module} has no {alias.name!r}"
                checked += 1
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("jaxrej", "benchmarks"):
                    importlib.import_module(alias.name)
                    checked += 1
    assert checked  # every benchmark uses the library


def test_adjoint_quick_gradients_agree_with_diffrax(tmp_path):
    """The toy run end to end: every adjoint's input gradient is finite and equals the reference
    (autodiff through diffrax's own checkpointed solve) up to the solver's tolerance."""
    from benchmarks import adjoint

    out = adjoint.main(
        ["--quick", "--tol", "1e-4", "--repeats", "1", "--results-dir", str(tmp_path)]
    )
    assert (tmp_path / "adjoint.md").read_text().startswith("Device: ")
    assert {r["adjoint"] for r in out["rows"]} == {"checkpoint", "backsolve", "diffrax"}
    for r in out["rows"]:
        assert r["grad_ok"]
        bound = (
            1e-4 if r["adjoint"] == "diffrax" else 1e-2
        )  # same discrete map vs continuous adjoint
        assert r["grad_rel_diff_vs_checkpoint"] < bound


def test_scaling_quick_sharded_equals_unsharded(tmp_path):
    from benchmarks import scaling

    out = scaling.main(["--quick", "--repeats", "1", "--results-dir", str(tmp_path)])
    assert out["classes"] and all(r["sharded_max_abs_diff"] < 1e-4 for r in out["classes"])
    assert all(r["ok"] for r in out["event_dim"])


def test_rk_skip_quick_same_method_fewer_divergences(tmp_path):
    """The toy run end to end: with fixed steps jaxrej's step and diffrax's give the same log p
    (float32 rounding) from 5 of 6 (Dopri5) and 9 of 13 (Dopri8) divergences per step."""
    from benchmarks import rk_skip

    out = rk_skip.main(["--quick", "--repeats", "1", "--results-dir", str(tmp_path)])
    assert (tmp_path / "rk_skip.md").read_text().startswith("Device: ")
    fixed = {r["solver"]: r for r in out["rows"] if r["steps"] == "fixed"}
    n = rk_skip.N_FIXED
    assert fixed["dopri5"]["divergences_diffrax"] == 1 + 6 * n
    assert fixed["dopri5"]["divergences_jaxrej"] == 1 + 5 * n
    assert fixed["dopri8"]["divergences_jaxrej"] == 1 + 9 * n
    for r in out["rows"]:
        assert r["max_abs_dlogp"] < (1e-3 if r["steps"] == "fixed" else 5e-2), r
