"""Input gradients through the probability-flow solve: jaxrej's adjoints vs diffrax's.

Run:  python -m benchmarks.adjoint [--workdir runs/digits] [--batch 1 8 32]
      [--tol 1e-3 1e-5] [--repeats 3] [--quick]            (or: jaxrej bench adjoint ...)

Workload: test digits (evenly spaced, dequantized with key 0) with their true labels, the
library's default solver and Rademacher divergence (1 probe; `--divergence exact` for the exact
trace), max_steps = 4096 (the default). For each batch size, tolerance and adjoint: the forward
solve (`jaxrej.log_likelihood`) and the forward solve + input gradient, medians over `repeats`
rounds after a compiling run, the forward and the three gradients timed in turn in each round (a
drifting machine speed then moves them alike); each tolerance compiles its own functions.
Adjoints: jaxrej's "checkpoint" (recorded-grid discretise-then-optimise) and "backsolve"
(continuous adjoint), via `jaxrej.autodiff.log_likelihood_and_grad`, and the reference a diffrax
user would write: `jax.grad` through `diffrax.diffeqsolve` of the same augmented field with
diffrax's default `RecursiveCheckpointAdjoint` ("diffrax"). Memory: XLA's compiled temporary
buffer size (`jax.jit(f).lower(x).compile().memory_analysis()`, `temp_size_in_bytes`) of the
gradient and of the forward, per batch size (it does not depend on the tolerance's value), at
max_steps 4096 and 256. Every gradient is compared with the checkpoint adjoint's (norm-relative
difference).

Writes benchmarks/results/adjoint.json, .md and .png.
"""

from __future__ import annotations

import argparse
import functools
import os

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import jaxrej
from benchmarks.likelihood_speed import RESULTS, device_name, interleaved
from benchmarks.report import write_report
from benchmarks.solver_tolerance import digits_workload, example_probes, toy_problem
from benchmarks.trained import WORKDIR
from jaxrej.autodiff import log_likelihood_and_grad

ADJOINTS = ("checkpoint", "backsolve", "diffrax")
MAX_STEPS = (4096, 256)
SOLVER = jaxrej.FlowSolve().solver


def diffrax_grad(score_fn, params, sde, x, y, probes, tol, *, solver, max_steps=4096):
    """(logp (B,), d logp / dx (B, *event)): jax.grad through diffeqsolve with diffrax's default
    RecursiveCheckpointAdjoint, diffrax's own solver and the plain field, under jaxrej's error
    norm and in jaxrej's solver time (`FlowSolve.time_change`) -- the reference for "checkpoint"
    (the same discrete map)."""
    from jaxrej.flow import SOLVERS
    from jaxrej.flow.field import change_time, velocity_and_divergence
    from jaxrej.flow.solve import augmented_norm  # jaxrej's step-size control: the same steps

    score_fn, sde, solve = change_time(score_fn, sde, jaxrej.FlowSolve(solver=solver))

    def one(xi, yi, pi):
        field = velocity_and_divergence(score_fn, sde, params, yi, pi)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, s, args: field(t, s[0])), SOLVERS[solver].make(),
            t0=jnp.asarray(solve.eps, xi.dtype), t1=jnp.asarray(sde.T, xi.dtype), dt0=None,
            y0=(xi, jnp.zeros((), xi.dtype)), max_steps=max_steps, throw=False,
            stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol, norm=augmented_norm),
        )  # fmt: skip
        return sde.prior_logp(sol.ys[0][-1]) + sol.ys[1][-1]

    def total(x_):
        lp = jax.vmap(one)(x_, y, probes)
        return lp.sum(), lp

    g, lp = jax.grad(total, has_aux=True)(x)
    return lp, g


