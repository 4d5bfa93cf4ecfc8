"""Input gradients through the probability-flow solve: checkpoint vs backsolve adjoints.

Run:  python -m benchmarks.adjoint [--workdir /tmp/model/digits_default] [--batch 1 8 32]
      [--tol 1e-3 1e-5] [--repeats 3] [--quick]            (or: jaxrej bench adjoint ...)

Workload: test digits (evenly spaced, dequantized with key 0) with their true labels, Rademacher
divergence (1 probe, the library default), Tsit5, max_steps = 4096 (the default). For each batch
size, tolerance and adjoint: the forward solve (`jaxrej.log_likelihood`) and the forward solve +
input gradient (`jaxrej.autodiff.log_likelihood_and_grad`), medians over `repeats` runs after a
compiling run; the tolerances are traced, so one compilation serves every tolerance. Memory:
XLA's compiled temporary buffer size (`jax.jit(f).lower(x).compile().memory_analysis()`,
`temp_size_in_bytes`) of the gradient and of the forward, per batch size (it does not depend on
the tolerance's value). The two adjoints' gradients are compared (norm-relative difference).

Writes benchmarks/results/adjoint.json, .md and .png.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

import jaxrej
from benchmarks.likelihood_speed import RESULTS, device_name, timed
from benchmarks.solver_tolerance import digits_workload, toy_problem
from jaxrej.autodiff import log_likelihood_and_grad

ADJOINTS = ("checkpoint", "backsolve")


def temp_bytes(fn, x) -> int | None:
    """XLA's temporary buffer bytes for the compiled `fn(x)` (None if the backend gives none)."""
    analysis = jax.jit(fn).lower(x).compile().memory_analysis()
    return None if analysis is None else int(analysis.temp_size_in_bytes)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/model/digits_default")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--tol", type=float, nargs="+", default=[1e-3, 1e-5])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="toy Gaussian score, batch 1 and 4")
    ap.add_argument("--out", default="adjoint")
    ap.add_argument("--results-dir", default=RESULTS)
    args = ap.parse_args(argv)
    if any(b < 1 for b in args.batch) or any(not t > 0 for t in args.tol) or args.repeats < 1:
        raise ValueError("--batch >= 1, --tol > 0 and --repeats >= 1 expected")
    load0 = os.getloadavg()
    batches = [1, 4] if args.quick else sorted(set(args.batch))
    nmax = max(batches)
    if args.quick:
        score_fn, params, sde, x_all, y_all, c = toy_problem(nmax, seed=2)
        workload = f"toy Gaussian, D={x_all.shape[1]}, {c} classes"
    else:
        score_fn, params, sde, x_all, y_all, c = digits_workload(args.workdir, "test", nmax)
        workload = f"digits 8x8 ({args.workdir}), {c} classes"
    print(f"{workload}; batches {batches}, tolerances {args.tol}; {device_name()}")
    key = jax.random.key(0)
    rows = []
    for b in batches:
        x, y = x_all[:b], jnp.asarray(y_all[:b])
        mem = {}
        for adjoint in ADJOINTS:

            def loss(x_, adjoint=adjoint):
                r = jaxrej.log_likelihood(score_fn, params, sde, x_, y, key=key, adjoint=adjoint,
                                          rtol=1e-3, atol=1e-3)  # fmt: skip
                return r.logp.sum()

            mem[adjoint] = temp_bytes(jax.grad(loss), x)
        mem["forward"] = temp_bytes(lambda x_: jaxrej.log_likelihood(
            score_fn, params, sde, x_, y, key=key, rtol=1e-3, atol=1e-3).logp, x)  # fmt: skip
        for tol in args.tol:
            t = jnp.float32(tol)
            opts = dict(key=key, rtol=t, atol=t)
            s_fwd, res = timed(
                lambda o=opts: jaxrej.log_likelihood(score_fn, params, sde, x, y, **o).logp,
                args.repeats,
            )
            grads = {}
            for adjoint in ADJOINTS:
                s_grad, (r, g) = timed(
                    lambda o=opts, a=adjoint: log_likelihood_and_grad(
                        score_fn, params, sde, x, y, adjoint=a, **o
                    ),
                    args.repeats,
                )
                grads[adjoint] = np.asarray(g)
                rows.append(dict(
                    batch=b, tol=tol, adjoint=adjoint, forward_s=s_fwd, grad_s=s_grad,
                    ratio=s_grad / s_fwd, ms_per_example_grad=1e3 * s_grad / b,
                    nfe_forward=float(np.asarray(r.nfe).mean()),
                    temp_bytes_grad=mem[adjoint], temp_bytes_forward=mem["forward"],
                    grad_ok=bool(np.isfinite(grads[adjoint]).all()),
                ))  # fmt: skip
                print({k: v for k, v in rows[-1].items()})
            gc, gb = grads["checkpoint"], grads["backsolve"]
            rel = float(np.linalg.norm(gc - gb) / np.linalg.norm(gc))
            for r in rows[-2:]:
                r["grad_rel_diff_checkpoint_vs_backsolve"] = rel
    out = dict(
        device=device_name(), load_average_start=list(load0), load_average_end=list(os.getloadavg()),
        workload=dict(description=workload, divergence="rademacher (1 probe)", solver="tsit5",
                      max_steps=4096, repeats=args.repeats, quick=args.quick),
        rows=rows,
    )  # fmt: skip
    write(args.out, out, args.results_dir)
    return out


