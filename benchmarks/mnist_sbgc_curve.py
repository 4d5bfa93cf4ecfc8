"""Where does an MNIST score model learn, and does its label matter? Training curves of variants.

    python -m benchmarks.mnist_sbgc_curve --variant mlp512 --steps 10000
    python -m benchmarks.mnist_sbgc_curve --variant pre512 --steps 6000
    python -m benchmarks.mnist_sbgc_curve --variant pre512_lik --steps 6000
    python -m benchmarks.mnist_sbgc_curve --variant pre512_lik_cut --steps 6000
    python -m benchmarks.mnist_sbgc_curve --quick      # toy widths, 40 steps, into a temp folder

Each call trains ONE variant of configs/mnist_sbgc.py (the overrides in VARIANTS) with
jaxrej.training.train on the 19,690 MNIST training rows and merges its curve into
results/mnist_sbgc_curve.json (other variants' rows are kept). Every `--diag-every` steps, on the
first `--diag-rows` validation rows of the 8,000-row test-set file (bin centres), with the EMA
params: `jaxrej.class_elbos` (16 stratified (t, z) draws shared by the classes, one fixed key for
every point of every curve) gives
  elbo_acc  the accuracy of the argmax-class bound (the denoising-bound classifier),
  elbo_bpd  bits/dim of its class-marginal bound (an upper bound on the model's bits/dim).
At the last step, per time interval (10 log-spaced intervals of [eps, 1], 4 midpoint times each,
one noise per row and time), the interval's share of the bound: `bits` (of the true class,
relative to the bound's control variate: negative = the model gains there), `gap` (true class
minus the mean of the others, nats; > 0: the label helps) with its spread over rows, and `acc`
(the accuracy of that interval's share alone). Training time excludes the diagnostics.
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
DEVICE = "CPU of a 2-core machine shared with other jobs, each variant on the cores of its row"
N_INTERVALS, TIMES_PER_INTERVAL = 10, 4


def _recipe(hidden, precondition, weighting, **extra):
    """Overrides of configs/mnist_sbgc.py that fix every compared setting, so a variant keeps
    its meaning when the config changes."""
    lik = weighting == "likelihood"
    return {"model.name": "mlp", "model.mlp.hidden": hidden, "model.mlp.n_blocks": 3,
            "model.mlp.conditioning": "film", "model.mlp.time_embedding": "log_fourier",
            "model.mlp.precondition": precondition, "model.mlp.label_cutoff": 0.0,
            "training.weighting": weighting,
            "model.mlp.atoms": (), "model.mlp.local": 0, "training.augment_shift": 0,
            "training.class_ce_weight": 0.0,
            "training.importance_sampling": lik, "training.ema_decay": 0.995,
            "training.lr": 1e-3, "training.batch_size": 128, **extra}  # fmt: skip


# the bins of 256 levels as (lo, hi, weight): the level-0 bin, and the levels 251-255 weighted by
# their counts in the training rows (0.27, 1.40, 3.27, 1.72, 0.67% of the pixels)
LEVEL0 = (((0.0, 1 / 256, 1.0),),)
TOP_WEIGHTS = (0.27, 1.40, 3.27, 1.72, 0.67)
TOP = (
    tuple((k / 256, (k + 1) / 256, w) for k, w in zip(range(251, 256), TOP_WEIGHTS, strict=True)),
)
# both gates from t = 1e-7 with the class cross-entropy of weight 3 on 32 rows (atoms2_ce3_e7)
ATOMS2_CE3 = {"model.mlp.label_cutoff": 0.03, "model.mlp.atoms": LEVEL0 + TOP,
              "training.class_ce_weight": 3.0, "training.class_ce_rows": 32,
              "training.eps": 1e-7, "eval.eps": 1e-7}  # fmt: skip
# name -> (what it tests, overrides of configs/mnist_sbgc.py)
VARIANTS = {
    "mlp512": ("MLP width 512 predicts the noise itself (plain weighting)",
               _recipe(512, False, "plain")),
    "pre512": ("the same MLP as F of the preconditioned noise prediction (plain weighting)",
               _recipe(512, True, "plain")),
    "pre512_lik": ("preconditioned, likelihood weighting with importance-sampled t",
                   _recipe(512, True, "likelihood")),
    "pre512_lik_cut": ("preconditioned, likelihood weighting, no label below t = 0.03",
                       _recipe(512, True, "likelihood", **{"model.mlp.label_cutoff": 0.03})),
    "cut_shift2": ("as pre512_lik_cut, training rows translated by up to 2 pixels",
                   _recipe(512, True, "likelihood", **{"model.mlp.label_cutoff": 0.03,
                                                       "training.augment_shift": 2})),
    "cut_ce1": ("as pre512_lik_cut, plus the cross-entropy of the model's class bounds (weight 1)",
                _recipe(512, True, "likelihood", **{"model.mlp.label_cutoff": 0.03,
                                                    "training.class_ce_weight": 1.0})),
    "cut_ce01": ("as pre512_lik_cut, plus the cross-entropy of the model's class bounds "
                 "(weight 0.1)",
                 _recipe(512, True, "likelihood", **{"model.mlp.label_cutoff": 0.03,
                                                     "training.class_ce_weight": 0.1})),
    "cut_atom": ("as pre512_lik_cut, plus the closed-form gate of the level-0 bin "
                 "(models/score.py atoms)",
                 _recipe(512, True, "likelihood", **{"model.mlp.label_cutoff": 0.03,
                                                     "model.mlp.atoms": LEVEL0})),
    "cut_atom_ce1": ("as pre512_lik_cut, with the level-0 bin's gate and the class cross-entropy "
                     "(weight 1): the config's recipe with EMA 0.995",
                     _recipe(512, True, "likelihood", **{"model.mlp.label_cutoff": 0.03,
                                                         "model.mlp.atoms": LEVEL0,
                                                         "training.class_ce_weight": 1.0})),
    "atoms2_ce1": ("as cut_atom_ce1, plus the gate of the levels 251-255 (one group)",
                   _recipe(512, True, "likelihood", **{"model.mlp.label_cutoff": 0.03,
                                                       "model.mlp.atoms": LEVEL0 + TOP,
                                                       "training.class_ce_weight": 1.0})),
    "atoms2_ce1_e7": ("as atoms2_ce1, smallest time 1e-7 (training and bound)",
                      _recipe(512, True, "likelihood", **{"model.mlp.label_cutoff": 0.03,
                                                          "model.mlp.atoms": LEVEL0 + TOP,
                                                          "training.class_ce_weight": 1.0,
                                                          "training.eps": 1e-7,
                                                          "eval.eps": 1e-7})),
    "atoms2_ce3_e7": ("as atoms2_ce1_e7, class cross-entropy of weight 3 on 32 rows",
                      _recipe(512, True, "likelihood", **ATOMS2_CE3)),
    "atoms2_ce10_e7": ("as atoms2_ce3_e7, class cross-entropy of weight 10",
                       _recipe(512, True, "likelihood",
                               **{**ATOMS2_CE3, "training.class_ce_weight": 10.0})),
    "atoms2_ce3_local8": ("as atoms2_ce3_e7, plus a local refinement of the output: two 3x3 "
                          "layers of 8 channels (models/local.py)",
                          _recipe(512, True, "likelihood",
                                  **{**ATOMS2_CE3, "model.mlp.local": 8})),
    "cut_w1024": ("as pre512_lik_cut, width 1024",
                  _recipe(1024, True, "likelihood", **{"model.mlp.label_cutoff": 0.03})),
    "config": ("configs/mnist_sbgc.py as it stands (EMA 0.999)", {}),
}  # fmt: skip


def mnist(split: str):
    """(images, labels) of the MNIST rows configs/mnist_sbgc.py names: split "train" is every
    row of the training-set file, "validation" / "test" the registry's split of the test file."""
    from jaxrej.data.registry import load_dataset

    sys.path.insert(0, os.path.join(ROOT, "configs"))
    import mnist_sbgc

    cwd = os.getcwd()
    os.chdir(ROOT)  # the config's data paths are relative to the repository root
    try:
        if split == "train":
            d = load_dataset(mnist_sbgc.MNIST_TRAIN, "all")
        else:
            d = load_dataset(mnist_sbgc.MNIST_TEST, split)
    finally:
        os.chdir(cwd)
    return d.images, d.labels


