"""Does the class label matter? Short MNIST score-model runs and their label-gap curve.

    for v in add_plain film_plain add_lik film_lik; do
        python -m benchmarks.mnist_sbgc_curve --variant $v --steps 2000 --diag-every 250
    done
    python -m benchmarks.mnist_sbgc_curve --variant film_plain_ema995 --steps 3500 --ode-rows 20
    python -m benchmarks.mnist_sbgc_curve --variant film_lik_ema995 --steps 3500 --ode-rows 20
    python -m benchmarks.mnist_sbgc_curve --quick     # toy widths, 40 steps, into a temp folder

Each call trains ONE variant of configs/mnist_sbgc.py (the overrides in VARIANTS) with
jaxrej.training.train and merges its curve into results/mnist_sbgc_curve.json (other variants'
rows are kept), so every run stays short. Data: the 8,000 MNIST images of ../shared/data split by
a fixed rule (`split_mnist`: seeded permutation, 6,000 train / 1,000 validation / 1,000 test).
Every `--diag-every` steps, on the first `--diag-rows` validation rows, with the EMA params:
  class_denoising_losses (likelihood weighting, 8 (t, z) draws shared by the 10 classes), giving
  gap_nats  = mean over rows of [mean over the other classes of L - L of the true class] (nats of
              the denoising bound on -log p(x | y): how much the label helps),
  elbo_acc  = accuracy of argmin_c L[c] (the denoising-bound classifier of Li et al. 2023),
  and the plain per-dimension gap (the number the issue quoted: 0.36914 vs 0.36924).
Training time excludes the diagnostic's time. With --ode-rows N > 0, the final EMA model is also
scored on N test rows by the probability-flow ODE (jaxrej.class_log_likelihood_result, default
screen, Rademacher divergence): accuracy, bits/dim of log p(x) and seconds per image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(ROOT, "..", "shared", "data")
DEVICE = "CPU, 2 cores (shared)"


def _recipe(conditioning, weighting, ema_decay=0.999, **extra):
    """Overrides of configs/mnist_sbgc.py that fix every compared setting (MLP width 512, 3
    blocks, Adam 1e-3, batch 128), so a variant keeps its meaning when the config changes."""
    lik = weighting == "likelihood"
    return {"model.name": "mlp", "model.mlp.hidden": 512, "model.mlp.n_blocks": 3,
            "model.mlp.conditioning": conditioning, "training.weighting": weighting,
            "training.importance_sampling": lik, "training.ema_decay": ema_decay,
            "training.lr": 1e-3, "training.batch_size": 128, **extra}  # fmt: skip


# name -> (what it tests, overrides of configs/mnist_sbgc.py)
VARIANTS = {
    "add_plain": ("the digits recipe: label added per block, plain weighting",
                  _recipe("add", "plain")),
    "film_plain": ("FiLM (scale+shift) per block, plain weighting", _recipe("film", "plain")),
    "add_lik": ("label added per block, likelihood weighting + importance-sampled t",
                _recipe("add", "likelihood")),
    "film_lik": ("FiLM per block, likelihood weighting + importance-sampled t",
                 _recipe("film", "likelihood")),
    "film_plain_ema995": ("FiLM, plain weighting, EMA decay 0.995 (a horizon short runs fill)",
                          _recipe("film", "plain", 0.995)),
    "film_lik_ema995": ("FiLM, likelihood weighting + importance-sampled t, EMA decay 0.995",
                        _recipe("film", "likelihood", 0.995)),
    "film_lik_w1024": ("FiLM, likelihood weighting, EMA 0.995, width 1024",
                       _recipe("film", "likelihood", 0.995, **{"model.mlp.hidden": 1024})),
    "unet_film_plain": ("tiny U-Net (nf 16, one level down), FiLM, plain weighting, EMA 0.995",
                        {**_recipe("film", "plain", 0.995), "model.name": "unet"}),
}  # fmt: skip


def split_mnist():
    """{"train", "validation", "test"} -> (images (N, 28, 28, 1) uint8, labels (N,) int32): the
    registry's fixed split of the 8,000-image file (5,000 / 1,000 / 2,000,
    `jaxrej.data.registry.local_split_indices`), the split every other MNIST number uses."""
    from jaxrej.data.registry import load_dataset

    spec = ("idx:" + os.path.join(DATA, "mnist-8k-images-idx3-ubyte.gz") + ","
            + os.path.join(DATA, "mnist-8k-labels-idx1-ubyte.gz"))  # fmt: skip
    out = {}
    for split in ("train", "validation", "test"):
        d = load_dataset(spec, split)
        out[split] = (d.images, d.labels)
    return out


def build(variant: str, quick: bool):
    from jaxrej.cli import load_config
    from jaxrej.training.loop import TrainOptions
    from jaxrej.training.workdir import build_net, build_sde

    overrides = [f"--config.{k}={v!r}" for k, v in VARIANTS[variant][1].items()]
    config = load_config(os.path.join(ROOT, "configs", "mnist_sbgc.py"), overrides)
    cfg = json.loads(json.dumps(config.to_dict()))
    if quick:
        cfg["model"]["mlp"]["hidden"] = 64
        cfg["model"]["unet"]["nf"] = 4
    model = dict(cfg["model"])
    net = build_net(model.pop("name"), num_classes=10, **model)
    sde_cfg = dict(cfg["sde"])
    sde = build_sde(sde_cfg.pop("name"), **sde_cfg)
    return cfg, net, sde, TrainOptions


def run_variant(args) -> dict:
    from jaxrej.models.score import init_params, make_score_fn
    from jaxrej.training.loop import train
    from jaxrej.training.losses import class_denoising_losses, label_gap

    cfg, net, sde, TrainOptions = build(args.variant, args.quick)
    data = split_mnist()
    xtr, ytr = data["train"]
    xva, yva = data["validation"]
    xva, yva = xva[: args.diag_rows], yva[: args.diag_rows]
    t = dict(cfg["training"])
    t.update(n_iters=args.steps, eval_every=args.steps, checkpoint_every=args.steps,
             log_every=min(100, args.steps))  # fmt: skip
    opts = TrainOptions(**t)
    key = jax.random.key(cfg["seed"])
    init_key, train_key = jax.random.split(key)
    params = init_params(net, (28, 28, 1), key=init_key)
    n_params = int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
    score_fn = make_score_fn(net, sde)
    xq = (jnp.asarray(xva, jnp.float32) + 0.5) / 256.0  # bin centres: a fixed input per row
    diag_key = jax.random.key(1234)  # the same (t, z) draws at every point of every curve

    @jax.jit
    def diag(p):
        out = {}
        for w in ("likelihood", "plain"):
            losses = class_denoising_losses(
                score_fn, p, sde, xq, num_classes=10, key=diag_key, n_samples=8, weighting=w
            )
            g = label_gap(losses, jnp.asarray(yva))
            true = jnp.take_along_axis(losses, jnp.asarray(yva)[:, None], 1)[:, 0]
            out[w] = (jnp.mean(g.gap), jnp.mean(g.correct), jnp.mean(true))
        return out

    rows, clock = [], {"diag_s": 0.0, "t0": None}

    def record(state):
        s = int(state.step)
        if clock["t0"] is None:
            clock["t0"] = time.perf_counter()  # after the first (compiling) step
        if s % args.diag_every and s != args.steps:
            return
        t0 = time.perf_counter()
        d = jax.device_get(diag(state.ema_params))
        clock["diag_s"] += time.perf_counter() - t0
        train_s = time.perf_counter() - clock["t0"] - clock["diag_s"]
        rows.append({"step": s, "train_s": round(train_s, 1),
                     "gap_nats": float(d["likelihood"][0]), "elbo_acc": float(d["likelihood"][1]),
                     "loss_true_nats": float(d["likelihood"][2]),
                     "gap_plain": float(d["plain"][0]), "loss_true_plain": float(d["plain"][2]),
                     "load": round(os.getloadavg()[0], 2)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)

    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as wd:
        t0 = time.perf_counter()
        state, summary = train(workdir=wd, score_fn=score_fn, sde=sde, init_params=params,
                               images=xtr, labels=ytr, n_levels=256, opts=opts, key=train_key,
                               progress=False, on_step=record)  # fmt: skip
        wall = time.perf_counter() - t0
    out = {
        "description": VARIANTS[args.variant][0],
        "overrides": VARIANTS[args.variant][1],
        "model": cfg["model"]["name"],
        "model_fields": cfg["model"][cfg["model"]["name"]],
        "training": {
            k: t[k]
            for k in (
                "batch_size",
                "lr",
                "warmup",
                "ema_decay",
                "weighting",
                "importance_sampling",
                "n_iters",
            )
        },  # fmt: skip
        "n_params": n_params,
        "n_train": int(len(xtr)),
        "diag_rows": int(len(xva)),
        "wall_s": round(wall, 1),
        "load_start": round(load0[0], 2),
        "load_end": round(os.getloadavg()[0], 2),
        "final_loss": summary["last_metrics"].get("loss"),
        "curve": rows,
    }
    if args.ode_rows > 0:
        out["ode"] = ode_eval(score_fn, state.ema_params, sde, data["test"], args.ode_rows)
    return out


def ode_eval(score_fn, params, sde, test, n_rows: int) -> dict:
    """Accuracy and bits/dim from the ODE class scores of the first n_rows test images."""
    import jaxrej
    from jaxrej.data.preprocessing import dequantize

    x, y = test
    x, y = x[:n_rows], y[:n_rows]
    xq = dequantize(jnp.asarray(x), 256, key=jax.random.key(5))
    kw = dict(num_classes=10, key=jax.random.key(6), divergence="rademacher", rtol=1e-5, atol=1e-5)
    bs = 25
    t0 = time.perf_counter()
    logps = []
    for i in range(0, n_rows, bs):
        r = jaxrej.class_log_likelihood_result(score_fn, params, sde, xq[i : i + bs], **kw)
        logps.append(np.asarray(r.logp))
    logp = np.concatenate(logps)
    secs = time.perf_counter() - t0
    marg = np.asarray(jaxrej.marginal_log_likelihood(jnp.asarray(logp)))
    bpd = np.asarray(jaxrej.bits_per_dim(jnp.asarray(marg), (28, 28, 1), n_levels=256))
    return {"rows": int(n_rows), "accuracy": float(np.mean(np.argmax(logp, 1) == y)),
            "bits_per_dim": float(np.nanmean(bpd)), "n_nan": int(np.isnan(bpd).sum()),
            "seconds": round(secs, 1), "seconds_per_image": round(secs / n_rows, 2)}  # fmt: skip


def to_markdown(res: dict) -> str:
    lines = [
        "# Does the label matter? MNIST score models, label gap vs training time",
        "",
        f"Device: {res['device']}. Split: {res['split']}. Diagnostic on validation rows with the "
        "EMA params: `gap` = mean over rows of (the other classes' mean denoising bound - the "
        "true class's), nats (likelihood weighting, 8 shared (t, z) draws); `acc` = argmin-class "
        "accuracy of that bound; `gap/dim plain` = the same with the plain per-dimension loss. "
        "`load` = 1-min load average during the run (2 cores).",
        "",
        "| variant | what | params | steps | train s | gap (nats) | acc | gap/dim plain | "
        "ODE acc | ODE bits/dim | s/image | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in res["variants"].items():
        last = v["curve"][-1]
        ode = v.get("ode") or {}
        lines.append(
            f"| {name} | {v['description']} | {v['n_params'] / 1e6:.2f}M | {last['step']} | "
            f"{last['train_s']:.0f} | {last['gap_nats']:.2f} | {last['elbo_acc']:.3f} | "
            f"{last['gap_plain']:.2e} | "
            + (f"{ode['accuracy']:.3f} ({ode['rows']}) | {ode['bits_per_dim']:.2f} | "
               f"{ode['seconds_per_image']:.1f} | " if ode else "- | - | - | ")
            + f"{v['load_start']:.1f}-{v['load_end']:.1f} |"
        )  # fmt: skip
    lines += ["", "Curves (step, train s, gap nats, acc):", ""]
    for name, v in res["variants"].items():
        pts = ", ".join(
            f"({r['step']}, {r['train_s']:.0f}, {r['gap_nats']:.2f}, {r['elbo_acc']:.2f})"
            for r in v["curve"]
        )
        lines.append(f"- {name}: {pts}")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for name, v in res["variants"].items():
        ts = [r["train_s"] / 60 for r in v["curve"]]
        ax[0].plot(ts, [r["gap_nats"] for r in v["curve"]], marker="o", label=name)
        ax[1].plot(ts, [r["elbo_acc"] for r in v["curve"]], marker="o", label=name)
    ax[0].set(xlabel="training time (min, 2 shared CPU cores)", ylabel="label gap (nats)",
              title="denoising bound: other classes - true class")  # fmt: skip
    ax[1].set(xlabel="training time (min)", ylabel="accuracy", ylim=(0, 1),
              title="argmin-class accuracy of the denoising bound")  # fmt: skip
    ax[0].legend(fontsize=8)
    fig.tight_layout()
    from jaxrej.training.checkpoint import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", choices=sorted(VARIANTS), default="film_lik")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--diag-every", type=int, default=500)
    p.add_argument("--diag-rows", type=int, default=200)
    p.add_argument("--ode-rows", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="toy widths and 40 steps")
    p.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--out", default="mnist_sbgc_curve")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.diag_every, args.diag_rows = 40, 20, 32
        args.ode_rows = min(args.ode_rows, 4)
        if args.results_dir == os.path.join(HERE, "results"):  # toy numbers never go there
            args.results_dir = tempfile.mkdtemp(prefix="mnist_sbgc_curve_quick_")
    path = os.path.join(args.results_dir, f"{args.out}.json")
    res = {"variants": {}}
    if os.path.isfile(path):
        with open(path) as f:
            res = json.load(f)
    res.update({"device": f"{DEVICE}: {platform.processor() or platform.machine()}, "
                          f"jax {jax.__version__}",
                "split": "8,000 MNIST images, default_rng(0) permutation: 6,000 train / "
                         "1,000 validation / 1,000 test"})  # fmt: skip
    res.pop("command", None)
    v = run_variant(args)
    v["command"] = "python -m benchmarks.mnist_sbgc_curve " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    res["variants"][args.variant] = v
    write_report(args.out, res, args.results_dir, to_markdown, plot)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
