"""Hutchinson divergence estimates vs the exact trace (the SBGC paper's Fig. 3 analogue).

Run:  python -m benchmarks.hutchinson [--workdir runs/digits] [--n 24]
      [--probes 1 4 16] [--tol 1e-4] [--quick]        (or: jaxrej bench hutchinson ...)

Workload: `n` test digits (evenly spaced, dequantized with key 0), every class, the library's
default solver at rtol = atol = `tol` (default: the library's) for every variant (the same solver setting, so the differences are the
estimator's). Variants: the exact trace; Rademacher and Gaussian probes with K probes averaged,
either the same K probes for all classes of an example ("shared", what
`jaxrej.class_log_likelihoods` does) or independent probes per (example, class) pair.

Reported per variant: classification accuracy, agreement of the argmax with the exact trace,
mean log p(x | true class) +- its standard error over the examples, the estimator's error
against the exact trace on every pair (mean = bias, RMS), the RMS error of the difference between
the true class and the best other class (what an argmax sees), and the cost per example (all
classes). Hutch++ is not implemented (see benchmarks/README.md).

Writes benchmarks/results/hutchinson.json, .md and .png.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.likelihood_speed import RESULTS, device_name
from benchmarks.report import write_report
from benchmarks.solver_tolerance import digits_workload, example_probes, run_pairs, toy_problem
from benchmarks.trained import WORKDIR
from jaxrej.divergence import exact_trace, hutchinson_trace, hutchpp_trace, sample_probes
from jaxrej.flow import FlowSolve

DEFAULT_SOLVER, DEFAULT_TOL = FlowSolve().solver, FlowSolve().rtol

_WARM: set = set()


def run_variant(score_fn, params, sde, x, pairs, probes, tol, exact=False):
    """((B, C) logp, seconds, mean NFE) for all pairs; probes (P, K, *event) per pair."""
    n, c = x.shape[0], int(pairs[:, 1].max()) + 1
    xp = np.asarray(x)[pairs[:, 0]]
    own = np.stack([np.arange(len(pairs)), pairs[:, 1]], 1)
    fn = lambda: run_pairs(score_fn, params, sde, xp, own, probes, solver=DEFAULT_SOLVER, tol=tol,  # noqa: E731
                           exact=exact)  # fmt: skip
    shape = (len(pairs), probes.shape[1], exact)
    if shape not in _WARM:  # compile + warm up once per static shape (kinds and modes share it)
        fn()
        _WARM.add(shape)
    t0 = time.perf_counter()
    lp, nfe, ok = fn()
    seconds = time.perf_counter() - t0
    out = np.full((n, c), np.nan)
    out[pairs[:, 0], pairs[:, 1]] = np.where(ok, lp, np.nan)
    return out, seconds, float(nfe.mean())


POINT_TIMES = (0.05, 0.3, 0.7)
BUDGETS = (3, 6, 12, 24)  # Jacobian-vector products per estimate (exact: D)


def pointwise_variance(score_fn, params, sde, x, labels, draws=256, seed=7):
    """Per-evaluation variance of Hutchinson (Rademacher, M probes) and Hutch++ (M/3 sketch, M/3
    for Q, M/3 probes) at equal products M, at points x_t = mean(t) x + std(t) z of the true class's
    probability-flow field; the exact trace (D products) is the truth. Rows per (t, M)."""
    from jaxrej.flow.field import velocity

    rows, key = [], jax.random.key(seed)
    for t in POINT_TIMES:
        tt = jnp.float32(t)
        kz, key = jax.random.split(key)
        mean, std = sde.marginal(jnp.asarray(x), tt)
        xt = mean + std * jax.random.normal(kz, x.shape)
        for m in (m for m in BUDGETS if m // 3 <= x[0].size):  # a sketch has at most D vectors
            var_h, var_pp, exact_all = [], [], []
            for i in range(x.shape[0]):
                v = velocity(score_fn, sde, params, jnp.int32(labels[i]))
                f = lambda z, v=v: v(tt, z)  # noqa: E731
                exact_all.append(float(exact_trace(f, xt[i])[1]))
                keys = jax.random.split(jax.random.fold_in(key, 1000 * m + i), draws)
                shape = xt.shape[1:]
                hu = jax.vmap(
                    lambda k, f=f, i=i: hutchinson_trace(f, xt[i], sample_probes(k, shape, m))[1]
                )
                pp = jax.vmap(lambda k, f=f, i=i: hutchpp_trace(
                    f, xt[i], *jnp.split(sample_probes(k, shape, 2 * (m // 3)), 2))[1])  # fmt: skip
                var_h.append(float(np.var(np.asarray(hu(keys)))))
                var_pp.append(float(np.var(np.asarray(pp(keys)))))
            rows.append(dict(t=t, products=m, exact_trace_mean=float(np.mean(exact_all)),
                             hutchinson_var=float(np.mean(var_h)), hutchpp_var=float(np.mean(var_pp)),
                             ratio=float(np.mean(var_pp) / np.mean(var_h)) if np.mean(var_h) > 0 else None))  # fmt: skip
            print(rows[-1])
    return rows


def summarize(logp, exact, labels, seconds, nfe, n):
    rows = np.arange(n)
    err = logp - exact
    own = logp[rows, labels]
    other = np.where(np.arange(logp.shape[1]) == labels[:, None], -np.inf, logp).max(1)
    other_x = np.where(np.arange(logp.shape[1]) == labels[:, None], -np.inf, exact).max(1)
    margin_err = (own - other) - (exact[rows, labels] - other_x)
    return dict(
        accuracy=float(np.mean(np.nanargmax(logp, 1) == labels)),
        argmax_agree_exact=float(np.mean(np.nanargmax(logp, 1) == np.nanargmax(exact, 1))),
        logp_true_mean=float(np.nanmean(own)),
        logp_true_se=float(np.nanstd(own, ddof=1) / np.sqrt(n)),
        err_mean=float(np.nanmean(err)),
        err_se=float(np.nanstd(err, ddof=1) / np.sqrt(np.isfinite(err).sum())),
        err_rms=float(np.sqrt(np.nanmean(err**2))),
        margin_err_rms=float(np.sqrt(np.nanmean(margin_err**2))),
        ms_per_example=1e3 * seconds / n,
        nfe_mean=nfe,
        failed=int(np.isnan(logp).sum()),
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=WORKDIR)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--probes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--tol", type=float, default=DEFAULT_TOL)
    ap.add_argument("--quick", action="store_true", help="toy Gaussian score, probes 1 and 4")
    ap.add_argument("--out", default="hutchinson")
    ap.add_argument("--results-dir", default=RESULTS)
    args = ap.parse_args(argv)
    if args.n < 2 or any(k < 1 for k in args.probes) or not args.tol > 0:
        raise ValueError("--n >= 2, --probes >= 1 and --tol > 0 expected")
    load0 = os.getloadavg()
    if args.quick:
        score_fn, params, sde, x, labels, c = toy_problem(args.n, seed=1)
        probes_list = [1, 4]
        workload = f"toy Gaussian, D={x.shape[1]}, {c} classes"
    else:
        score_fn, params, sde, x, labels, c = digits_workload(args.workdir, "test", args.n)
        probes_list = sorted(set(args.probes))
        workload = f"digits 8x8 ({args.workdir}), {c} classes"
    n = x.shape[0]
    pairs = np.argwhere(np.ones((n, c), bool))
    print(
        f"{workload}: {n} test examples x {c} classes, {DEFAULT_SOLVER} {args.tol:g}; {device_name()}"
    )

    dummy = np.zeros((len(pairs), 1, *x.shape[1:]), np.float32)
    exact, s_exact, nfe_exact = run_variant(score_fn, params, sde, x, pairs, dummy, args.tol,
                                            exact=True)  # fmt: skip
    rows = [dict(divergence="exact", n_probes=None, probes="-",
                 **summarize(exact, exact, labels, s_exact, nfe_exact, n))]  # fmt: skip
    print(rows[-1])
    for kind in ("rademacher", "gaussian"):
        for k in probes_list:
            for mode in ("shared", "independent"):
                if mode == "shared":  # one set per example, indexed by the pair's example
                    pr = example_probes(jax.random.key(2), x, k, kind)[pairs[:, 0]]
                else:  # one set per pair
                    pr = example_probes(jax.random.key(3), jnp.zeros((len(pairs), *x.shape[1:])),
                                        k, kind)  # fmt: skip
                lp, s, nfe = run_variant(score_fn, params, sde, x, pairs, pr, args.tol)
                rows.append(dict(divergence=kind, n_probes=k, probes=mode,
                                 **summarize(lp, exact, labels, s, nfe, n)))  # fmt: skip
                r = rows[-1]
                print(f"{kind:10s} K={k:2d} {mode:11s} acc {r['accuracy']:.3f} "
                      f"err {r['err_mean']:+.2f}+-{r['err_se']:.2f} rms {r['err_rms']:.2f} "
                      f"margin rms {r['margin_err_rms']:.2f}  {r['ms_per_example']:.0f} ms/ex")  # fmt: skip
    points = pointwise_variance(score_fn, params, sde, x[: min(n, 8)], labels[: min(n, 8)],
                                draws=32 if args.quick else 256)  # fmt: skip
    out = dict(
        device=device_name(), load_average_start=list(load0), load_average_end=list(os.getloadavg()),
        pointwise=points,
        workload=dict(description=workload, n=n, classes=c, solver=DEFAULT_SOLVER, rtol=args.tol,
                      atol=args.tol, eps=1e-5, quick=args.quick),
        rows=rows,
    )  # fmt: skip
    write_report(args.out, out, args.results_dir, render, plot)
    return out


def render(out) -> str:
    w = out["workload"]
    lines = [
        f"Device: {out['device']}; load average {out['load_average_start'][0]:.1f} at start, "
        f"{out['load_average_end'][0]:.1f} at end (shared CPU). Workload: {w['description']}, "
        f"{w['n']} test examples x {w['classes']} classes, {w['solver']} rtol=atol={w['rtol']:g}.",
        "",
        "| divergence | K | probes across classes | accuracy | argmax = exact | mean log p(x\\|y) +- SE "
        "| error vs exact: mean +- SE | RMS | RMS of margin error | ms / example | NFE |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        lines.append(
            f"| {r['divergence']} | {r['n_probes'] or '-'} | {r['probes']} | {r['accuracy']:.3f} | "
            f"{r['argmax_agree_exact']:.3f} | {r['logp_true_mean']:.2f} +- {r['logp_true_se']:.2f} | "
            f"{r['err_mean']:+.3f} +- {r['err_se']:.3f} | {r['err_rms']:.3f} | "
            f"{r['margin_err_rms']:.3f} | {r['ms_per_example']:.0f} | {r['nfe_mean']:.0f} |"
        )
    lines += [
        "",
        "Per-evaluation variance of the divergence estimate at equal Jacobian-vector products M "
        f"(points x_t of {min(w['n'], 8)} test digits, true class; exact trace = D products):",
        "",
        "| t | products M | mean exact trace | Hutchinson (Rademacher, M probes) variance | "
        "Hutch++ (M/3 sketch + M/3 + M/3 probes) variance | Hutch++ / Hutchinson |",
        "|---|---|---|---|---|---|",
    ]
    for r in out.get("pointwise", []):
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(
            f"| {r['t']:g} | {r['products']} | {r['exact_trace_mean']:.1f} | "
            f"{r['hutchinson_var']:.3g} | {r['hutchpp_var']:.3g} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def plot(out, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = out["rows"]
    exact = rows[0]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for kind, color in (("rademacher", "C0"), ("gaussian", "C1")):
        for mode, ls in (("shared", "-"), ("independent", "--")):
            rs = [r for r in rows if r["divergence"] == kind and r["probes"] == mode]
            k = [r["n_probes"] for r in rs]
            lab = f"{kind}, {mode}"
            axes[0].semilogx(k, [r["accuracy"] for r in rs], ls, marker="o", color=color, label=lab)
            axes[1].errorbar(k, [r["logp_true_mean"] for r in rs], [r["logp_true_se"] for r in rs],
                             ls=ls, marker="o", color=color, label=lab, capsize=3)  # fmt: skip
            axes[2].loglog(k, [r["err_rms"] for r in rs], ls, marker="o", color=color, label=lab)
    axes[0].axhline(exact["accuracy"], color="k", lw=1, label="exact")
    axes[1].axhline(exact["logp_true_mean"], color="k", lw=1, label="exact")
    axes[1].set_xscale("log")
    axes[0].set(xlabel="probes K", ylabel="accuracy", title="accuracy")
    axes[1].set(xlabel="probes K", ylabel="mean log p(x|y) +- SE", title="log-likelihood")
    axes[2].set(xlabel="probes K", ylabel="RMS error vs exact (nats)", title="estimator error")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{out['workload']['description']} -- {out['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
