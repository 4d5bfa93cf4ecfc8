"""GWIN over seeds 0-4: settings chosen on validation rows, then the test table once.

    python -m benchmarks.gwin_seeds                  # seeds 0-4, every candidate of CANDIDATES
    python -m benchmarks.gwin_seeds --quick          # 2 seeds, a toy run: the protocol, not numbers

1. Choice. Every candidate of CANDIDATES (overrides of configs/digits_gwin.py) runs
   `jaxrej gwin --config.eval.test=False` on every seed, in WORKDIR/CANDIDATE/seedS: the test rows
   are not read. Each run's validation rows (a stratified 20% of the training rows that neither
   the classifier, nor the critic, nor the generator trains on) give the rows rejected at the
   largest tau (0.99), and among them the net number the transformation corrects
   (fixed - broken). The chosen candidate has the largest net summed over seeds (the first
   candidate on a tie).
2. Report. The chosen candidate's runs are resumed with eval.test=True: nothing is retrained
   (classifier and generator come back from their checkpoints), the 360 test digits are read
   once. The table: per tau, the accuracy on the rejected subset before -> after
   transformation, as the mean over seeds with its standard deviation and min-max, and n
   rejected; per seed; and the diagnostics (what the generator does to its inputs).

A run folder that already holds a run with the same config is resumed, not retrained (`jaxrej
gwin`'s rule), so the choice can be made first and the report later, from the same runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from benchmarks.report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONFIG = os.path.join(ROOT, "configs", "digits_gwin.py")
# name -> overrides of configs/digits_gwin.py ([]: as shipped, the chosen setting); steps600 was
# the shipped setting before the choice
CANDIDATES = {
    "steps600": ["--config.gan.n_steps=600"],
    "steps600_lambda5": ["--config.gan.n_steps=600", "--config.gan.lambda_loss=5.0"],
    "steps100": [],
}
SEEDS = (0, 1, 2, 3, 4)
QUICK = ["--config.classifier.epochs=15", "--config.classifier.mc_samples=4",
         "--config.gan.n_steps=4", "--config.gan.tau_star=0.5", "--config.gan.log_every=2"]  # fmt: skip


def gwin_run(workdir: str, seed: int, overrides: list[str], *, test: bool) -> dict:
    """`jaxrej gwin` on one seed (resumed where workdir holds it; read back where it holds this
    finished validation run): its tables {validation, test (None without `test`)}, its
    gwin_run.json and the call's wall time."""
    from jaxrej import cli

    argv = ["gwin", "--config", CONFIG, "--workdir", workdir, "--no-progress",
            f"--config.seed={seed}", f"--config.eval.test={test}", *overrides]  # fmt: skip
    start = time.time()
    if test or not _finished(workdir, argv[6:]):
        if cli.main(argv) != 0:
            raise SystemExit(f"jaxrej {' '.join(argv)} failed")
    tables = {"test": None}
    for split, name in (("validation", "gwin_val.json"), ("test", "gwin.json"))[: 1 + test]:
        with open(os.path.join(workdir, name)) as f:
            tables[split] = json.load(f)
    with open(os.path.join(workdir, "gwin_run.json")) as f:
        info = json.load(f)
    return {"seed": seed, "tables": tables, "info": info, "wall_s": round(time.time() - start, 1)}


def _finished(workdir: str, overrides: list[str]) -> bool:
    """True when workdir holds a finished validation run of exactly this config (up to eval.*
    and gan.log_every), whose files the current command wrote: reading them gives the numbers
    a resumed call would recompute."""
    from jaxrej.config import config_diff, load_config

    try:
        with open(os.path.join(workdir, "gwin_config.json")) as f:
            stored = json.load(f)
        with open(os.path.join(workdir, "gwin_run.json")) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    want = json.loads(json.dumps(load_config(CONFIG, overrides).to_dict()))
    diff = config_diff(stored, want)
    done = info.get("trace") and info["trace"][-1]["step"] == want["gan"]["n_steps"]
    return (bool(done) and "stats" in info and os.path.exists(os.path.join(workdir, "gwin_val.json"))
            and all(k.startswith("eval.") or k == "gan.log_every" for k in diff))  # fmt: skip


def net_fixed(run: dict, split: str) -> int:
    st = run["info"]["stats"][split]
    return st["fixed"] - st["broken"]


def wrong_before(run: dict, split: str) -> int:
    """Digits of `split` rejected at the largest tau that the classifier gets wrong: the most the
    transformation can fix."""
    row = max(run["tables"][split], key=lambda r: r["tau"])
    return round(row["n_rejected"] * (1.0 - (row["acc_rejected_before"] or 0.0)))


def own_inputs(run: dict) -> dict | None:
    """transform_stats (less acc_rejected) on the generator's own training inputs at its last
    step, from the run's trace (None for a run trained before traces were kept)."""
    trace = run["info"].get("trace") or []
    if not trace:
        return None
    return {k: v for k, v in trace[-1]["gen"].items() if k != "acc_rejected"}