def temp_bytes(fn, x) -> int | None:
    """XLA's temporary buffer bytes for the compiled `fn(x)` (None if the backend gives none)."""
    analysis = jax.jit(fn).lower(x).compile().memory_analysis()
    return None if analysis is None else int(analysis.temp_size_in_bytes)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=WORKDIR)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--tol", type=float, nargs="+", default=[1e-3, 1e-5])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="toy Gaussian score, batch 2")
    ap.add_argument("--out", default="adjoint")
    ap.add_argument("--results-dir", default=RESULTS)
    ap.add_argument("--divergence", choices=("rademacher", "exact"), default="rademacher")
    args = ap.parse_args(argv)
    if any(b < 1 for b in args.batch) or any(not t > 0 for t in args.tol) or args.repeats < 1:
        raise ValueError("--batch >= 1, --tol > 0 and --repeats >= 1 expected")
    load0 = os.getloadavg()
    batches = [2] if args.quick else sorted(set(args.batch))
    nmax = max(batches)
    if args.quick:
        score_fn, params, sde, x_all, y_all, c = toy_problem(nmax, seed=2)
        workload = f"toy Gaussian, D={x_all.shape[1]}, {c} classes"
    else:
        score_fn, params, sde, x_all, y_all, c = digits_workload(args.workdir, "test", nmax)
        workload = f"digits 8x8 ({args.workdir}), {c} classes"
    exact = args.divergence == "exact"
    solver = SOLVER
    print(f"{workload}; batches {batches}, tolerances {args.tol}; {device_name()}")
    key = jax.random.key(0)
    p_all = None if exact else jnp.asarray(example_probes(jax.random.key(1), x_all))
    rows = []
    for b in batches:
        x, y = x_all[:b], jnp.asarray(y_all[:b])
        probes = None if exact else p_all[:b]
        opts = dict(key=key, divergence=args.divergence, probes=probes, solver=solver)

        def grad_fn(adjoint, tol, max_steps=4096):
            if adjoint == "diffrax":
                return lambda x_: diffrax_grad(score_fn, params, sde, x_, y, probes, tol,
                                               solver=solver, max_steps=max_steps)  # fmt: skip
            return lambda x_: log_likelihood_and_grad(score_fn, params, sde, x_, y, rtol=tol,
                                                      atol=tol, adjoint=adjoint,
                                                      max_steps=max_steps, **opts)  # fmt: skip

        def forward(tol, max_steps=4096):
            return lambda x_: jaxrej.log_likelihood(score_fn, params, sde, x_, y, rtol=tol,
                                                    atol=tol, max_steps=max_steps, **opts).logp  # fmt: skip

        mem = {(a, m): temp_bytes(grad_fn(a, 1e-3, m), x) for a in ADJOINTS for m in MAX_STEPS}
        mem.update({("forward", m): temp_bytes(forward(1e-3, m), x) for m in MAX_STEPS})
        for tol in args.tol:
            t = float(tol)
            fns = {"forward": functools.partial(jax.jit(forward(t)), x)}
            fns.update({a: functools.partial(jax.jit(grad_fn(a, t)), x) for a in ADJOINTS})
            # timed in turn, so that a drifting machine speed moves forward and gradients alike
            timing = interleaved(fns, args.repeats, warm=tuple(fns))
            s_fwd = timing["forward"][0]
            grads = {}
            for adjoint in ADJOINTS:
                s_grad, out = timing[adjoint][0], timing[adjoint][3]
                g = np.asarray(out[1])
                grads[adjoint] = g
                rows.append(dict(
                    batch=b, tol=tol, adjoint=adjoint, forward_s=s_fwd, grad_s=s_grad,
                    ratio=s_grad / s_fwd, ms_per_example_grad=1e3 * s_grad / b,
                    **{f"temp_bytes_grad_{m}": mem[(adjoint, m)] for m in MAX_STEPS},
                    **{f"temp_bytes_forward_{m}": mem[("forward", m)] for m in MAX_STEPS},
                    grad_ok=bool(np.isfinite(g).all()),
                    grad_rel_diff_vs_checkpoint=float(
                        np.linalg.norm(g - grads["checkpoint"]) / np.linalg.norm(grads["checkpoint"])
                    ),
                ))  # fmt: skip
                print({k: v for k, v in rows[-1].items()})
    out = dict(
        device=device_name(), load_average_start=list(load0), load_average_end=list(os.getloadavg()),
        workload=dict(description=workload, divergence=args.divergence + ("" if exact else " (1 probe)"),
                      solver=solver, max_steps=4096, repeats=args.repeats, quick=args.quick),
        rows=rows,
    )  # fmt: skip
    write_report(args.out, out, args.results_dir, render, plot)
    return out


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
        "temp MB grad, max_steps 4096 / 256 | temp MB forward | grad rel. diff vs checkpoint |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        lines.append(
            f"| {r['batch']} | {r['tol']:g} | {r['adjoint']} | {r['forward_s']:.3f} | "
            f"{r['grad_s']:.3f} | {r['ratio']:.2f} | {r['ms_per_example_grad']:.1f} | "
            f"{_mb(r['temp_bytes_grad_4096'])} / {_mb(r['temp_bytes_grad_256'])} | "
            f"{_mb(r['temp_bytes_forward_4096'])} | {r['grad_rel_diff_vs_checkpoint']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def plot(out, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = out["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for adjoint, color in zip(ADJOINTS, ("C0", "C1", "C2"), strict=True):
        for tol, ls in zip(sorted({r["tol"] for r in rows}), ("-", "--", ":", "-."), strict=False):
            rs = [r for r in rows if r["adjoint"] == adjoint and r["tol"] == tol]
            axes[0].loglog([r["batch"] for r in rs], [r["ms_per_example_grad"] for r in rs], ls,
                           marker="o", color=color, label=f"{adjoint}, tol {tol:g}")  # fmt: skip
        rs = [r for r in rows if r["adjoint"] == adjoint and r["tol"] == rows[0]["tol"]]
        if rs[0]["temp_bytes_grad_4096"] is not None:
            axes[1].loglog([r["batch"] for r in rs], [r["temp_bytes_grad_4096"] / 2**20 for r in rs],
                           marker="o", color=color, label=adjoint)  # fmt: skip
    rs = [r for r in rows if r["adjoint"] == "checkpoint" and r["tol"] == rows[0]["tol"]]
    if rs[0]["temp_bytes_forward_4096"] is not None:
        axes[1].loglog([r["batch"] for r in rs], [r["temp_bytes_forward_4096"] / 2**20 for r in rs],
                       marker="o", color="k", label="forward only")  # fmt: skip
    axes[0].set(xlabel="batch", ylabel="ms per example (forward + grad)", title="gradient time")
    axes[1].set(xlabel="batch", ylabel="compiled temp MB", title="temporary memory, max_steps 4096")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{out['workload']['description']} -- {out['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
