"""The MNIST score-based classifier as a user runs it: configs/mnist_sbgc.py trained and scored
by the commands below, collected from the run folder into results/mnist_sbgc_run.{json,md}.

    jaxrej train --config configs/mnist_sbgc.py --workdir runs/mnist_sbgc
    jaxrej score --workdir runs/mnist_sbgc --split test --scorer elbo --ood fashion=FASHION
    jaxrej score --workdir runs/mnist_sbgc --split test --scorer ode --ood fashion=FASHION --limit 500
    python -m benchmarks.mnist_sbgc_run --workdir runs/mnist_sbgc

FASHION = idx:../shared/data/fashion-2k-images-idx3-ubyte.gz,../shared/data/fashion-2k-labels-idx1-ubyte.gz.
Reads the run's config.json, metrics.jsonl (training time and the label-gap diagnostic at each
evaluation) and every score_validation*.json and score_test*.json (one row per set, scorer, limit
and checkpoint step: `jaxrej score --split validation --step S` scores the validation rows that
settings are chosen on); nothing is recomputed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
import tempfile

from benchmarks.report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))


def _toy_run(folder: str) -> str:
    """The module doc's commands at toy size (width 16, 4 steps, ELBO scorer on 8 rows)."""
    from jaxrej.cli import main as jaxrej

    wd = os.path.join(folder, "run")
    fashion = ("fashion=idx:../shared/data/fashion-2k-images-idx3-ubyte.gz,"
               "../shared/data/fashion-2k-labels-idx1-ubyte.gz")  # fmt: skip
    toy = ["--config.model.mlp.hidden=16", "--config.training.n_iters=4",
           "--config.training.eval_every=2", "--config.training.label_gap_rows=8"]  # fmt: skip
    cwd = os.getcwd()
    os.chdir(os.path.dirname(HERE))  # the config's data paths are relative to the repository
    try:
        config = os.path.join("configs", "mnist_sbgc.py")
        assert jaxrej(["train", "--config", config, "--workdir", wd, "--no-progress", *toy]) == 0
        assert jaxrej(["score", "--workdir", wd, "--scorer", "elbo", "--limit", "8", "--ood",
                       fashion, "--no-progress", "--config.eval.elbo_n_times=2"]) == 0  # fmt: skip
    finally:
        os.chdir(cwd)
    return wd


def quick_dirs(name: str, results_dir: str) -> tuple[str, str]:
    """(workdir, results_dir) of a benchmark's --quick: a toy run of the MNIST config in a temp
    folder, and a temp results folder in place of the default one (toy numbers never go there)."""
    workdir = _toy_run(tempfile.mkdtemp(prefix=f"{name}_quick_"))
    if results_dir == os.path.join(HERE, "results"):
        results_dir = tempfile.mkdtemp(prefix=f"{name}_quick_results_")
    return workdir, results_dir


def validation_rows(data, rows: int):
    """(x (N, *event) float32 in [0, 1), y (N,), images (N, *event) int) of the first `rows`
    validation rows of a run's eval set (`data`: the run's `jaxrej.config.RunData`), dequantized once
    with uniform noise of seed 0 (x = (image + u) / n_levels), as the MNIST benchmarks read them."""
    import jax.numpy as jnp
    import numpy as np

    from jaxrej.data.registry import load_dataset

    val = load_dataset(data.eval_spec, "validation")
    img, y = val.images[:rows], np.asarray(val.labels[:rows])
    u = np.random.default_rng(0).uniform(size=img.shape)
    return jnp.asarray((img + u) / data.n_levels, jnp.float32), y, img


