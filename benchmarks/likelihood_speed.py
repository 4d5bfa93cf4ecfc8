"""jaxrej's class log-likelihoods against the score_sde / SBGC reference pipeline, on one workload.

Run:  python -m benchmarks.likelihood_speed [--workdir runs/digits] [--n 16] [--repeats 3] [--quick]
      [--out likelihood_speed]

Workload: a trained conditional score model of the digits data (a `jaxrej train` workdir), the
first `n` test digits spread over the split, every class, exact divergence, rtol = atol = 1e-5.

Reference ("scipy"): score_sde's likelihood.py and the SBGC paper's code -- the whole batch of
B * C solves flattened into one ODE state, `scipy.integrate.solve_ivp(method="RK45")` on the host,
calling a jitted drift + divergence on the device at every evaluation (one shared step size).
Truth ("tight"): jaxrej in float64 with Dopri8 at rtol = atol = 1e-8, for every pair within
`TIGHT_WINDOW` nats of its example's best class in the scipy result (pairs further down change
log p(x) by < exp(-TIGHT_WINDOW) and cannot win; their scipy values stand in).
Timing: the reference and the screened cascades run in turn, `repeats` rounds (`interleaved`), and
each reports its median; "paired speed-ups" are the per-round ratios, so that a machine whose speed
drifts during the run (measured here: the same cascade at 2.1 s and 3.4 s ten minutes apart) slows
both sides alike. The unscreened all-class variant is timed once.

Writes benchmarks/results/likelihood_speed.json and .md; prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp
from scipy.special import logsumexp

import jaxrej
from benchmarks.report import write_report
from benchmarks.trained import WORKDIR, ensure_trained
from jaxrej.autodiff import log_likelihood_and_grad
from jaxrej.divergence import exact_trace
from jaxrej.flow import SOLVERS
from jaxrej.flow.options import FIELDS as FLOW_FIELDS

RESULTS = os.path.join(os.path.dirname(__file__), "results")
TIGHT_WINDOW = 20.0
TOL = 1e-5


def load_workload(workdir: str, n: int):
    from jaxrej.data import digits
    from jaxrej.data.preprocessing import dequantize
    from jaxrej.training.workdir import load_score_model

    score_fn, params, sde, run = load_score_model(ensure_trained(workdir))
    images, labels = digits.load("test")
    idx = np.linspace(0, len(labels) - 1, n).round().astype(int)
    x = dequantize(jnp.asarray(images[idx]), digits.N_LEVELS, key=jax.random.key(0))
    return score_fn, params, sde, x, labels[idx], run.data.num_classes


def device_name() -> str:
    d = jax.devices()[0]
    cpu = f"{os.cpu_count()} cores" if d.platform == "cpu" else ""
    name = f"{d.platform.upper()} {d.device_kind} {cpu}".strip() + f" ({platform.machine()})"
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if d.platform == "cpu" and 0 < len(allowed) < (os.cpu_count() or 0):  # e.g. under taskset
        name += f", pinned to {len(allowed)} of them (CPU {', '.join(map(str, allowed))})"
    return name


def timed(fn, repeats: int):
    """(median wall s, median process CPU s, last output) over `repeats` runs after a warm-up run.

    CPU seconds (all threads of this process) are reported beside wall seconds because the machine
    may be shared: waiting for a core inflates wall time but not CPU time.
    """
    wall, cpu, _, out = interleaved({"fn": fn}, repeats, warm=("fn",))["fn"]
    return wall, cpu, out


def interleaved(fns: dict, repeats: int, warm: tuple = ()):
    """{name: (median wall s, median CPU s, per-repeat wall s, last output)}, the callables timed in
    turn `repeats` times (the names in `warm` run once untimed first), so that a machine whose
    speed drifts slows every method alike and the ratios of medians stay fair."""
    outs = {k: jax.block_until_ready(fns[k]()) for k in warm}
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            outs[k] = jax.block_until_ready(fn())
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: (float(np.median(wall[k])), float(np.median(cpu[k])), wall[k], outs[k]) for k in fns}


def scipy_reference(score_fn, params, sde, x, num_classes, eps=1e-5):
    """score_sde's pipeline: one flattened ODE for all B * C pairs, RK45 on the host.

    Returns (run, nfe): run() -> (B, C) log-likelihoods, its field compiled; nfe[0] -> the shared
    evaluations of the last run."""
    b, c = x.shape[0], num_classes
    event = x.shape[1:]
    d = int(np.prod(event))
    xs = jnp.repeat(x, c, axis=0)
    ys = jnp.tile(jnp.arange(c), b)
    p = b * c

    @jax.jit
    def field(t, state):
        z = state[: p * d].reshape((p, *event))

        def one(zi, yi):
            return exact_trace(
                lambda u: (
                    sde.drift(u, t) - 0.5 * sde.diffusion(t) ** 2 * score_fn(params, u, t, yi)
                ),
                zi,
            )

        v, div = jax.vmap(one)(z, ys)
        return jnp.concatenate([v.reshape(-1), div])

    nfe = [0]

    def f(t, s):
        nfe[0] += 1
        return np.asarray(field(jnp.float32(t), jnp.asarray(s, jnp.float32)), np.float64)

    y0 = np.concatenate([np.asarray(xs, np.float64).reshape(-1), np.zeros(p)])
    f(eps, y0)  # compile outside the timing, as score_sde's users would after the first batch

    def run():
        nfe[0] = 0
        sol = solve_ivp(f, (eps, sde.T), y0, rtol=TOL, atol=TOL, method="RK45")
        z = sol.y[:, -1]
        zt = z[: p * d].reshape(p, d)
        prior = jax.vmap(sde.prior_logp)(jnp.asarray(zt))
        return (np.asarray(prior, np.float64) + z[p * d :]).reshape(b, c)

    return run, nfe


def fingerprint(params, x) -> str:
    import hashlib

    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(params) + [x]:
        h.update(np.asarray(leaf).tobytes())
    return h.hexdigest()[:16]


def tight_reference(score_fn, params, sde, x, approx):
    """float64 Dopri8 at 1e-8 for the pairs within TIGHT_WINDOW of each example's best.

    The truth is not timed, so it is cached in results/ under a fingerprint of params and x.
    """
    want = approx >= approx.max(axis=1, keepdims=True) - TIGHT_WINDOW
    cache = os.path.join(RESULTS, f"likelihood_speed_truth_{fingerprint(params, x)}.npz")
    if os.path.exists(cache):
        with np.load(cache) as z:
            if z["want"].shape == want.shape and (z["want"] | ~want).all():
                out = approx.copy()
                out[want] = z["tight"][want]
                return out, int(want.sum())
    pairs = np.argwhere(want)
    out = approx.copy()
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        res = jaxrej.log_likelihood(
            score_fn,
            p64,
            sde,
            jnp.asarray(x, jnp.float64)[pairs[:, 0]],
            jnp.asarray(pairs[:, 1]),
            key=jax.random.key(0),
            divergence="exact",
            rtol=1e-8,
            atol=1e-8,
            solver="dopri8",
        )
        if not bool(res.ok.all()):
            raise RuntimeError("the tight reference failed on some pair")
        out[want] = np.asarray(res.logp)
    os.makedirs(RESULTS, exist_ok=True)
    tmp = cache + ".tmp.npz"
    np.savez(tmp, want=want, tight=out)
    os.replace(tmp, cache)
    return out, int(want.sum())


def exact_evaluations(score_fn, params, sde, x, common, opts, res) -> float:
    """Divergence work a variant spends, in exact-trace evaluations: each evaluation that computes
    the divergence counts 1 in an exact pass and K / D in a pass with K Hutchinson probes (its
    Jacobian-vector products against the exact trace's D); velocity-only stages (jaxrej.flow.rk)
    count 0. A hardware-independent measure of work. The passes of a screened variant are replayed
    one at a time, untimed (a cascade's replayed passes draw other probes than the timed run, so its
    count is approximate to a few evaluations)."""
    d = int(np.prod(x.shape[1:]))

    def work(solve, nfe):
        divs = np.where(nfe > 0, SOLVERS[solve.solver].divergence_evaluations(nfe), 0)
        return (1.0 if solve.divergence == "exact" else solve.n_probes / d) * float(divs.sum())

    final = jaxrej.FlowSolve(**{k: v for k, v in {**common, **opts}.items()
                                if k in FLOW_FIELDS})  # fmt: skip
    nfe = np.asarray(res.nfe, np.int64)
    cascade = "screens" in opts
    stages = (
        list(opts["screens"]) if cascade
        else jaxrej.scoring.screen_stages(opts.get("screen", jaxrej.scoring.DEFAULT_SCREEN))
    )  # fmt: skip
    total, prev = 0.0, np.zeros_like(nfe)
    for k, s in enumerate(stages):  # stop after stage k: make its solve the final one
        run = jaxrej.cascade_class_log_likelihoods if cascade and k else (
            jaxrej.class_log_likelihood_result)  # fmt: skip
        kw = dict(screens=stages[:k]) if cascade and k else dict(screen=tuple(stages[:k]) or None)
        head = run(score_fn, params, sde, x, num_classes=common["num_classes"], key=common["key"],
                   solve=s.solve, **kw)  # fmt: skip
        total += work(s.solve, np.asarray(head.nfe, np.int64) - prev)
        prev = np.asarray(head.nfe, np.int64)
    return total + work(final, nfe - prev)


def accuracy_vs(logp, tight):
    """max |delta logp| of the predicted class and of log p(x), and argmax agreement, vs tight."""
    pred_t = tight.argmax(1)
    rows = np.arange(len(tight))
    return {
        "max_abs_err_pred_class": float(np.max(np.abs(logp[rows, pred_t] - tight[rows, pred_t]))),
        "max_abs_err_marginal": float(np.max(np.abs(logsumexp(logp, 1) - logsumexp(tight, 1)))),
        "argmax_agree": int(np.sum(logp.argmax(1) == pred_t)),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=WORKDIR)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="skip the slow all-class jaxrej variant")
    ap.add_argument("--results-dir", default=RESULTS)
    ap.add_argument("--out", default="likelihood_speed", help="results file stem")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    score_fn, params, sde, x, labels, c = load_workload(args.workdir, args.n)
    b = x.shape[0]
    key = jax.random.key(1)
    rows = []

    print(
        f"workload: {b} test digits x {c} classes, exact divergence, rtol=atol={TOL}; {device_name()}"
    )
    # The plain call a user makes: every other option at the library's default (FlowSolve(),
    # the TopK screen); TOL is FlowSolve()'s default tolerance.
    common = dict(num_classes=c, key=key, divergence="exact")
    assert jaxrej.FlowSolve().rtol == TOL == jaxrej.FlowSolve().atol
    rademacher = jaxrej.Screen(margin=40.0)  # 1 Rademacher probe, rtol=atol=1e-2, Dopri5
    exact_1e3 = jaxrej.Screen(margin=10.0, divergence="exact", rtol=1e-3, atol=1e-3)
    # 16 probes shared by an example's classes: the class-gap error is a few nats on this model
    # (benchmarks/hutchinson.py, "RMS of margin error"), so 10 nats is several RMS
    rademacher16 = jaxrej.Screen(margin=10.0, n_probes=16, rtol=1e-3, atol=1e-3)

    def in_t(screens):  # the same screens, solved in t instead of u = sqrt(t)
        return tuple(jaxrej.TopK(k=s.k, margin=s.margin, spare=s.spare,
                                 solve=dataclasses.replace(s.solve, time_change="none"))
                     for s in screens)  # fmt: skip

    variants = {
        "jaxrej default: class_log_likelihoods(divergence='exact')": dict(),
        "jaxrej default in t (time_change='none': the engine before the square time)": dict(
            time_change="none", screen=in_t(jaxrej.scoring.DEFAULT_SCREEN)
        ),
        "jaxrej, TopK(k=2) screen": dict(screen=jaxrej.TopK(k=2)),
        "jaxrej, cascade: Rademacher 1e-2 (margin 40) -> exact": dict(screens=[rademacher]),
        "jaxrej, cascade: Rademacher 1e-2 (40) -> exact 1e-3 (10) -> exact": dict(
            screens=[rademacher, exact_1e3]
        ),
        "jaxrej, cascade: Rademacher 1e-2 (40) -> 16 Rademacher 1e-3 (10) -> exact": dict(
            screens=[rademacher, rademacher16]
        ),
        "jaxrej, every class (screen=None), one vmapped call": dict(screen=None),
    }
    slow = "jaxrej, every class (screen=None), one vmapped call"
    if args.quick:
        variants.pop(slow)

    def scorer(opts):
        if "screens" in opts:
            return lambda: jaxrej.cascade_class_log_likelihoods(score_fn, params, sde, x, **common,
                                                                **opts)  # fmt: skip
        return lambda: jaxrej.class_log_likelihood_result(
            score_fn, params, sde, x, **common, **opts
        )

    run_ref, nfe_ref = scipy_reference(score_fn, params, sde, x, c)
    fns = {name: scorer(opts) for name, opts in variants.items() if name != slow}
    ref_name = "scipy RK45, flattened batch (score_sde)"
    timing = interleaved({ref_name: run_ref, **fns}, args.repeats, warm=tuple(fns))
    if slow in variants:  # the unscreened variant is slow: one run
        seconds, cpu, res = timed(scorer(variants[slow]), 1)
        timing[slow] = (seconds, cpu, [seconds], res)
    t_ref, cpu_ref, walls_ref, ref = timing[ref_name]
    print(f"scipy reference: {t_ref:.1f} s ({cpu_ref:.1f} CPU s), {nfe_ref[0]} shared evaluations")
    t0 = time.perf_counter()
    tight, n_tight = tight_reference(score_fn, params, sde, x, ref)
    print(f"tight float64 reference on {n_tight} pairs: {time.perf_counter() - t0:.1f} s")
    rows.append(dict(method=ref_name, seconds=t_ref, speedup=1.0, cpu_seconds=cpu_ref, cpu_speedup=1.0,
                     speedup_range=[1.0, 1.0], exact_evals=float(b * c * nfe_ref[0]), exact_solves=b * c,
                     nfe_per_solve=nfe_ref[0], **accuracy_vs(ref, tight)))  # fmt: skip

    for name, opts in variants.items():
        seconds, cpu, walls, res = timing[name]
        logp = np.asarray(res.logp, np.float64)
        refined = np.asarray(res.refined)
        paired = (
            [r / w for r, w in zip(walls_ref, walls, strict=True)]
            if len(walls) == len(walls_ref)
            else [t_ref / seconds]
        )
        rows.append(dict(method=name, seconds=seconds, speedup=t_ref / seconds, cpu_seconds=cpu,
                         cpu_speedup=cpu_ref / cpu, speedup_range=[min(paired), max(paired)],
                         exact_evals=exact_evaluations(score_fn, params, sde, x, common, opts, res),
                         exact_solves=int(refined.sum()), nfe_per_solve=float(np.asarray(res.nfe)[refined].mean()),
                         covered=int(np.asarray(res.covered).sum()),
                         **accuracy_vs(logp, tight)))  # fmt: skip
        print(rows[-1])

    # Exact vs Hutchinson, per example (true class only).
    per_example = []
    y = jnp.asarray(labels)
    for div, k in [("exact", 1), ("rademacher", 1), ("rademacher", 4), ("gaussian", 1)]:
        s, _, r = timed(
            lambda d=div, k=k: (
                jaxrej.log_likelihood(
                    score_fn,
                    params,
                    sde,
                    x,
                    y,
                    key=key,
                    divergence=d,
                    n_probes=k,
                    rtol=TOL,
                    atol=TOL,
                ).logp
            ),
            args.repeats,
        )
        per_example.append(dict(divergence=div, n_probes=k, ms_per_example=1e3 * s / b))

    # Input-gradient cost relative to the forward solve, and compiled temporary memory.
    grads = []
    s_fwd, _, _ = timed(  # one forward timing for both ratios (the forward pass is the same)
        lambda: (
            jaxrej.log_likelihood(
                score_fn, params, sde, x, y, key=key, divergence="exact", rtol=TOL, atol=TOL
            ).logp
        ),
        args.repeats,
    )
    for adjoint in ("checkpoint", "backsolve"):
        opts = dict(key=key, divergence="exact", rtol=TOL, atol=TOL, adjoint=adjoint)
        s_grad, _, _ = timed(
            lambda o=opts: log_likelihood_and_grad(score_fn, params, sde, x, y, **o)[1],
            args.repeats,
        )
        mem = {}
        for max_steps in (256, 4096):

            def loss(x_, o=opts, m=max_steps):
                return jaxrej.log_likelihood(
                    score_fn, params, sde, x_, y, max_steps=m, **o
                ).logp.sum()

            analysis = jax.jit(jax.grad(loss)).lower(x).compile().memory_analysis()
            mem[max_steps] = None if analysis is None else int(analysis.temp_size_in_bytes)
        grads.append(dict(adjoint=adjoint, forward_s=s_fwd, grad_s=s_grad, ratio=s_grad / s_fwd,
                          temp_bytes_max_steps_256=mem[256], temp_bytes_max_steps_4096=mem[4096]))  # fmt: skip
        print(grads[-1])

    attack = attack_step_cost(score_fn, params, sde, x, y, c, key, args.repeats)
    print(attack)

    out = dict(
        device=device_name(), load_average_start=load0, load_average_end=os.getloadavg()[0],
        workload=dict(examples=b, classes=c, event_shape=list(x.shape[1:]), rtol=TOL, atol=TOL,
                      workdir=args.workdir, tight_pairs=n_tight),
        class_log_likelihoods=rows, per_example=per_example, input_gradient=grads,
        attack_step=attack,
    )  # fmt: skip
    write_report(args.out, out, args.results_dir, render)


def margin_loss(ll, y):
    """Carlini-Wagner margin: the best other class minus the true class, summed: (B, C) -> ()."""
    true = jnp.take_along_axis(ll, y[:, None], axis=1)[:, 0]
    other = jnp.max(jnp.where(jax.nn.one_hot(y, ll.shape[1], dtype=bool), -jnp.inf, ll), axis=1)
    return jnp.sum(other - true)


def attack_step_cost(score_fn, params, sde, x, y, c, key, repeats):
    """Seconds per digit of one attack step -- jit(value_and_grad) of the margin loss over all class
    log-likelihoods (exact divergence, default tolerance, checkpoint adjoint), timed in turn:
    "top2", the forward screen over all classes + the accurate solve of the top 2 (TopK(k=2), the
    true label always refined), differentiated as called (every unrefined entry with a cotangent
    is re-solved in the reverse pass); "top2_stop", the same with `jaxrej.scoring.stop_unrefined`
    (the library's attack view: the refined classes alone carry a gradient); "all", screen=None."""

    def step(screen, stop=False):
        @jax.jit
        def f(z):
            res = jaxrej.class_log_likelihood_result(
                score_fn, params, sde, z, num_classes=c, key=key, divergence="exact",
                screen=screen, labels=None if screen is None else y)  # fmt: skip
            return margin_loss(jaxrej.scoring.stop_unrefined(res) if stop else res.logp, y)

        return lambda: jax.value_and_grad(f)(x)

    fns = {"top2": step(jaxrej.TopK(k=2)), "top2_stop": step(jaxrej.TopK(k=2), stop=True),
           "all": step(None)}  # fmt: skip
    timing = interleaved(fns, repeats, warm=tuple(fns))
    g_all = timing["all"][3][1]
    rel = lambda name: float(jnp.linalg.norm(timing[name][3][1] - g_all) / jnp.linalg.norm(g_all))  # noqa: E731
    b = x.shape[0]
    return dict(top2_s_per_digit=timing["top2"][0] / b, all_s_per_digit=timing["all"][0] / b,
                top2_stop_s_per_digit=timing["top2_stop"][0] / b,
                ratio=timing["all"][0] / timing["top2"][0],
                ratio_stop=timing["all"][0] / timing["top2_stop"][0],
                grad_rel_diff=rel("top2"), grad_rel_diff_stop=rel("top2_stop"))  # fmt: skip


def render(out) -> str:
    w = out["workload"]
    lines = [
        f"Device: {out['device']}; load average {out['load_average_start']:.1f} at start, "
        f"{out['load_average_end']:.1f} at end. Workload: {w['examples']} digits x {w['classes']} classes, "
        f"exact divergence, rtol=atol={w['rtol']}; truth: float64 Dopri8 1e-8 on {w['tight_pairs']} pairs.",
        "",
        "| method | wall s | speed-up | paired speed-ups | CPU s | CPU speed-up | exact-trace evaluations | exact solves at 1e-5 | "
        "NFE / solve (all passes) | max abs err, predicted class | max abs err, log p(x) | argmax = truth | "
        "covered |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["class_log_likelihoods"]:
        lines.append(
            f"| {r['method']} | {r['seconds']:.2f} | {r['speedup']:.1f}x | "
            f"{r['speedup_range'][0]:.1f}-{r['speedup_range'][1]:.1f}x | {r['cpu_seconds']:.1f} | "
            f"{r['cpu_speedup']:.1f}x | {r['exact_evals']:.0f} | {r['exact_solves']} | "
            f"{r['nfe_per_solve']:.0f} | {r['max_abs_err_pred_class']:.3f} | {r['max_abs_err_marginal']:.3f} | "
            f"{r['argmax_agree']}/{w['examples']} | {r.get('covered', w['examples'])}/{w['examples']} |"
        )
    lines += ["", "| divergence | probes | ms / example (true class, 1e-5) |", "|---|---|---|"]
    for r in out["per_example"]:
        lines.append(f"| {r['divergence']} | {r['n_probes']} | {r['ms_per_example']:.1f} |")
    lines += [
        "",
        "| adjoint | forward s | forward + input gradient s | ratio | temp MB, max_steps=256 | "
        "temp MB, max_steps=4096 |",
        "|---|---|---|---|---|---|",
    ]
    for r in out["input_gradient"]:
        mb = lambda v: "n/a" if v is None else f"{v / 2**20:.1f}"  # noqa: E731
        lines.append(
            f"| {r['adjoint']} | {r['forward_s']:.2f} | {r['grad_s']:.2f} | {r['ratio']:.2f} | "
            f"{mb(r['temp_bytes_max_steps_256'])} | {mb(r['temp_bytes_max_steps_4096'])} |"
        )
    a = out["attack_step"]
    lines += [
        "",
        "| one attack step (margin loss, value and input gradient) | s / digit |",
        "|---|---|",
        f"| forward screen over all classes + top 2 refined, differentiated as called | {a['top2_s_per_digit']:.3f} |",
        f"| the same through `stop_unrefined` (the attack view: the top 2 alone carry a gradient) | "
        f"{a['top2_stop_s_per_digit']:.3f} |",
        f"| gradient through all {w['classes']} classes (screen=None) | {a['all_s_per_digit']:.3f} |",
        f"| all / top 2 as called | {a['ratio']:.1f}x (gradients differ by {a['grad_rel_diff']:.1e} relative) |",
        f"| all / top 2 through `stop_unrefined` | {a['ratio_stop']:.1f}x (gradients differ by "
        f"{a['grad_rel_diff_stop']:.1e} relative) |",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