def build(variant: str, quick: bool):
    from jaxrej.config import load_config
    from jaxrej.training.workdir import build_net, build_sde

    overrides = [f"--config.{k}={v!r}" for k, v in VARIANTS[variant][1].items()]
    config = load_config(os.path.join(ROOT, "configs", "mnist_sbgc.py"), overrides)
    cfg = json.loads(json.dumps(config.to_dict()))
    if quick:
        cfg["model"]["mlp"]["hidden"] = 64
    model = dict(cfg["model"])
    net = build_net(model.pop("name"), num_classes=10, **model)
    sde_cfg = dict(cfg["sde"])
    sde = build_sde(sde_cfg.pop("name"), **sde_cfg)
    return cfg, net, sde


def interval_shares(score_fn, params, sde, x, y, *, eps: float, key) -> dict:
    """Each time interval's share of the class bounds (module doc): x (N, *event) bin centres,
    y (N,) labels -> lists over the N_INTERVALS intervals."""
    from jaxrej.elbo import residual
    from jaxrej.training.losses import importance_weight

    edges = np.logspace(np.log10(eps), 0.0, N_INTERVALS + 1)
    lo, hi = np.log(edges[:-1]), np.log(edges[1:])
    u = (np.arange(TIMES_PER_INTERVAL) + 0.5) / TIMES_PER_INTERVAL
    t = jnp.asarray(np.exp(lo[:, None] + (hi - lo)[:, None] * u[None]), jnp.float32)
    # int over an interval of w(t) h(t) dt = E_u[w(t) t (log hi - log lo) h(t)], t log-uniform
    w = importance_weight(sde, t) * t * jnp.asarray(hi - lo, jnp.float32)[:, None]
    z = jax.random.normal(key, (x.shape[0], *t.shape, *x.shape[1:]), x.dtype)

    @jax.jit
    def shares(xi, zi):  # one row -> (classes, intervals)
        def one_class(c):
            r = jax.vmap(jax.vmap(lambda tt, zz: residual(score_fn, params, sde, xi, tt, zz, c)))(
                t, zi
            )
            return -0.5 * jnp.mean(w * r, axis=-1)

        return jax.lax.map(one_class, jnp.arange(10))

    c = np.stack([np.asarray(shares(x[i], z[i])) for i in range(x.shape[0])])  # (N, C, I)
    n = len(y)
    true = c[np.arange(n), y]
    gap = true - (c.sum(1) - true) / (c.shape[1] - 1)
    r = lambda a, k=3: [round(float(v), k) for v in a]  # noqa: E731
    return {"edges": r(edges, 7), "bits": r(-true.mean(0) / (np.prod(x.shape[1:]) * np.log(2))),
            "gap": r(gap.mean(0), 2), "gap_sd": r(gap.std(0), 2),
            "acc": r((c.argmax(1) == y[:, None]).mean(0))}  # fmt: skip