def collect(workdir: str, device: str) -> dict:
    with open(os.path.join(workdir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    init = None
    if os.path.isfile(os.path.join(workdir, "init_from.json")):  # a fine-tune (train --init-from)
        with open(os.path.join(workdir, "init_from.json")) as f:
            init = json.load(f)
        base = max([m["time_s"] for m in metrics if m["step"] <= init["step"]], default=0.0)
        init["base_time_s"] = base
        metrics = [m if m["step"] <= init["step"] else {**m, "time_s": m["time_s"] + base}
                   for m in metrics]  # fmt: skip
    evals = [m for m in metrics if "label_acc" in m]
    scores = []
    paths = [p for p in glob.glob(os.path.join(workdir, "score_*.json"))
             if os.path.basename(p).startswith(("score_test", "score_validation"))]  # fmt: skip
    for path in sorted(
        paths, key=lambda p: (not os.path.basename(p).startswith("score_validation"), p)
    ):
        with open(path) as f:
            s = json.load(f)
        fashion = s["ood"].get("fashion", {})
        scores.append({
            "file": os.path.basename(path), "set": s.get("set", "test"),
            "scorer": s.get("scorer", "ode"), "n": s["n"],
            "accuracy": s["accuracy"], "n_failed": s["n_failed"],
            "bits_per_dim": s["bits_per_dim"], "baseline_bits_per_dim": s.get("baseline_bits_per_dim"),
            "fashion_auroc": fashion.get("auroc"), "fashion_n": fashion.get("n"),
            "time_s": s["time_s"], "s_per_row": s["time_s"] / s["n"],
            "fashion_time_s": fashion.get("time_s"),
            "nfe_mean_per_example": s["nfe_mean_per_example"],
            "label_dependence": s["label_dependence"]["ratio"], "checkpoint_step": s["checkpoint_step"],
            "screen": s["eval"].get("screen", "default") if s.get("scorer") != "elbo" else "-",
            "consistent_fraction": s.get("consistent_fraction"),
            "eval": {k: s["eval"][k] for k in sorted(s["eval"])},
        })  # fmt: skip
    scores.sort(key=lambda r: (r["set"] != "validation", r["checkpoint_step"], r["file"]))
    last = metrics[-1]
    from jaxrej.data.registry import load_dataset

    train = load_dataset(cfg["data"]["dataset"], cfg["data"].get("train_split", "train"))
    return {
        "zero_pixel_fraction": float((train.images == 0).mean()),
        "workdir": workdir,
        "device": f"{device}: {platform.processor() or platform.machine()}",
        "config": {"model": cfg["model"], "training": cfg["training"], "sde": cfg["sde"],
                   "data": cfg["data"]},
        "train": {"steps": last["step"], "time_s": last["time_s"],
                  "curve": [{k: m[k] for k in ("step", "time_s", "eval_loss_ema", "label_gap_nats",
                                                "label_acc")} for m in evals]},
        "scores": scores,
        "init_from": init,
    }  # fmt: skip


def settings(row: dict) -> str:
    """A score row's scorer settings in words: the ODE's screen; the ELBO's draws and label window."""
    e = row["eval"]
    if row["scorer"] != "elbo":
        return f"screen {row['screen']}"
    h = e.get("elbo_label_max", 0.0)
    return f"{e['elbo_n_times']} draws" + (f", label up to t = {h:g}" if h else "")


def to_markdown(res: dict) -> str:
    t = res["train"]
    lines = [
        "# The MNIST score model trained and scored",
        "",
        f"Device: {res['device']}. Training: {t['steps']} steps in {t['time_s'] / 60:.1f} min "
        "(metrics.jsonl). Rows: the 1,000 `validation` rows (settings are chosen on them) and the "
        "2,000 `test` rows of the 8,000-row MNIST test-set file; "
        "Fashion-MNIST as OOD (AUROC of log p(x), positive = MNIST). Pixels of the training "
        f"rows that are exactly 0: {100 * res['zero_pixel_fraction']:.1f}%.",
        "",
    ]
    init = res.get("init_from")
    if init:
        tr = res["config"]["training"]
        lines += [
            f"Fine-tuned (`jaxrej train --init-from`) from `{os.path.basename(init['run'])}` at "
            f"step {init['step']} ({init['base_time_s'] / 60:.1f} min of its training): steps "
            f"{init['step']}-{t['steps']} in {(t['time_s'] - init['base_time_s']) / 60:.1f} min, "
            f"the class cross-entropy drawn on t in [{tr.get('class_ce_t_min')}, "
            f"{tr.get('class_ce_t_max', 1.0)}] (weight {tr.get('class_ce_weight')}).",
            "",
        ]
    lines += [
        "| rows of | step | scorer | settings | rows | accuracy | bits/dim | per-pixel baseline bits/dim | "
        "Fashion AUROC | s / row | NFE / row | label dependence | screens consistent |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in res["scores"]:
        cf = s.get("consistent_fraction")
        cf = "not recorded" if cf is None else f"{100 * cf:.0f}%"
        auroc = ("not scored" if s["fashion_auroc"] is None
                 else f"{s['fashion_auroc']:.4f} ({s['fashion_n']})")  # fmt: skip
        lines.append(
            f"| {s.get('set', 'test')} | {s['checkpoint_step']} | {s['scorer']} | {settings(s)} | "
            f"{s['n']} | {100 * s['accuracy']:.2f}% | "
            f"{s['bits_per_dim']:.2f} | "
            f"{s['baseline_bits_per_dim']:.2f} | {auroc} | "
            f"{s['s_per_row']:.3f} | {s['nfe_mean_per_example']:.0f} | {s['label_dependence']:.3f} | "
            f"{cf} |"
        )
    lines += ["", "Training curve (validation rows; label gap: nats of the denoising bound the "
              "true label saves, 8 shared draws; label acc: that bound's argmax accuracy):", "",
              "| step | min | eval loss | label gap | label acc |", "|---|---|---|---|---|"]  # fmt: skip
    for c in t["curve"]:
        lines.append(f"| {c['step']} | {c['time_s'] / 60:.1f} | {c['eval_loss_ema']:.3f} | "
                     f"{c['label_gap_nats']:.1f} | {c['label_acc']:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(res: dict, path: str) -> None:
    """The training curve: the validation label accuracy and eval loss against training minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxrej.io import atomic_write

    c = res["train"]["curve"]
    mins = [r["time_s"] / 60 for r in c]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(mins, [r["label_acc"] for r in c], marker="o")
    ax[0].set(xlabel="training time (min)", ylabel="accuracy", ylim=(0, 1),
              title="denoising-bound classifier (validation rows, 8 draws)")  # fmt: skip
    ax[1].plot(mins, [r["eval_loss_ema"] for r in c], marker="o")
    ax[1].set(xlabel="training time (min)", ylabel="DSM loss (EMA params)",
              title="validation loss")  # fmt: skip
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="runs/mnist_sbgc")
    p.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    p.add_argument(
        "--device",
        default="CPU, 2 cores",
        help="how the run's training and scoring ran (cores, pinning, other load)",
    )
    p.add_argument("--out", default="mnist_sbgc_run", help="results stem (one per recipe kept)")
    p.add_argument("--quick", action="store_true",
                   help="train and score a toy-width run of the config (4 steps, 8 rows) in a "
                   "temp folder and collect that, into a temp results folder")  # fmt: skip
    args = p.parse_args(argv)
    if args.quick:
        args.workdir, args.results_dir = quick_dirs("mnist_sbgc_run", args.results_dir)
    res = collect(args.workdir, args.device)
    write_report(args.out, res, args.results_dir, to_markdown, plot)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
