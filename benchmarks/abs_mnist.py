"""ABS / E-ABS on MNIST (jaxrej.abs): the numbers of a trained and scored run, and the figure of
per-class reconstructions of clean and Fashion-MNIST inputs.

    jaxrej train --config configs/mnist_abs.py --workdir runs/mnist_abs
    jaxrej score --workdir runs/mnist_abs --split test --ood fashion=idx:FASHION_IMAGES,FASHION_LABELS
    jaxrej evaluate --workdir runs/mnist_abs --corruptions none --no-attack --ood fashion=idx:...
    python -m benchmarks.abs_mnist --workdir runs/mnist_abs [--evaluate runs/mnist_abs/evaluate_...]

Reads the run's train.json and score_test.json (written by the two commands above; their timings
are the commands' own), draws docs/abs/reconstructions.png (the first clean test rows, the
misclassified ones, the first four after an L2 APGD-CE attack through the latent search
(--adv-eps), the first Fashion-MNIST rows) and writes benchmarks/results/abs_mnist.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from benchmarks.report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIGURE = os.path.join(ROOT, "docs", "abs", "reconstructions.png")


def _toy_run(folder: str) -> str:
    """The module doc's commands on the embedded digits at toy size (20 steps; 8x8 noise as the
    OOD set named fashion)."""
    from jaxrej.cli import main as jaxrej

    wd = os.path.join(folder, "run")
    rng = np.random.default_rng(0)
    np.savez(os.path.join(folder, "noise.npz"), images=rng.integers(0, 17, (8, 8, 8, 1)))
    toy = ["--config.training.n_iters=20", "--config.training.eval_every=10",
           "--config.training.checkpoint_every=10"]  # fmt: skip
    config = os.path.join(ROOT, "configs", "digits_abs.py")
    assert jaxrej(["train", "--config", config, "--workdir", wd, "--no-progress", *toy]) == 0
    ood = f"fashion=npz:{os.path.join(folder, 'noise.npz')}"
    assert jaxrej(["score", "--workdir", wd, "--split", "test", "--ood", ood, "--no-progress"]) == 0
    return wd


def _load(path):
    with open(path) as f:
        return json.load(f)


def to_markdown(out: dict) -> str:
    t, s = out["train"], out["score"]
    lines = [f"Device: {out['device']}; run `{out['workdir']}`; written at commit {out['commit']}.", "",
             "| metric | value |", "|---|---|",
             f"| test accuracy ({s['n']} rows of the 8k file's test split) | {100 * s['accuracy']:.2f}% |",
             f"| Fashion-MNIST AUROC (class-marginal bound, {s['ood_n']} rows) | {s['ood_auroc']:.4f} |",
             f"| training steps / time | {t['final_step']} / {t['train_time_s'] / 60:.1f} min |",
             f"| scoring time, test rows | {s['time_s'] / 60:.1f} min |",
             f"| scoring time, Fashion-MNIST rows | {s['ood_time_s'] / 60:.1f} min |"]  # fmt: skip
    ev = out.get("evaluate")
    if ev:
        c, o = ev["clean"], ev["ood"]
        lines += ["", f"`jaxrej evaluate` (thresholds from the {ev['n_val']} validation rows, "
                  f"{ev['seconds'] / 60:.1f} min):", "",
                  "| percentile | accuracy of accepted | clean rejected | Fashion rejected |",
                  "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {p} | {100 * c[p]['acc_left']:.2f}% | {100 * c[p]['rejection_rate']:.2f}% | "
                  f"{100 * o[p]['rejection_rate']:.1f}% |" for p in ("p1", "p2") if p in c]  # fmt: skip
    sel = out.get("selection_on_validation") or []
    if sel:
        lines += ["", "Settings chosen on the 1,000 validation rows (first 500 scored):", "",
                  "| setting | val. accuracy | Fashion AUROC |", "|---|---|---|"]  # fmt: skip
        lines += [
            f"| {r['setting']} | {100 * r['accuracy']:.1f}% | {r['auroc']:.4f} |" for r in sel
        ]
    lines += ["", f"Figure: `{os.path.relpath(out['figure'], ROOT)}`."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/mnist_abs", help="a run trained and scored as above")
    p.add_argument("--ood-name", default="fashion", help="the OOD set's name in score_test.json")
    p.add_argument("--selection", default="", help="a JSON file of validation-row settings")
    p.add_argument("--device", default="", help="how the machine was loaded while timing")
    p.add_argument("--evaluate", default="", help="a `jaxrej evaluate` folder of the run")
    p.add_argument(
        "--adv-eps",
        type=float,
        default=1.5,
        help="the figure's adversarial rows: APGD-CE at this L2 radius (0: none)",
    )
    p.add_argument("--adv-steps", type=int, default=20, help="their APGD steps")
    p.add_argument("--out", default="abs_mnist")
    p.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--quick", action="store_true",
                   help="train and score a toy digits ABS run (20 steps, a noise OOD set) in a "
                   "temp folder and report on it into temp folders")  # fmt: skip
    args = p.parse_args(argv)
    figure = FIGURE
    if args.quick:
        import tempfile

        tmp = tempfile.mkdtemp(prefix="abs_mnist_quick_")
        args.workdir, figure = _toy_run(tmp), os.path.join(tmp, "reconstructions.png")
        if args.results_dir == os.path.join(HERE, "results"):  # toy numbers never go there
            args.results_dir = tmp

    import jax

    from jaxrej.abs.figures import reconstruction_grid
    from jaxrej.abs.run import class_scores
    from jaxrej.abs.scorer import load_scorer
    from jaxrej.data.registry import load_dataset
    from jaxrej.training.workdir import read_config

    wd = args.workdir
    train, score = _load(os.path.join(wd, "train.json")), _load(os.path.join(wd, "score_test.json"))
    ood = score["ood"][args.ood_name]
    res = np.load(os.path.join(wd, "score_test.npz"))
    cfg = read_config(wd)
    test = load_dataset(score["dataset"], "test")
    wrong = np.flatnonzero(res["pred"] != res["labels"])[:4]
    rows = np.concatenate([np.arange(4), wrong])
    fash = load_dataset(ood["spec"], ood["split"]).images[:4]
    sc, _ = load_scorer(wd)
    unit = float(cfg["data"]["n_levels"] - 1)
    groups = {}
    for name, imgs in (("test", test.images[rows]), ("fashion", fash)):
        x = imgs.astype(np.float32) / unit
        r = class_scores(sc, x, batch_size=len(x), progress=False, full=True)
        groups[name] = (x, r["z"], r["score"], r["member"])
    if args.adv_eps > 0:  # the first clean rows moved by APGD-CE (L2) through the latent search
        from jaxrej.attacks import apgd

        x0 = groups["test"][0][:4]
        adv = apgd(jax.jit(lambda xb: sc(xb)), jax.numpy.asarray(x0), jax.numpy.asarray(test.labels[rows[:4]]),
                   key=jax.random.key(0), eps=args.adv_eps, norm="l2", steps=args.adv_steps,
                   loop="python")  # fmt: skip
        xa = np.asarray(adv.x_adv)
        r = class_scores(sc, xa, batch_size=len(xa), progress=False, full=True)
        groups = {"test": groups["test"], f"L2 {args.adv_eps:g} adv.": (xa, r["z"], r["score"], r["member"]),
                  "fashion": groups["fashion"]}  # fmt: skip
    os.makedirs(os.path.dirname(figure), exist_ok=True)
    reconstruction_grid(groups, sc.model, sc.params, figure,
                        title=f"ABS on MNIST: test rows {rows.tolist()} (4 first, then errors), "
                        + (f"the first 4 after APGD-CE (L2 {args.adv_eps:g}, {args.adv_steps} steps), "
                           if args.adv_eps > 0 else "") + "Fashion")  # fmt: skip
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    out = {
        "workdir": wd, "commit": commit, "figure": figure,
        "device": args.device or str(jax.devices()),
        "train": {k: train[k] for k in ("final_step", "train_time_s", "n_train", "n_params")},
        "score": {"n": score["n"], "accuracy": score["accuracy"], "time_s": score["time_s"],
                  "ood_auroc": ood["auroc"], "ood_n": ood["n"], "ood_time_s": ood["time_s"],
                  "checkpoint_step": score["checkpoint_step"]},
        "config": {k: cfg[k] for k in ("model", "training", "eval")},
        "selection_on_validation": _load(args.selection) if args.selection else [],
    }  # fmt: skip
    if args.evaluate:
        ev = _load(os.path.join(args.evaluate, "evaluate.json"))
        sc_ev = ev["scorers"]["abs"]
        out["evaluate"] = {"folder": args.evaluate, "n_val": ev["n_val"], "seconds": ev["seconds"],
                           "clean": sc_ev["clean"], "ood": sc_ev["ood"][args.ood_name]}  # fmt: skip
    write_report(args.out, out, args.results_dir, to_markdown)


if __name__ == "__main__":
    main(sys.argv[1:])