def run_variant(args) -> dict:
    import jaxrej
    from jaxrej.data.preprocessing import center
    from jaxrej.models.score import init_params, make_score_fn
    from jaxrej.training.loop import TrainOptions, train

    cfg, net, sde = build(args.variant, args.quick)
    xtr, ytr = mnist("train")
    xva, yva = mnist("validation")
    xva, yva = xva[: args.diag_rows], yva[: args.diag_rows]
    t = dict(cfg["training"])
    t.update(n_iters=args.steps, eval_every=args.steps, checkpoint_every=args.steps,
             log_every=min(100, args.steps))  # fmt: skip
    opts = TrainOptions(**t, num_classes=10)
    key = jax.random.key(cfg["seed"])
    init_key, train_key = jax.random.split(key)
    params = init_params(net, (28, 28, 1), key=init_key)
    n_params = int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
    score_fn = make_score_fn(net, sde)
    xq = center(jnp.asarray(xva), 256)
    diag_key = jax.random.key(1234)  # the same draws at every point of every curve

    @jax.jit
    def diag(p):
        lp = jaxrej.class_elbos(score_fn, p, sde, xq, num_classes=10, key=diag_key, n_times=16,
                                eps=opts.eps, chunk_size=4096)  # fmt: skip
        bpd = jaxrej.bits_per_dim(jaxrej.marginal_log_likelihood(lp), (28, 28, 1), n_levels=256)
        return jnp.mean(jnp.argmax(lp, 1) == jnp.asarray(yva)), jnp.mean(bpd)

    rows, clock = [], {"diag_s": 0.0, "t0": None}

    def record(state):
        s = int(state.step)
        if clock["t0"] is None:
            clock["t0"] = time.perf_counter()  # after the first (compiling) step
        if s % args.diag_every and s != args.steps:
            return
        t0 = time.perf_counter()
        acc, bpd = jax.device_get(diag(state.ema_params))
        clock["diag_s"] += time.perf_counter() - t0
        train_s = time.perf_counter() - clock["t0"] - clock["diag_s"]
        rows.append({"step": s, "train_s": round(train_s, 1), "elbo_acc": float(acc),
                     "elbo_bpd": float(bpd), "load": round(os.getloadavg()[0], 2)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)

    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as wd:
        t0 = time.perf_counter()
        state, summary = train(workdir=wd, score_fn=score_fn, sde=sde, init_params=params,
                               images=xtr, labels=ytr, n_levels=256, opts=opts, key=train_key,
                               progress=False, on_step=record)  # fmt: skip
        wall = time.perf_counter() - t0
    shares = interval_shares(score_fn, state.ema_params, sde, xq, np.asarray(yva), eps=opts.eps,
                             key=jax.random.key(3))  # fmt: skip
    return {
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
                "augment_shift",
                "class_ce_weight",
                "class_ce_rows",
                "class_ce_t_min",
            )
        },  # fmt: skip
        "n_params": n_params,
        "n_train": int(len(xtr)),
        "diag_rows": int(len(xva)),
        "wall_s": round(wall, 1),
        "cores": len(os.sched_getaffinity(0)),
        "load_start": round(load0[0], 2),
        "load_end": round(os.getloadavg()[0], 2),
        "final_loss": summary["last_metrics"].get("loss"),
        "curve": rows,
        "intervals": shares,
    }


