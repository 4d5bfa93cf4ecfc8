"""Which times classify? A trained run's class differences per time, and the accuracy of a label
window [label_cutoff, h] (jaxrej.elbo's label_max) against its top h, on validation rows.

    python -m benchmarks.label_window --workdir runs/mnist_sbgc_s11 --rows 1000 --draws 32
    python -m benchmarks.label_window --quick      # a toy run of the MNIST config, 8 rows

On the first `rows` validation rows of the run's eval set (dequantized once: uniform noise, seed
0), `draws` stratified (t, z) draws per row on [t0, T], t0 the net's label cutoff (eps without
one), shared by the classes: the weighted residual of each (row, class, draw) (jaxrej.elbo's
integrand, whose mean over draws is -2 x the class bound's part on [t0, T]). From them, without
another network call:
  per stratum  the accuracy of the class differences of one of 8 equal-probability strata of the
               draws' time density alone (which times carry the label's evidence);
  window h     the accuracy of the draws below h alone: the classifier of label_max = h (its
               class differences come from [t0, h] only), here with the draws that land there,
               fewer than label_max's own (the window gets all n_times of its draws);
with the two halves of the rows apart, so that a choice of h on one half can be read on the other.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

from benchmarks.report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))
TOPS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8)
N_STRATA = 8


def residuals(workdir: str, rows: int, draws: int, step: int | None):
    """(r (N, C, K), t (N, K), c (N, K), y (N,), t0, trained run) of the module doc."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.mnist_sbgc_run import validation_rows
    from jaxrej.elbo import draws as elbo_draws
    from jaxrej.elbo import residual
    from jaxrej.training.workdir import load_trained

    tm = load_trained(workdir, step=step)
    e, n_classes = tm.run.eval, tm.run.data.num_classes
    x, y, _ = validation_rows(tm.run.data, rows)
    t0 = tm.label_cutoff or float(e.eps)

    @jax.jit
    def batch(xb, key):
        t, c, z = elbo_draws(tm.sde, xb, draws, key=key, time_sampling="stratified", eps=t0)

        def row(xi, ti, zi):  # (C, K)
            def one(cls):
                return jax.vmap(lambda tt, zz: residual(tm.score_fn, tm.params, tm.sde, xi, tt,
                                                        zz, cls))(ti, zi)  # fmt: skip

            return jax.vmap(one)(jnp.arange(n_classes, dtype=jnp.int32))

        return jax.lax.map(lambda a: row(*a), (xb, t, z)), t, c

    out = {"r": [], "t": [], "c": []}
    size = 20
    start = time.perf_counter()
    for i in range(0, len(x), size):
        r, t, c = batch(x[i : i + size], jax.random.fold_in(jax.random.key(7), i))
        for k, v in zip(("r", "t", "c"), (r, t, c), strict=True):
            out[k].append(np.asarray(v, np.float64))
        done = min(i + size, len(x))
        print(f"{done}/{len(x)} rows: {time.perf_counter() - start:.0f} s", flush=True)
    return (*(np.concatenate(out[k]) for k in ("r", "t", "c")), y, t0, tm)


def measure(workdir: str, rows: int, draws: int, step: int | None) -> dict:
    import numpy as np

    start = time.perf_counter()
    r, t, c, y, t0, tm = residuals(workdir, rows, draws, step)
    half = len(y) // 2

    def accs(mask):  # accuracy of the draws in mask (N, K): all rows, first half, second half
        right = (-0.5 * np.mean((c * mask)[:, None, :] * r, axis=-1)).argmax(1) == y
        return [float(np.mean(right)), float(np.mean(right[:half])), float(np.mean(right[half:]))]

    strata = []
    per = draws // N_STRATA if draws >= N_STRATA else 1
    for s in range(0, draws, per):
        mask = np.zeros_like(t, bool)
        mask[:, s : s + per] = True  # stratified draws are in time order (jaxrej.elbo.draws)
        strata.append({"t_from": float(t[:, s].min()), "t_to": float(t[:, s + per - 1].max()),
                       "acc": accs(mask)})  # fmt: skip
    windows = [{"h": h, "draws_in": float(np.mean(np.sum(t < h, axis=1))), "acc": accs(t < h)}
               for h in TOPS if h > t0]  # fmt: skip
    windows.append({"h": None, "draws_in": float(draws), "acc": accs(np.ones_like(t, bool))})
    return {"workdir": workdir, "checkpoint_step": tm.step, "rows": int(len(y)), "draws": draws,
            "t0": t0, "strata": strata, "windows": windows,
            "seconds": round(time.perf_counter() - start, 1),
            "load": round(os.getloadavg()[0], 2)}  # fmt: skip


