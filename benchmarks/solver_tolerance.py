"""Work-precision of the probability-flow solve: solvers x tolerances vs a float64 tight truth.

Run:  python -m benchmarks.solver_tolerance [--workdir runs/digits] [--n-test 360]
      [--n-train 400] [--quick]          (or: jaxrej bench solver_tolerance ...)

Workload: `n_test` test and `n_train` training digits (evenly spaced over each split, dequantized
with key 0), every class, Rademacher divergence with ONE probe per example shared by its classes
(the library default divergence), eps = 1e-5. The probes are drawn once (float32) and fed to
every setting and to the truth, so the errors measured are the solver's, not Hutchinson noise.

Settings: Tsit5, Dopri5, Dopri8 at rtol = atol in 1e-2 ... 1e-7, fixed-step Heun and Euler at
8, 32 and 128 steps. Every solve option is static (`jaxrej.FlowSolve` refuses a traced
tolerance), so each setting compiles once and is timed on its second, warm run.
Truth: the same probes, float64, Dopri8, rtol = atol = 1e-8 (cached in results/ under a
fingerprint of params, data and probes).

Pairs: a float32 Tsit5 1e-5 screen keeps the (example, class) pairs within WINDOW nats of the
example's best class; the others keep their screen value in every setting and in the truth (they
cannot win an argmax nor set the predicted class's score; the table reports the largest error seen
so the margin can be checked against it). They must stay finite: `jaxrej.reject` rejects a row
with a non-finite score, so a -inf placeholder would reject every example in every setting.

Reject decisions: per setting, per-class thresholds `jaxrej.reject.fit_class_thresholds` at the
`percentile` on the training digits scored with that setting; `jaxrej.reject.decide` on the test
digits. A decision flips when (rejected, predicted class if accepted) differs from the truth's
(truth thresholds from the truth's training scores).

Writes benchmarks/results/solver_tolerance.json, .md and .png; prints the table and the
recommendation: the loosest adaptive setting whose decisions, and those of every tighter
tolerance of the same solver, agree with the truth on >= 99.5% of the test digits.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxrej
from benchmarks.likelihood_speed import RESULTS, device_name, fingerprint
from benchmarks.report import write_report
from benchmarks.trained import WORKDIR, ensure_trained
from jaxrej.divergence import sample_probes

WINDOW = 30.0
ADAPTIVE = ("tsit5", "dopri5", "dopri8")
FIXED = ("heun", "euler")
TOLS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
STEPS = (8, 32, 128)
AGREE = 0.995


# ----------------------------------------------------------------------------- workloads


def toy_problem(n: int, num_classes: int = 3, d: int = 4, seed: int = 0):
    """A Gaussian class-conditional toy: data N(mu_y, s2 I), its exact VP score (no model).

    Returns (score_fn, params, sde, x (n, d) float32, labels (n,), num_classes).
    """
    rng = np.random.default_rng(seed)
    mus = rng.normal(size=(num_classes, d)) * 1.5
    labels = np.arange(n) % num_classes
    s2 = 0.3
    x = mus[labels] + math.sqrt(s2) * rng.normal(size=(n, d))
    sde = jaxrej.VPSDE()

    def score_fn(params, x, t, y):
        mu, var = params
        a = sde.mean_coeff(t)
        return -(x - a * mu[y]) / (a**2 * var + sde.std(t) ** 2)

    params = (jnp.asarray(mus, jnp.float32), jnp.asarray(s2, jnp.float32))
    return score_fn, params, sde, jnp.asarray(x, jnp.float32), labels, num_classes


def digits_workload(workdir: str, split: str, n: int, key: int = 0):
    """(score_fn, params, sde, x (n, 8, 8, 1) float32 in [0, 1), labels (n,), num_classes)."""
    from jaxrej.data import digits
    from jaxrej.data.preprocessing import dequantize
    from jaxrej.training.workdir import load_score_model

    score_fn, params, sde, run = load_score_model(ensure_trained(workdir))
    images, labels = digits.load(split)
    idx = np.linspace(0, len(labels) - 1, n).round().astype(int)
    x = dequantize(jnp.asarray(images[idx]), digits.N_LEVELS, key=jax.random.key(key))
    return score_fn, params, sde, x, np.asarray(labels[idx]), run.data.num_classes


def example_probes(key, x, n_probes: int = 1, kind: str = "rademacher") -> np.ndarray:
    """(B, K, *event) float32 probes, one set per example from fold_in(key, i) (numpy, so a
    float64 run sees the same values: jax.random draws different bits under x64)."""
    with jax.enable_x64(False):
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x.shape[0]))
        return np.asarray(
            jax.vmap(lambda k: sample_probes(k, x.shape[1:], n_probes, kind, jnp.float32))(keys)
        )


# ----------------------------------------------------------------------------- solving


@functools.partial(
    jax.jit,
    static_argnames=("score_fn", "sde", "rtol", "atol", "eps", "solver", "n_steps", "max_steps",
                     "exact"),
)  # fmt: skip
def solve_pairs(score_fn, params, sde, x, y, probes, rtol, atol, eps, *, solver, n_steps=None,
                max_steps=4096, exact=False):  # fmt: skip
    """(logp, nfe, ok), each (P,), for pairs x: (P, *event), y: (P,), probes: (P, K, *event).

    `jaxrej.log_likelihood` with the probes given explicitly (ignored when `exact`); every solve
    option is static (a FlowSolve field), so each setting compiles once.
    """
    res = jaxrej.log_likelihood(
        score_fn, params, sde, x, y, key=jax.random.key(0),
        divergence="exact" if exact else "rademacher", probes=None if exact else probes,
        rtol=rtol, atol=atol, eps=eps, solver=solver, n_steps=n_steps, max_steps=max_steps,
    )  # fmt: skip
    return res.logp, res.nfe, res.ok


def run_pairs(score_fn, params, sde, x, pairs, probes, *, solver, tol=None, n_steps=None,
              exact=False, dtype=jnp.float32):  # fmt: skip
    """Solve pairs (P, 2) = (example, class) of x; returns numpy (logp, nfe, ok)."""
    ex, cls = pairs[:, 0], pairs[:, 1]
    tol = 1e-3 if tol is None else tol  # unused by fixed steps
    out = solve_pairs(
        score_fn,
        params,
        sde,
        jnp.asarray(np.asarray(x)[ex], dtype),
        jnp.asarray(cls, jnp.int32),
        jnp.asarray(probes[ex], dtype),
        rtol=float(tol),
        atol=float(tol),
        eps=1e-5,
        solver=solver,
        n_steps=n_steps,
        exact=exact,
    )
    return tuple(np.asarray(a) for a in jax.block_until_ready(out))


def scatter(values, pairs, fill):
    """A float64 copy of `fill` (N, C) with `values` put at `pairs` (P, 2)."""
    out = np.array(fill, np.float64)
    out[pairs[:, 0], pairs[:, 1]] = values
    return out


def tight_truth(score_fn, params, sde, x, pairs, probes, exact=False, results=RESULTS):
    """float64 Dopri8 at rtol = atol = 1e-8 on the given pairs, cached under a fingerprint."""
    fp = fingerprint(params, np.concatenate([np.asarray(x).ravel(), probes.ravel(),
                                             pairs.ravel().astype(np.float32)]))  # fmt: skip
    cache = os.path.join(results, f"solver_tolerance_truth_{fp}{'_exact' if exact else ''}.npz")
    if os.path.exists(cache):
        with np.load(cache) as z:
            return z["logp"], float(z["seconds"])
    t0 = time.perf_counter()
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        logp, _, ok = run_pairs(score_fn, p64, sde, x, pairs, probes, solver="dopri8", tol=1e-8,
                                exact=exact, dtype=jnp.float64)  # fmt: skip
    if not ok.all():
        raise RuntimeError(f"the tight reference failed on {int((~ok).sum())} pairs")
    seconds = time.perf_counter() - t0
    os.makedirs(results, exist_ok=True)
    np.savez(cache + ".tmp.npz", logp=logp, seconds=seconds)
    os.replace(cache + ".tmp.npz", cache)
    return logp, seconds


# ----------------------------------------------------------------------------- decisions


def thresholds_or_nan(scores, labels, percentile):
    """fit_class_thresholds, with NaN for a class that has no correctly classified row."""
    try:
        return np.asarray(jaxrej.reject.fit_class_thresholds(scores, labels, percentile))
    except ValueError:
        c = scores.shape[1]
        pred = np.argmax(np.where(np.isfinite(scores), scores, -np.inf), 1)
        th = np.full(c, np.nan)
        for k in range(c):
            v = scores[(labels == k) & (pred == k), k]
            if v.size:
                th[k] = np.percentile(v, percentile)
        return th


def decisions(test_scores, train_scores, train_labels, percentile):
    """(pred, rejected) on the test rows with thresholds fit on the training rows."""
    th = thresholds_or_nan(train_scores, train_labels, percentile)
    pred, rej = jaxrej.reject.decide(jnp.asarray(test_scores), jnp.asarray(th))
    return np.asarray(pred), np.asarray(rej)


def flips(a, b) -> np.ndarray:
    """Per example: do the decisions (pred, rejected) a and b differ (accept label / reject)?"""
    (pa, ra), (pb, rb) = a, b
    return (ra != rb) | (~ra & ~rb & (pa != pb))


# ----------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=WORKDIR)
    ap.add_argument("--n-test", type=int, default=360)
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--percentile", type=float, default=5.0)
    ap.add_argument("--quick", action="store_true",
                    help="toy Gaussian score (no model), 3 tolerances, 2 step counts")  # fmt: skip
    ap.add_argument("--out", default="solver_tolerance", help="results file stem")
    ap.add_argument("--results-dir", default=RESULTS, help="where the json / md / png go")
    ap.add_argument("--divergence", choices=("rademacher", "exact"), default="rademacher")
    ap.add_argument("--solvers", nargs="+", default=list(ADAPTIVE + FIXED))
    ap.add_argument("--tols", type=float, nargs="+", default=list(TOLS))
    ap.add_argument("--steps", type=int, nargs="*", default=list(STEPS))
    ap.add_argument("--screen-tol", type=float, default=1e-5)
    args = ap.parse_args(argv)
    bad = [s for s in args.solvers if s not in ADAPTIVE + FIXED]
    if bad or args.n_test < 1 or args.n_train < 1:
        raise ValueError(f"--solvers: expected names in {ADAPTIVE + FIXED}, got {bad}; n >= 1")
    exact = args.divergence == "exact"
    load0 = os.getloadavg()
    n_tr, n_te = args.n_train, args.n_test
    if args.quick:
        tols, steps = (1e-2, 1e-4, 1e-6), (8, 64)
        n_tr, n_te = min(n_tr, 32), min(n_te, 32)
        score_fn, params, sde, x, labels, c = toy_problem(n_tr + n_te, seed=0)
        x_tr, y_tr, x_te, y_te = x[:n_tr], labels[:n_tr], x[n_tr:], labels[n_tr:]
        workload = f"toy Gaussian, D={x.shape[1]}, {c} classes"
    else:
        tols, steps = tuple(args.tols), tuple(args.steps)
        score_fn, params, sde, x_te, y_te, c = digits_workload(args.workdir, "test", n_te)
        _, _, _, x_tr, y_tr, _ = digits_workload(args.workdir, "train", n_tr)
        workload = f"digits 8x8 ({args.workdir}), {c} classes"
    x = jnp.concatenate([x_tr, x_te])
    labels = np.concatenate([y_tr, y_te])
    n = n_tr + n_te
    event = tuple(x.shape[1:])
    probes = example_probes(jax.random.key(1), x)
    print(f"{workload}: {n_te} test + {n_tr} train examples; {device_name()}; load {load0[0]:.1f}")

    # Screen: which pairs can matter.
    all_pairs = np.argwhere(np.ones((n, c), bool))
    t0 = time.perf_counter()
    lp, _, ok = run_pairs(score_fn, params, sde, x, all_pairs, probes, solver="tsit5",
                          tol=args.screen_tol, exact=exact)  # fmt: skip
    screen = scatter(lp, all_pairs, np.full((n, c), np.nan))
    best = np.nanmax(screen, 1, keepdims=True)
    keep = ~(screen < best - WINDOW)  # NaN (failed) pairs are kept
    pairs = np.argwhere(keep)
    print(
        f"screen {time.perf_counter() - t0:.1f} s: {len(pairs)} of {n * c} pairs within {WINDOW} nats"
    )

    truth_lp, truth_s = tight_truth(score_fn, params, sde, x, pairs, probes, exact=exact,
                                    results=args.results_dir)  # fmt: skip
    truth = scatter(truth_lp, pairs, screen)
    print(f"truth (float64 Dopri8 1e-8): {truth_s:.1f} s")
    truth_dec = decisions(truth[n_tr:], truth[:n_tr], y_tr, args.percentile)
    marg_truth = np.asarray(jaxrej.marginal_log_likelihood(jnp.asarray(truth)))
    d = math.prod(event)

    settings = [(s, t, None) for s in ADAPTIVE if s in args.solvers for t in tols]
    settings += [(s, None, k) for s in FIXED if s in args.solvers for k in steps]
    rows = []
    compiled = {}
    cache0 = solve_pairs._cache_size()
    for solver, tol, k in settings:
        # every solve option is static (the tolerance too): compile and warm up each setting once
        t0 = time.perf_counter()
        run_pairs(score_fn, params, sde, x, pairs, probes, solver=solver, tol=tol, n_steps=k,
                  exact=exact)  # fmt: skip
        compiled[(solver, tol, k)] = time.perf_counter() - t0
        t0 = time.perf_counter()
        lp, nfe, ok = run_pairs(score_fn, params, sde, x, pairs, probes, solver=solver, tol=tol,
                                n_steps=k, exact=exact)  # fmt: skip
        seconds = time.perf_counter() - t0
        est = scatter(np.where(ok, lp, np.nan), pairs, screen)
        err = np.abs(lp - truth_lp)
        marg = np.asarray(jaxrej.marginal_log_likelihood(jnp.asarray(est)))
        bpd_err = np.abs(marg - marg_truth) / (d * math.log(2))
        dec = decisions(est[n_tr:], est[:n_tr], y_tr, args.percentile)
        flip = flips(dec, truth_dec)
        rows.append(dict(
            solver=solver, tol=tol, n_steps=k, seconds=seconds, ms_per_pair=1e3 * seconds / len(pairs),
            nfe_mean=float(nfe.mean()), nfe_max=int(nfe.max()), failed=int((~ok).sum()),
            logp_err_median=float(np.nanmedian(err)), logp_err_max=float(np.nanmax(err)),
            bpd_err_median=float(np.nanmedian(bpd_err)), bpd_err_max=float(np.nanmax(bpd_err)),
            accuracy=float(np.mean(dec[0] == y_te)), argmax_agree=float(np.mean(dec[0] == truth_dec[0])),
            reject_rate=float(np.mean(dec[1])), decision_flips=int(flip.sum()),
            decision_agree=float(1.0 - flip.mean()),
        ))  # fmt: skip
        r = rows[-1]
        print(f"{solver:7s} {f'tol={tol:g}' if tol else f'steps={k}':11s} "
              f"{seconds:7.2f} s  NFE {r['nfe_mean']:7.1f}  |dlogp| med {r['logp_err_median']:.2e} "
              f"max {r['logp_err_max']:.2e}  flips {r['decision_flips']}/{n_te}")  # fmt: skip

    rec = recommend(rows, ADAPTIVE)
    cache_sizes = {"solve_pairs": solve_pairs._cache_size() - cache0}
    out = dict(
        device=device_name(), load_average_start=list(load0), load_average_end=list(os.getloadavg()),
        workload=dict(description=workload, n_test=n_te, n_train=n_tr, classes=c, event_shape=list(event),
                      divergence="exact trace" if exact else "rademacher, 1 probe per example shared by its classes (same probes in the truth)",
                      eps=1e-5, window_nats=WINDOW, pairs=int(len(pairs)), percentile=args.percentile,
                      truth="float64 Dopri8 rtol=atol=1e-8", truth_seconds=truth_s,
                      truth_accuracy=float(np.mean(truth_dec[0] == y_te)),
                      truth_reject_rate=float(np.mean(truth_dec[1])), quick=args.quick),
        compile_seconds={f"{s}/{k or f'{t:g}'}": v for (s, t, k), v in compiled.items()},
        compilations=cache_sizes, rows=rows, recommendation=rec,
    )  # fmt: skip
    write_report(args.out, out, args.results_dir, render, plot)
    return out


def recommend(rows, solvers, agree: float = AGREE):
    """The loosest adaptive (solver, tol) whose decisions and those of every tighter tolerance of
    the same solver agree with the truth on >= `agree`; among solvers, the fewest mean NFE."""
    best = None
    for s in solvers:
        rs = sorted((r for r in rows if r["solver"] == s), key=lambda r: -r["tol"])  # loose first
        for i, r in enumerate(rs):
            if all(q["decision_agree"] >= agree and q["failed"] == 0 for q in rs[i:]):
                if best is None or r["nfe_mean"] < best["nfe_mean"]:
                    best = r
                break
    if best is None:
        return None
    return dict(solver=best["solver"], rtol=best["tol"], atol=best["tol"], nfe_mean=best["nfe_mean"],
                decision_agree=best["decision_agree"], logp_err_max=best["logp_err_max"])  # fmt: skip


def render(out) -> str:
    w = out["workload"]
    la, lb = out["load_average_start"][0], out["load_average_end"][0]
    lines = [
        f"Device: {out['device']}; load average {la:.1f} at start, {lb:.1f} at end (shared CPU: "
        f"wall times are inflated). Workload: {w['description']}, {w['n_test']} test + "
        f"{w['n_train']} train examples, {w['pairs']} (example, class) pairs within "
        f"{w['window_nats']:g} nats; {w['divergence']}; truth {w['truth']} "
        f"(accuracy {w['truth_accuracy']:.3f}, reject rate {w['truth_reject_rate']:.3f} at the "
        f"{w['percentile']:g}th percentile thresholds). Compilations of the sweep: "
        f"{out['compilations']['solve_pairs']} (one per solver and tolerance or step count).",
        "",
        "| solver | rtol=atol / steps | NFE mean (max) | ms / pair | median, max abs err log p | "
        "median, max abs err bits/dim | accuracy | reject rate | decision flips | agree |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        setting = f"{r['tol']:g}" if r["tol"] else f"{r['n_steps']} steps"
        lines.append(
            f"| {r['solver']} | {setting} | {r['nfe_mean']:.0f} ({r['nfe_max']}) | "
            f"{r['ms_per_pair']:.1f} | {r['logp_err_median']:.1e}, {r['logp_err_max']:.1e} | "
            f"{r['bpd_err_median']:.1e}, {r['bpd_err_max']:.1e} | {r['accuracy']:.3f} | "
            f"{r['reject_rate']:.3f} | {r['decision_flips']}/{w['n_test']} | "
            f"{100 * r['decision_agree']:.1f}% |"
        )
    rec = out["recommendation"]
    lines.append("")
    if rec is None:
        lines.append("No adaptive setting reached the agreement target.")
    else:
        lines.append(
            f"Recommendation: solver={rec['solver']!r}, rtol=atol={rec['rtol']:g} -- the loosest "
            f"setting whose reject decisions (and those of every tighter tolerance) agree with the "
            f"truth on >= {100 * AGREE:.1f}% of the test examples ({100 * rec['decision_agree']:.1f}%; "
            f"{rec['nfe_mean']:.0f} NFE per solve; max |d log p| {rec['logp_err_max']:.2e} nats)."
        )
    return "\n".join(lines) + "\n"


def plot(out, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for s in ADAPTIVE + FIXED:
        rs = [r for r in out["rows"] if r["solver"] == s]
        if not rs:
            continue
        nfe = [r["nfe_mean"] for r in rs]
        axes[0].loglog(nfe, [max(r["logp_err_median"], 1e-9) for r in rs], "o-", label=s)
        axes[1].semilogx(nfe, [100 * r["decision_agree"] for r in rs], "o-", label=s)
    axes[0].set(xlabel="NFE per solve (mean)", ylabel="median |log p - truth| (nats)",
                title="work-precision")  # fmt: skip
    axes[1].axhline(100 * AGREE, color="gray", ls="--", lw=1)
    axes[1].set(xlabel="NFE per solve (mean)", ylabel="reject decisions = truth (%)",
                title="decision agreement")  # fmt: skip
    axes[0].legend()
    fig.suptitle(f"{out['workload']['description']} -- {out['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