def _spread(values):
    import numpy as np

    v = np.asarray([x for x in values if x is not None], float)
    if v.size == 0:
        return None
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}  # fmt: skip


def summary(runs: list[dict], split: str) -> list[dict]:
    """Per tau over the seeds: n rejected, accuracy on the rejected subset before, after and
    after - before (each `_spread`), and the seeds where after > before / after < before."""
    out = []
    for i, row in enumerate(runs[0]["tables"][split]):
        rows = [r["tables"][split][i] for r in runs]
        pairs = [(r["acc_rejected_before"], r["acc_rejected_after"]) for r in rows
                 if r["n_rejected"]]  # fmt: skip
        out.append({
            "tau": row["tau"],
            "n_rejected": _spread([r["n_rejected"] for r in rows]),
            "before": _spread([a for a, _ in pairs]),
            "after": _spread([b for _, b in pairs]),
            "gain": _spread([b - a for a, b in pairs]),
            "seeds": len(pairs),
            "net_digits": int(sum(round((r["acc_rejected_after"] - r["acc_rejected_before"])
                                        * r["n_rejected"]) for r in rows if r["n_rejected"])),
            "seeds_up": sum(b > a for a, b in pairs),
            "seeds_down": sum(b < a for a, b in pairs),
        })  # fmt: skip
    return out


def measure(workdir: str, seeds, candidates: dict, extra: list[str]) -> dict:
    import jax

    load0 = os.getloadavg()[0]
    choice = {}
    for name, overrides in candidates.items():
        runs = [gwin_run(os.path.join(workdir, name, f"seed{s}"), s, [*overrides, *extra],
                         test=False) for s in seeds]  # fmt: skip
        choice[name] = {
            "overrides": overrides,
            "net_fixed_per_seed": [net_fixed(r, "validation") for r in runs],
            "validation": summary(runs, "validation"),
            "stats": [r["info"]["stats"]["validation"] for r in runs],
            "own_inputs": [own_inputs(r) for r in runs],
            "wrong_before_per_seed": [wrong_before(r, "validation") for r in runs],
        }
    chosen = max(choice, key=lambda n: sum(choice[n]["net_fixed_per_seed"]))  # first on a tie
    runs = [gwin_run(os.path.join(workdir, chosen, f"seed{s}"), s, [*candidates[chosen], *extra],
                     test=True) for s in seeds]  # fmt: skip
    per_seed = []
    for r in runs:
        info = r["info"]
        last = info["gan_log"][-1] if info["gan_log"] else {}
        per_seed.append({
            "seed": r["seed"],
            "accuracy": info["accuracy"],
            "val_accuracy": info["val_accuracy"],
            "test": r["tables"]["test"],
            "validation": r["tables"]["validation"],
            "stats": info["stats"],
            "n": info["n"],
            "gan_last": last,
            "own_inputs": own_inputs(r),
            "seconds": info["seconds"],
        })  # fmt: skip
    d = jax.devices()[0]
    return {
        "device": f"{d.platform.upper()} {d.device_kind} ({os.cpu_count()} cores)",
        "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "seeds": list(seeds),
        "config": os.path.relpath(CONFIG, ROOT),
        "extra_overrides": extra,
        "criterion": "largest sum over seeds of (fixed - broken) among the validation rows "
        "rejected at the largest tau",  # fmt: skip
        "choice": choice,
        "chosen": chosen,
        "chosen_overrides": candidates[chosen],
        "test": summary(runs, "test"),
        "per_seed": per_seed,
    }


def _pct(s, key="mean"):
    return "--" if s is None else f"{100 * s[key]:.1f}"


