"""Where an MNIST score model loses bits: its denoising bound against the exact denoiser of the
per-pixel histogram model (the trivial baseline), per time interval and pixel group.

    python -m benchmarks.mnist_bits --workdir runs/mnist_sbgc --rows 100
    python -m benchmarks.mnist_bits --quick      # a toy run of the config, 8 rows, temp folders

The histogram model: pixel i's value is bin k = [k/256, (k+1)/256] with probability pi_ik (the
training rows' counts + 1/2), uniform in the bin, pixels independent. Its noise posterior
E[z | x_t] is exact at every t (a mixture of truncated normals: models/score.py
`group_posterior`), so
1. its bound (jaxrej.class_elbos) against its exact dequantized bits/dim, for several smallest
   times eps: what the bound's start costs even a perfect denoiser;
2. the run's model (true label) against it on the same (t, z, dequantization) draws: the
   integrand 1/2 w(t) ||eps_theta - z||^2 per time interval (16 log-spaced intervals of
   [eps, 1]) and pixel group (level 0, levels >= 250, the rest), in bits/dim; positive = the
   model loses bits there.
Validation rows of the run's eval set.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from benchmarks.report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))
GROUPS = ("level 0", "levels >= 250", "levels 1-249")
EPS_LIST = (1e-5, 1e-6, 1e-7, 1e-8)


def histogram_eps_fn(log_pi):
    """eps(x_t (D,), m, std) = E[z | x_t] of the per-pixel histogram model, log_pi (D, L)."""
    import jax
    import jax.numpy as jnp

    from jaxrej.models.score import log_ndtr_diff

    n_levels = log_pi.shape[1]
    lo = jnp.arange(n_levels, dtype=jnp.float32) / n_levels
    hi = lo + 1.0 / n_levels

    def eps_fn(x_t, m, std):
        a, b = (x_t[:, None] - m * hi) / std, (x_t[:, None] - m * lo) / std
        log_z = log_ndtr_diff(a, b)
        log_phi = lambda u: -0.5 * jnp.square(u) - 0.5 * math.log(2 * math.pi)  # noqa: E731
        mean = jnp.clip(jnp.exp(log_phi(a) - log_z) - jnp.exp(log_phi(b) - log_z), a, b)
        return jnp.sum(jax.nn.softmax(log_pi + log_z, axis=-1) * mean, axis=-1)

    return eps_fn


def measure(workdir: str, rows: int, draws: int, per_interval: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.mnist_sbgc_run import validation_rows
    from jaxrej.data.registry import load_dataset
    from jaxrej.elbo import class_elbos
    from jaxrej.training.losses import importance_weight
    from jaxrej.training.workdir import load_trained

    tm = load_trained(workdir)
    sde, d = tm.sde, tm.run.data
    train = load_dataset(d.dataset, d.train_split)
    levels = d.n_levels
    flat = train.images.reshape(len(train.images), -1)
    counts = np.stack([(flat == k).sum(0) for k in range(levels)], -1) + 0.5
    pi = counts / counts.sum(-1, keepdims=True)
    eps_hist = histogram_eps_fn(jnp.asarray(np.log(pi), jnp.float32))
    x, y_val, img = validation_rows(d, rows)
    event = img.shape[1:]
    lv = img.reshape(len(img), -1)
    exact = float(-np.mean(np.log(levels * pi[np.arange(lv.shape[1]), lv]).sum(1)))
    dims = lv.shape[1]
    to_bpd = lambda nats: nats / dims / math.log(2)  # noqa: E731

    def hist_score(params, xe, t, y):
        std = sde.std(t)
        return (-eps_hist(xe.reshape(-1), sde.mean_coeff(t), std) / std).reshape(xe.shape)

    bounds = []
    for eps in EPS_LIST:
        b = np.concatenate([np.asarray(class_elbos(hist_score, None, sde, x[i : i + 25],
                                                   num_classes=1, key=jax.random.key(1),
                                                   n_times=draws, eps=eps, chunk_size=64))[:, 0]
                            for i in range(0, len(x), 25)])  # fmt: skip
        bpd = -b / dims / math.log(2) + math.log2(levels)
        bounds.append({"eps": eps, "bound_bpd": float(bpd.mean()),
                       "se": float(bpd.std() / math.sqrt(len(bpd)))})  # fmt: skip
        print(bounds[-1], flush=True)

    eps0 = float(tm.run.eval.eps)
    edges = np.geomspace(eps0, sde.T, 17)
    masks = [lv == 0, lv >= 250, (lv > 0) & (lv < 250)]
    y = jnp.asarray(y_val)

    def one(xi, yi, t, z):
        m, std = sde.mean_coeff(t), sde.std(t)
        xt = m * xi + std * z
        s = tm.score_fn(tm.params, xt.reshape(event), t, yi).reshape(-1)
        return jnp.square(std * s + z), jnp.square(eps_hist(xt, m, std) - z)

    pair = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, None, 0, 0)), in_axes=(0, 0, 0, 0)))
    key, intervals = jax.random.key(3), []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        k1, k2, key = jax.random.split(key, 3)
        u = jnp.arange(per_interval) + jax.random.uniform(k1, (len(x), per_interval))
        t = jnp.exp(math.log(a) + u / per_interval * (math.log(b) - math.log(a)))
        z = jax.random.normal(k2, (len(x), per_interval, dims))
        xf = x.reshape(len(x), -1)
        parts = [pair(xf[i : i + 25], y[i : i + 25], t[i : i + 25], z[i : i + 25])
                 for i in range(0, len(x), 25)]  # fmt: skip
        rm, rh = (jnp.concatenate([p[j] for p in parts]) for j in (0, 1))
        # 1/2 int_a^b w(t) (.) dt with dt = t dlog t, log-uniform t: (n, D) nats
        w = importance_weight(sde, t) * t * (math.log(b) - math.log(a))
        diff = 0.5 * np.asarray(jnp.mean(w[..., None] * (rm - rh), axis=1))
        intervals.append({"t_from": float(a), "t_to": float(b),
                          "groups": [to_bpd(float((diff * mk).sum(1).mean())) for mk in masks]})  # fmt: skip
        print(intervals[-1], flush=True)
    return {"workdir": workdir, "checkpoint_step": tm.step, "rows": int(len(x)), "draws": draws,
            "per_interval": per_interval, "exact_bpd": exact / dims / math.log(2) + math.log2(levels),
            "group_fractions": [float(mk.mean()) for mk in masks], "eps_bounds": bounds,
            "intervals": intervals}  # fmt: skip


def to_markdown(res: dict) -> str:
    lines = [
        "# Where the MNIST score model loses bits",
        "",
        f"Run `{res['workdir']}` (checkpoint {res['checkpoint_step']}), {res['rows']} validation "
        f"rows. The per-pixel histogram model's exact bits/dim: {res['exact_bpd']:.3f}.",
        "",
        f"Its denoising bound ({res['draws']} draws) from the smallest time eps:",
        "",
        "| eps | bound bits/dim | above the exact |",
        "|---|---|---|",
    ]
    for b in res["eps_bounds"]:
        lines.append(f"| {b['eps']:g} | {b['bound_bpd']:.3f} +- {b['se']:.3f} | "
                     f"{b['bound_bpd'] - res['exact_bpd']:.3f} |")  # fmt: skip
    fr = ", ".join(
        f"{g} {100 * f:.1f}%" for g, f in zip(GROUPS, res["group_fractions"], strict=True)
    )
    lines += ["", f"The run's model (true label) minus the histogram model, bits/dim of the "
              f"bound's integrand, per time interval and pixel group ({fr} of the pixels; "
              f"{res['per_interval']} draws per interval; positive = the model loses):", "",
              "| t from | t to | " + " | ".join(GROUPS) + " |", "|---|---|" + "---|" * len(GROUPS)]  # fmt: skip
    tot = [0.0] * len(GROUPS)
    for r in res["intervals"]:
        tot = [a + b for a, b in zip(tot, r["groups"], strict=True)]
        lines.append(f"| {r['t_from']:.1e} | {r['t_to']:.1e} | "
                     + " | ".join(f"{v:+.4f}" for v in r["groups"]) + " |")  # fmt: skip
    lines.append("| all | | " + " | ".join(f"**{v:+.3f}**" for v in tot) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="runs/mnist_sbgc")
    p.add_argument("--rows", type=int, default=100)
    p.add_argument("--draws", type=int, default=64, help="(t, z) draws of the histogram's bound")
    p.add_argument("--per-interval", type=int, default=8, help="draws per time interval")
    p.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--quick", action="store_true", help="a toy run of the config, 8 rows, 4 draws")
    args = p.parse_args(argv)
    if args.quick:
        from benchmarks.mnist_sbgc_run import quick_dirs

        args.workdir, args.results_dir = quick_dirs("mnist_bits", args.results_dir)
        args.rows, args.draws, args.per_interval = 8, 4, 2
    res = measure(args.workdir, args.rows, args.draws, args.per_interval)
    write_report("mnist_bits", res, args.results_dir, to_markdown)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
