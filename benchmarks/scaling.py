"""Throughput of likelihood scoring against batch size, event dimension and number of classes.

Run:  python -m benchmarks.scaling [--workdir runs/digits] [--repeats 3] [--quick]
      (or: jaxrej bench scaling ...)

* Batch size: the trained digits model, `jaxrej.log_likelihood` on the true class, Rademacher
  (1 probe), the library's default solver and tolerance (`jaxrej.FlowSolve()`), batches 1 ... 64:
  examples / s and NFE (a vmapped solve runs as long as its slowest member).
* Event dimension D: a synthetic conditional score network (a random one-hidden-layer MLP,
  width 256, on [x, class embedding, time]; D in 16 ... 1024), 16 examples, 8 fixed Dopri5 steps
  (49 evaluations, so the work per solve does not depend on the random field's stiffness),
  Rademacher and exact divergence (exact only up to D = 256: it costs D products per evaluation).
* Number of classes C: the same synthetic network at D = 64, `jaxrej.class_log_likelihoods`
  over C in 2 ... 100 classes, 8 examples, fixed steps: examples / s and (example, class) solves / s;
  and the data-parallel `jaxrej.class_log_likelihoods(..., mesh=jaxrej.batch_mesh())` over all local devices
  (one here) for the same workload, to show the overhead of the sharded path.

Medians over `repeats` runs after a compiling run. Writes benchmarks/results/scaling.json, .md, .png.
"""

from __future__ import annotations

import argparse
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

import jaxrej
from benchmarks.likelihood_speed import RESULTS, device_name, timed
from benchmarks.report import write_report
from benchmarks.solver_tolerance import digits_workload
from benchmarks.trained import WORKDIR