def to_markdown(res: dict) -> str:
    seeds = res["seeds"]
    lines = [
        "# GWIN over seeds: settings chosen on validation rows, the test table once",
        "",
        f"Device: {res['device']}; load average {res['load_average'][0]} at start, "
        f"{res['load_average'][1]} at end. Seeds {', '.join(map(str, seeds))}; config "
        f"`{res['config']}` with `{' '.join(res['chosen_overrides']) or '(as shipped)'}` "
        f"(chosen: `{res['chosen']}`). Test: accuracy on the rejected test digits before -> "
        "after transformation, mean over seeds ± standard deviation [min, max]; gain = after - "
        "before (over the seeds that reject a digit at that tau); net digits: digits corrected "
        "minus digits broken by the transformation, summed over seeds; up / down: seeds where "
        "the accuracy rose / fell.",
        "",
        "| tau | seeds | n rejected, mean [min, max] | before % | after % | gain (points) | net digits, all seeds | up / down |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["test"]:
        if r["before"] is None:
            continue
        n, g = r["n_rejected"], r["gain"]
        lines.append(
            f"| {r['tau']:g} | {r['seeds']} | {n['mean']:.1f} [{n['min']:.0f}, {n['max']:.0f}] | "
            f"{_pct(r['before'])} ± {_pct(r['before'], 'std')} | "
            f"{_pct(r['after'])} ± {_pct(r['after'], 'std')} | "
            f"{100 * g['mean']:+.1f} ± {100 * g['std']:.1f} [{100 * g['min']:+.1f}, {100 * g['max']:+.1f}] | "
            f"{r['net_digits']:+d} | {r['seeds_up']} / {r['seeds_down']} |"
        )  # fmt: skip
    lines += ["", "Per seed, test: before -> after (n rejected).", "",
              "| tau | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---:|" + "---:|" * len(seeds)]  # fmt: skip
    for i, r in enumerate(res["test"]):
        if r["before"] is None:
            continue
        cells = []
        for p in res["per_seed"]:
            t = p["test"][i]
            cells.append("--" if not t["n_rejected"] else
                         f"{100 * t['acc_rejected_before']:.1f} -> {100 * t['acc_rejected_after']:.1f} ({t['n_rejected']})")  # fmt: skip
        lines.append(f"| {r['tau']:g} | " + " | ".join(cells) + " |")
    lines += ["", "The choice, on validation rows only (20% of the training rows, "
              f"{res['per_seed'][0]['n']['validation']} digits per seed): net digits corrected "
              "(fixed - broken) among those rejected at the largest tau, per seed and summed; wrong "
              "before: those the classifier got wrong (the most the transformation can fix), "
              "fixed / broken summed over seeds; the same on the generator's own training "
              "inputs (rejected at the largest tau); mean ||G(x) - x||_2.", "",
              "| candidate | overrides | net per seed | sum | wrong before | fixed / broken | own inputs: fixed / broken | move L2 | gain at tau 0.9, mean [min, max] |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, c in res["choice"].items():
        g = next(r["gain"] for r in c["validation"] if r["tau"] == 0.9)
        mark = " (chosen)" if name == res["chosen"] else ""
        fixed, broken = (sum(st[k] for st in c["stats"]) for k in ("fixed", "broken"))
        own = [o for o in c["own_inputs"] if o is not None]
        own_s = (f"{sum(o['fixed'] for o in own)} / {sum(o['broken'] for o in own)}"
                 if len(own) == len(c["own_inputs"]) else "--")  # fmt: skip
        move = sum(st["move_l2"] for st in c["stats"]) / len(c["stats"])
        wrong = sum(c["wrong_before_per_seed"])
        lines.append(
            f"| {name}{mark} | `{' '.join(c['overrides']) or '(as shipped)'}` | "
            f"{', '.join(f'{v:+d}' for v in c['net_fixed_per_seed'])} | "
            f"{sum(c['net_fixed_per_seed']):+d} | {wrong} | {fixed} / {broken} | {own_s} | {move:.2f} | "
            + ("--" if g is None else f"{100 * g['mean']:+.1f} [{100 * g['min']:+.1f}, {100 * g['max']:+.1f}]")
            + " |"
        )  # fmt: skip
    lines += ["", "What the generator does (chosen settings), per seed, on the test digits "
              "rejected at the largest tau: ||G(x) - x||_2 (mean, pixels in [0, 1]), the "
              "classifier's certainty and probability of the true class before -> after, "
              "predictions changed / fixed / broken; the last logged generator step's gradient "
              "norms of the critic's term and of lambda_Loss x the transformation penalty; own "
              "inputs: the generator's training inputs rejected at the largest tau, fixed / "
              "broken by their transformation.", "",
              "| seed | classifier acc. % | n | move L2 | certainty | p(true) | changed / fixed / broken | wrong before | own inputs: fixed / broken | grad critic / penalty |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for p in res["per_seed"]:
        s, g = p["stats"]["test"], p["gan_last"]
        grads = f"{g['grad_adv']:.2f} / {g['grad_penalty']:.2f}" if "grad_adv" in g else "--"
        o = p["own_inputs"]
        own = "--" if o is None else f"{o['fixed']} / {o['broken']} (of {o['n']})"
        lines.append(
            f"| {p['seed']} | {100 * p['accuracy']:.1f} | {s['n']} | {s['move_l2']:.2f} | "
            f"{s['certainty_before']:.3f} -> {s['certainty_after']:.3f} | "
            f"{s['p_true_before']:.3f} -> {s['p_true_after']:.3f} | "
            f"{s['changed']} / {s['fixed']} / {s['broken']} | {s.get('wrong_before', '--')} | {own} | {grads} |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default=os.path.join(ROOT, "runs", "gwin_seeds"))
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--quick", action="store_true", help="2 seeds, a toy run of each candidate")
    args = p.parse_args(argv)
    extra = []
    if args.quick:
        args.workdir = tempfile.mkdtemp(prefix="gwin_seeds_quick_")
        if args.results_dir == os.path.join(HERE, "results"):  # toy numbers never go there
            args.results_dir = tempfile.mkdtemp(prefix="gwin_seeds_quick_results_")
        args.seeds, extra = [0, 1], QUICK
    res = measure(args.workdir, args.seeds, CANDIDATES, extra)
    write_report("gwin_seeds", res, args.results_dir, to_markdown)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