def write(stem, out, results):
    os.makedirs(results, exist_ok=True)
    with open(os.path.join(results, f"{stem}.json"), "w") as f:
        json.dump(out, f, indent=2)
    md = render(out)
    with open(os.path.join(results, f"{stem}.md"), "w") as f:
        f.write(md)
    plot(out, os.path.join(results, f"{stem}.png"))
    print(md)


def _mb(v):
    return "n/a" if v is None else f"{v / 2**20:.1f}"


def render(out) -> str:
    w = out["workload"]
    lines = [
        f"Device: {out['device']}; load average {out['load_average_start'][0]:.1f} at start, "
        f"{out['load_average_end'][0]:.1f} at end (shared CPU). Workload: {w['description']}, "
        f"{w['divergence']}, {w['solver']}, max_steps={w['max_steps']}, medians of {w['repeats']}.",
        "",
        "| batch | rtol=atol | adjoint | forward s | forward + grad s | ratio | ms / example (grad) | "
        "NFE (fwd) | temp MB grad | temp MB forward | grad rel. diff ckpt vs backsolve |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        lines.append(
            f"| {r['batch']} | {r['tol']:g} | {r['adjoint']} | {r['forward_s']:.3f} | "
            f"{r['grad_s']:.3f} | {r['ratio']:.2f} | {r['ms_per_example_grad']:.1f} | "
            f"{r['nfe_forward']:.0f} | {_mb(r['temp_bytes_grad'])} | {_mb(r['temp_bytes_forward'])} | "
            f"{r['grad_rel_diff_checkpoint_vs_backsolve']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def plot(out, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = out["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for adjoint, color in zip(ADJOINTS, ("C0", "C1"), strict=True):
        for tol, ls in zip(sorted({r["tol"] for r in rows}), ("-", "--", ":", "-."), strict=False):
            rs = [r for r in rows if r["adjoint"] == adjoint and r["tol"] == tol]
            axes[0].loglog([r["batch"] for r in rs], [r["ms_per_example_grad"] for r in rs], ls,
                           marker="o", color=color, label=f"{adjoint}, tol {tol:g}")  # fmt: skip
        rs = [r for r in rows if r["adjoint"] == adjoint and r["tol"] == rows[0]["tol"]]
        if rs[0]["temp_bytes_grad"] is not None:
            axes[1].loglog([r["batch"] for r in rs], [r["temp_bytes_grad"] / 2**20 for r in rs],
                           marker="o", color=color, label=adjoint)  # fmt: skip
    rs = [r for r in rows if r["adjoint"] == "checkpoint" and r["tol"] == rows[0]["tol"]]
    if rs[0]["temp_bytes_forward"] is not None:
        axes[1].loglog([r["batch"] for r in rs], [r["temp_bytes_forward"] / 2**20 for r in rs],
                       marker="o", color="k", label="forward only")  # fmt: skip
    axes[0].set(xlabel="batch", ylabel="ms per example (forward + grad)", title="gradient time")
    axes[1].set(xlabel="batch", ylabel="compiled temp MB", title="temporary memory")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{out['workload']['description']} -- {out['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