def to_markdown(res: dict) -> str:
    lines = [
        "# Where does an MNIST score model learn, and does its label matter?",
        "",
        f"Device: {res['device']}. Data: {res['split']}. Diagnostics on validation rows with the "
        "EMA params (the script's docstring): `acc` / `bits/dim` of the denoising bound "
        "(jaxrej.class_elbos, 16 shared draws). `load` = 1-min load average (2 cores).",
        "",
        "| variant | what | params | steps | train s | cores | acc | bits/dim (bound) | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in res["variants"].items():
        last = v["curve"][-1]
        lines.append(
            f"| {name} | {v['description']} | {v['n_params'] / 1e6:.2f}M | {last['step']} | "
            f"{last['train_s']:.0f} | {v.get('cores', 1)} | {last['elbo_acc']:.3f} | "
            f"{last['elbo_bpd']:.2f} | "
            f"{v['load_start']:.1f}-{v['load_end']:.1f} |"
        )
    lines += ["", "Curves (step, train s, acc, bits/dim):", ""]
    for name, v in res["variants"].items():
        pts = ", ".join(f"({r['step']}, {r['train_s']:.0f}, {r['elbo_acc']:.2f}, "
                        f"{r['elbo_bpd']:.2f})" for r in v["curve"])  # fmt: skip
        lines.append(f"- {name}: {pts}")
    lines += ["", "Per time interval at the last step (bits: the interval's share of bits/dim, "
              "negative = gained; gap: true class - mean other, nats; acc: that share alone):", ""]  # fmt: skip
    for name, v in res["variants"].items():
        s = v["intervals"]
        lines += [f"**{name}**", "", "| t from | t to | bits | gap | gap sd | acc |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for i in range(len(s["bits"])):
            lines.append(f"| {s['edges'][i]:.0e} | {s['edges'][i + 1]:.0e} | {s['bits'][i]:.3f} | "
                         f"{s['gap'][i]:.2f} | {s['gap_sd'][i]:.2f} | {s['acc'][i]:.3f} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for name, v in res["variants"].items():
        ts = [r["train_s"] / 60 for r in v["curve"]]
        ax[0].plot(ts, [r["elbo_acc"] for r in v["curve"]], marker="o", label=name)
        ax[1].plot(ts, [r["elbo_bpd"] for r in v["curve"]], marker="o", label=name)
        s = v["intervals"]
        mid = np.sqrt(np.asarray(s["edges"][:-1]) * np.asarray(s["edges"][1:]))
        ax[2].plot(mid, s["acc"], marker="o", label=name)
    ax[0].set(xlabel="training time (min)", ylabel="accuracy", ylim=(0, 1),
              title="denoising-bound classifier, validation rows")  # fmt: skip
    ax[1].set(xlabel="training time (min)", ylabel="bits/dim (bound)", title="class-marginal bound")
    ax[2].set(xscale="log", xlabel="t (interval midpoint)", ylabel="accuracy", ylim=(0, 1),
              title="accuracy of one time interval's share")  # fmt: skip
    ax[0].legend(fontsize=8)
    fig.tight_layout()
    from jaxrej.io import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", choices=sorted(VARIANTS), default="config")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--diag-every", type=int, default=1000)
    p.add_argument("--diag-rows", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="toy widths and 40 steps")
    p.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--out", default="mnist_sbgc_curve")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.diag_every, args.diag_rows = 40, 20, 8
        if args.results_dir == os.path.join(HERE, "results"):  # toy numbers never go there
            args.results_dir = tempfile.mkdtemp(prefix="mnist_sbgc_curve_quick_")
    v = run_variant(args)
    v["command"] = "python -m benchmarks.mnist_sbgc_curve " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    # read the other variants' rows only now: a variant trained alongside may have written them
    path = os.path.join(args.results_dir, f"{args.out}.json")
    res = {"variants": {}}
    if os.path.isfile(path):
        with open(path) as f:
            res = json.load(f)
    res.update({"device": f"{DEVICE}: {platform.processor() or platform.machine()}, "
                          f"jax {jax.__version__}",
                "split": "train on the 19,690 rows of the MNIST training-set file; diagnostics "
                         "on validation rows of the 8,000-row test-set file (registry split)"})  # fmt: skip
    res.pop("command", None)
    res["variants"][args.variant] = v
    write_report(args.out, res, args.results_dir, to_markdown, plot)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