def to_markdown(res: dict) -> str:
    pct = lambda a: " | ".join(f"{100 * v:.1f}%" for v in a)  # noqa: E731
    lines = [
        "# Which times classify? The label's window",
        "",
        f"Run `{res['workdir']}` (checkpoint {res['checkpoint_step']}), the first {res['rows']} "
        f"validation rows, {res['draws']} stratified draws per row on [{res['t0']:g}, 1] shared "
        f"by the classes; {res['seconds']:.0f} s, load {res['load']} on 2 cores. Accuracy of "
        "the class differences of a subset of the draws: all rows | first half | second half.",
        "",
        "**Window [t0, h]** (the classifier of `label_max = h`, read from the draws below h):",
        "",
        "| h | draws below h | all | first half | second half |",
        "|---|---|---|---|---|",
    ]
    for w in res["windows"]:
        h = "none (1)" if w["h"] is None else f"{w['h']:g}"
        lines.append(f"| {h} | {w['draws_in']:.1f} | {pct(w['acc'])} |")
    lines += ["", "**One stratum of the draws alone** (equal probability under the time density):",
              "", "| t from | t to | all | first half | second half |", "|---|---|---|---|---|"]  # fmt: skip
    for s in res["strata"]:
        lines.append(f"| {s['t_from']:.3f} | {s['t_to']:.3f} | {pct(s['acc'])} |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    w = [x for x in res["windows"] if x["h"] is not None]
    ax[0].plot([x["h"] for x in w], [100 * x["acc"][0] for x in w], "o-", label="window [t0, h]")
    ax[0].axhline(100 * res["windows"][-1]["acc"][0], color="gray", ls="--", label="all times")
    ax[0].set(xlabel="h (top of the label's window)", ylabel="accuracy (%)", xscale="log")
    ax[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax[0].set_xticks([x["h"] for x in w], [f"{x['h']:g}" for x in w], fontsize=7)
    ax[0].legend()
    mid = [math.sqrt(s["t_from"] * s["t_to"]) for s in res["strata"]]
    ax[1].plot(mid, [100 * s["acc"][0] for s in res["strata"]], "o-")
    ax[1].set(xlabel="t (one stratum's draws alone)", ylabel="accuracy (%)", xscale="log")
    fig.suptitle(f"{res['rows']} validation rows, {res['draws']} draws per row")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="runs/mnist_sbgc")
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--draws", type=int, default=32)
    p.add_argument("--step", type=int, default=None, help="checkpoint (default: the newest)")
    p.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--quick", action="store_true", help="a toy run of the config, 8 rows")
    args = p.parse_args(argv)
    if args.rows < 2 or args.draws < 1:
        raise SystemExit(f"--rows >= 2 and --draws >= 1 expected, got {args.rows}, {args.draws}")
    if args.quick:
        from benchmarks.mnist_sbgc_run import quick_dirs

        args.workdir, args.results_dir = quick_dirs("label_window", args.results_dir)
        args.rows, args.draws = 8, 8
    res = measure(args.workdir, args.rows, args.draws, args.step)
    write_report("label_window", res, args.results_dir, to_markdown, plot)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