def synthetic_score(d: int, num_classes: int, hidden: int = 256, seed: int = 0):
    """(score_fn, params): a random conditional MLP score for events of shape (d,)."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    emb = 16
    params = dict(
        w1=jax.random.normal(k1, (d + emb + 1, hidden)) / math.sqrt(d + emb + 1),
        w2=jax.random.normal(k2, (hidden, d)) / math.sqrt(hidden),
        e=jax.random.normal(k3, (num_classes, emb)),
    )

    def score_fn(p, x, t, y):
        h = jnp.tanh(jnp.concatenate([x, p["e"][y], t[None]]) @ p["w1"])
        return h @ p["w2"] - x

    return score_fn, params


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=WORKDIR)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="synthetic only, small sizes")
    ap.add_argument("--out", default="scaling")
    ap.add_argument("--results-dir", default=RESULTS)
    args = ap.parse_args(argv)
    if args.repeats < 1:
        raise ValueError(f"--repeats: expected >= 1, got {args.repeats}")
    load0 = os.getloadavg()
    key = jax.random.key(0)
    sde = jaxrej.VPSDE()
    rep = args.repeats
    print(device_name())

    batch_rows = []
    if not args.quick:
        batches = (1, 4, 16, 64)
        score_fn, params, sde_d, x_all, y_all, _ = digits_workload(
            args.workdir, "test", max(batches)
        )
        for b in batches:
            x, y = x_all[:b], jnp.asarray(y_all[:b])
            s, _, r = timed(lambda x=x, y=y: jaxrej.log_likelihood(
                score_fn, params, sde_d, x, y, key=key), rep)  # fmt: skip
            batch_rows.append(dict(batch=b, seconds=s, examples_per_s=b / s,
                                   nfe_mean=float(np.asarray(r.nfe).mean()),
                                   nfe_max=int(np.asarray(r.nfe).max())))  # fmt: skip
            print(batch_rows[-1])

    dim_rows = []
    dims = (4, 16) if args.quick else (16, 64, 256, 1024)
    b = 4 if args.quick else 16
    for d in dims:
        score_fn, params = synthetic_score(d, 10)
        x = jax.random.uniform(jax.random.key(d), (b, d))
        y = jnp.arange(b) % 10
        for div in ("rademacher", "exact"):
            if div == "exact" and d > 256:
                continue
            s, _, r = timed(lambda sf=score_fn, p=params, x=x, div=div: jaxrej.log_likelihood(
                sf, p, sde, x, y, key=key, divergence=div, n_steps=8), rep)  # fmt: skip
            nfe = float(np.asarray(r.nfe).mean())
            dim_rows.append(dict(d=d, divergence=div, batch=b, seconds=s, examples_per_s=b / s,
                                 us_per_eval_per_example=1e6 * s / (b * nfe), nfe=nfe,
                                 ok=bool(np.asarray(r.ok).all())))  # fmt: skip
            print(dim_rows[-1])

    class_rows = []
    classes = (2, 4) if args.quick else (2, 10, 100)
    b, d = (4, 8) if args.quick else (8, 64)
    x = jax.random.uniform(jax.random.key(1), (b, d))
    for c in classes:
        score_fn, params = synthetic_score(d, c)
        opts = dict(num_classes=c, key=key, n_steps=8, screen=None)
        s, _, _ = timed(lambda sf=score_fn, p=params, o=opts: jaxrej.class_log_likelihoods(
            sf, p, sde, x, **o), rep)  # fmt: skip
        s_sh, _, lp_sh = timed(lambda sf=score_fn, p=params, o=opts: jaxrej.class_log_likelihoods(
            sf, p, sde, x, mesh=jaxrej.batch_mesh(), **o), rep)  # fmt: skip
        lp = np.asarray(jaxrej.class_log_likelihoods(score_fn, params, sde, x, **opts))
        class_rows.append(dict(classes=c, batch=b, d=d, seconds=s, examples_per_s=b / s,
                               solves_per_s=b * c / s, sharded_seconds=s_sh,
                               sharded_devices=len(jax.devices()),
                               sharded_max_abs_diff=float(np.max(np.abs(np.asarray(lp_sh) - lp)))))  # fmt: skip
        print(class_rows[-1])

    out = dict(
        device=device_name(), local_devices=len(jax.local_devices()),
        load_average_start=list(load0), load_average_end=list(os.getloadavg()),
        repeats=rep, quick=args.quick, batch=batch_rows, event_dim=dim_rows, classes=class_rows,
        default_solve=dict(solver=jaxrej.FlowSolve().solver, rtol=jaxrej.FlowSolve().rtol),
    )  # fmt: skip
    write_report(args.out, out, args.results_dir, render, plot)
    return out


def render(out) -> str:
    lines = [
        f"Device: {out['device']} ({out['local_devices']} local device(s)); load average "
        f"{out['load_average_start'][0]:.1f} at start, {out['load_average_end'][0]:.1f} at end "
        f"(shared CPU); medians of {out['repeats']}.",
    ]
    if out["batch"]:
        d = out["default_solve"]
        lines += ["", f"Batch size (digits model, true class, Rademacher, library default "
                  f"{d['solver'].capitalize()} {d['rtol']:g}):", "",
                  "| batch | s | examples / s | NFE mean (max) |", "|---|---|---|---|"]  # fmt: skip
        for r in out["batch"]:
            lines.append(f"| {r['batch']} | {r['seconds']:.3f} | {r['examples_per_s']:.1f} | "
                         f"{r['nfe_mean']:.0f} ({r['nfe_max']}) |")  # fmt: skip
    lines += ["", "Event dimension (synthetic MLP score, 8 fixed Dopri5 steps = 49 evaluations):", "",
              "| D | divergence | batch | s | examples / s | us / evaluation / example |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for r in out["event_dim"]:
        lines.append(f"| {r['d']} | {r['divergence']} | {r['batch']} | {r['seconds']:.3f} | "
                     f"{r['examples_per_s']:.1f} | {r['us_per_eval_per_example']:.1f} |")  # fmt: skip
    lines += ["", "Number of classes (synthetic MLP score, fixed steps, Rademacher); sharded = "
              "`mesh=jaxrej.batch_mesh()` over all local devices:", "",
              "| classes | batch | D | s | examples / s | solves / s | sharded s (devices) | "
              "sharded max abs diff |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in out["classes"]:
        lines.append(f"| {r['classes']} | {r['batch']} | {r['d']} | {r['seconds']:.3f} | "
                     f"{r['examples_per_s']:.1f} | {r['solves_per_s']:.0f} | "
                     f"{r['sharded_seconds']:.3f} ({r['sharded_devices']}) | "
                     f"{r['sharded_max_abs_diff']:.1e} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(out, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    if out["batch"]:
        axes[0].loglog([r["batch"] for r in out["batch"]],
                       [r["examples_per_s"] for r in out["batch"]], "o-")  # fmt: skip
    axes[0].set(xlabel="batch", ylabel="examples / s", title="digits model, batch size")
    for div in ("rademacher", "exact"):
        rs = [r for r in out["event_dim"] if r["divergence"] == div]
        axes[1].loglog([r["d"] for r in rs], [r["examples_per_s"] for r in rs], "o-", label=div)
    axes[1].set(xlabel="event dimension D", ylabel="examples / s", title="synthetic score, D")
    axes[1].legend()
    rs = out["classes"]
    axes[2].loglog([r["classes"] for r in rs], [r["examples_per_s"] for r in rs], "o-",
                   label="class_log_likelihoods")  # fmt: skip
    axes[2].loglog([r["classes"] for r in rs], [r["batch"] / r["sharded_seconds"] for r in rs],
                   "s--", label="sharded")  # fmt: skip
    axes[2].set(xlabel="classes C", ylabel="examples / s", title="synthetic score, classes")
    axes[2].legend()
    fig.suptitle(out["device"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
