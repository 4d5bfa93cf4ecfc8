"""jaxrej's Runge-Kutta step (divergence skipped at zero-weight stages) vs diffrax's own solver.

Run:  python -m benchmarks.rk_skip [--workdir runs/digits] [--n 17] [--repeats 5] [--quick]

Workload: `n` test digits with their true labels, exact trace, one vmapped solve of the augmented
probability-flow ODE from eps = 1e-5 to T, by Dopri5 and Dopri8, each (a) with 40 fixed steps and
(b) adaptive at rtol = atol = 1e-5; once with diffrax's solver (`diffrax.Dopri5()` and the plain
term, what jaxrej ran before) and once with `jaxrej.flow.rk.SkipDivergenceRK` on `rk.flow_term` (what
`jaxrej.log_likelihood` runs now). The two are timed in turn (`interleaved`, medians). Reported:
milliseconds per step and example, divergence evaluations per solve, and the largest |delta logp|
between the two (float32; the same method, so only rounding -- and, adaptive, the step sequence it
perturbs -- differs).

Writes benchmarks/results/rk_skip.json and .md.
"""

from __future__ import annotations

import argparse
import functools
import os

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.likelihood_speed import RESULTS, device_name, interleaved
from benchmarks.report import write_report
from benchmarks.solver_tolerance import digits_workload, toy_problem
from benchmarks.trained import WORKDIR
from jaxrej.flow import SOLVERS, rk
from jaxrej.flow.field import velocity, velocity_and_divergence

EPS = 1e-5
N_FIXED = 40
TOL = 1e-5


def solve(score_fn, params, sde, x, y, *, solver, ours, n_steps):
    """(logp, number of steps) of one example; `ours`: SkipDivergenceRK, else diffrax's solver."""
    field = velocity_and_divergence(score_fn, sde, params, y, None)
    base = SOLVERS[solver].make()
    term = (
        rk.flow_term(field, velocity(score_fn, sde, params, y))
        if ours
        else diffrax.ODETerm(lambda t, s, args: field(t, s[0]))
    )
    t0, t1 = jnp.asarray(EPS, x.dtype), jnp.asarray(sde.T, x.dtype)
    sol = diffrax.diffeqsolve(
        term,
        rk.SkipDivergenceRK(SOLVERS[solver]) if ours else base,
        t0=t0,
        t1=t1,
        dt0=None if n_steps is None else (t1 - t0) / n_steps,
        y0=(x, jnp.zeros((), x.dtype)),
        stepsize_controller=diffrax.PIDController(rtol=TOL, atol=TOL)
        if n_steps is None
        else diffrax.ConstantStepSize(),
        max_steps=4096,
        throw=False,
    )
    return sde.prior_logp(sol.ys[0][-1]) + sol.ys[1][-1], sol.stats["num_steps"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=WORKDIR)
    ap.add_argument("--n", type=int, default=17)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="toy Gaussian score, 2 examples")
    ap.add_argument("--results-dir", default=RESULTS)
    args = ap.parse_args(argv)
    if args.n < 1 or args.repeats < 1:
        raise ValueError("--n >= 1 and --repeats >= 1 expected")
    load0 = os.getloadavg()[0]
    if args.quick:
        score_fn, params, sde, x, y, _ = toy_problem(2, seed=3)
        workload = f"toy Gaussian, D={x.shape[1]}, 2 examples"
    else:
        score_fn, params, sde, x, y, _ = digits_workload(args.workdir, "test", args.n)
        workload = f"digits 8x8 ({args.workdir}), {args.n} test examples"
    y = jnp.asarray(y)
    print(f"{workload}; {device_name()}")
    rows = []
    for solver in ("dopri5", "dopri8"):
        for n_steps in (N_FIXED, None):
            fns = {
                ours: jax.jit(
                    jax.vmap(
                        functools.partial(
                            solve, score_fn, params, sde, solver=solver, ours=ours, n_steps=n_steps
                        )  # fmt: skip
                    )
                )
                for ours in (False, True)
            }
            timing = interleaved(
                {k: functools.partial(f, x, y) for k, f in fns.items()},
                args.repeats,
                warm=(False, True),
            )
            per_step = SOLVERS[solver].evaluations_per_step
            out = {}
            for ours in (False, True):
                seconds, _, _, (logp, steps) = timing[ours]
                steps = np.asarray(steps)
                nfe = 1 + per_step * steps  # FSAL: one first-stage evaluation, then per_step a step
                divs = SOLVERS[solver].divergence_evaluations(nfe) if ours else nfe
                out[ours] = dict(
                    seconds=seconds,
                    ms_per_step_example=1e3 * seconds / (steps.max() * len(steps)),
                    steps_max=int(steps.max()),
                    divergences_per_solve=float(np.mean(divs)),
                    logp=np.asarray(logp, np.float64),
                )
            rows.append(
                dict(
                    solver=solver,
                    steps="fixed" if n_steps else f"adaptive {TOL:g}",
                    diffrax_ms=out[False]["ms_per_step_example"],
                    jaxrej_ms=out[True]["ms_per_step_example"],
                    speedup_per_step=out[False]["ms_per_step_example"]
                    / out[True]["ms_per_step_example"],
                    speedup_per_solve=out[False]["seconds"] / out[True]["seconds"],
                    steps_max_diffrax=out[False]["steps_max"],
                    steps_max_jaxrej=out[True]["steps_max"],
                    divergences_diffrax=out[False]["divergences_per_solve"],
                    divergences_jaxrej=out[True]["divergences_per_solve"],
                    max_abs_dlogp=float(np.max(np.abs(out[True]["logp"] - out[False]["logp"]))),
                )
            )
            print(rows[-1])
    result = dict(device=device_name(), load_average_start=load0,
                  load_average_end=os.getloadavg()[0], workload=workload, rows=rows)  # fmt: skip
    write_report("rk_skip", result, args.results_dir, render)
    return result


def render(out) -> str:
    lines = [
        f"Device: {out['device']}; load average {out['load_average_start']:.1f} at start, "
        f"{out['load_average_end']:.1f} at end. Workload: {out['workload']}, exact trace.",
        "",
        "| solver | steps | diffrax ms / step / example | jaxrej ms / step / example | speed-up per step | "
        "speed-up per solve | max steps diffrax / jaxrej | divergences per solve diffrax / jaxrej | "
        "max abs delta logp |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        lines.append(
            f"| {r['solver']} | {r['steps']} | {r['diffrax_ms']:.3f} | {r['jaxrej_ms']:.3f} | "
            f"{r['speedup_per_step']:.2f}x | {r['speedup_per_solve']:.2f}x | "
            f"{r['steps_max_diffrax']} / {r['steps_max_jaxrej']} | "
            f"{r['divergences_diffrax']:.0f} / {r['divergences_jaxrej']:.0f} | {r['max_abs_dlogp']:.2g} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
