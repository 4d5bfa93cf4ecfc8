"""What one gradient-attack step against the score-based classifier costs, per example.

Run:  python -m benchmarks.attack_cost [--workdir runs/digits] [--n 8] [--repeats 3] [--pgd-n 4]
      [--pgd-steps 40] [--quick] [--out attack_cost]

Workload: the trained digits score model (a `jaxrej train` workdir), n test digits spread over
the split, x in pixel space [0, 1] mapped to the model's bin centres (`jaxrej.scorers.sbgc.SBGCScorer`),
accurate solve: 1-probe Rademacher divergence, rtol = atol = 1e-3, max_steps 64.

Timed (compiled first, `block_until_ready`, methods interleaved, medians of `repeats` rounds):
* forward: class log-likelihoods of the batch (the decision) with each screen;
* attack step: value and gradient of the margin attack loss (`attack_loss(..., loss="margin")`:
  best other class minus the true class; the CE saturates to exactly 0 in float32 on a digit the
  model is 40+ nats sure of, and so does its gradient) w.r.t. the pixels through the same scorer
  (forward screens over all classes + gradient through the classes the screen kept);
screens: "all" (no screen: all 10 classes get the accurate, differentiated solve), "topk2"
(TopK(k=2) keeping the label: one 1-probe pass at 1e-2 over all classes), "two-stage"
(TopK(k=4) then TopK(k=2, 16 probes, 1e-3), keeping the label). For each screen: the cosine
between its gradient and the all-class gradient (same probes), and whether the sign of the
gradient (an L-inf step) agrees. Then a whole PGD-40 (`jaxrej.attacks.pgd`, one compiled region)
on `pgd_n` digits with the chosen screen, wall time per example.

Writes benchmarks/results/attack_cost.json and .md; prints the table.

    python -m benchmarks.attack_cost --compile [--pgd-n 2] [--suite-steps 10] [--quick]

Where the first call's time goes (results/attack_compile.json / .md), same scorer (TopK(k=2)
keeping the label, the attack view): trace / lower / XLA-compile seconds (wall and process CPU)
of the forward, of one value-and-gradient, and of the whole PGD-40 region (AOT
`jit(...).trace().lower().compile()`); then the suite (PGD-CE, APGD-CE, APGD-DLR, APGD-T with 3
targets, APGD on the reject-aware loss) run first as one compiled region per attack
(loop="compiled": the gradient through the ODE is compiled once per attack) and then with
loop="python" (`jaxrej.attacks.stepper`: one shared gradient executable for every attack, loss
and eps): first call (compile + run) and a second call at another eps (run only) per attack, and
whether both loops return the same inputs. Square (a forward in the loop) compiled vs python.
No persistent compilation cache (JAX_COMPILATION_CACHE_DIR unset).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.report import write_report

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def device_name() -> str:
    import platform

    d = jax.devices()[0]
    return f"{d.platform.upper()} {d.device_kind} ({platform.machine()}, {os.cpu_count()} cores)"


def screens():
    import jaxrej

    return {
        "all": None,
        "topk2": (jaxrej.TopK(k=2),),
        "two-stage": (jaxrej.TopK(k=4), jaxrej.TopK(k=2, n_probes=16, rtol=1e-3, atol=1e-3)),
    }


def render(out: dict) -> str:
    s = out["setup"]
    lines = [
        f"Device: {out['device']}. {s['n']} test digits x 10 classes, pixel-space attack on the "
        "trained digits SBGC; accurate solve: 1-probe Rademacher, rtol=atol=1e-3, max_steps 64. "
        f"Medians of {s['repeats']} interleaved rounds; machine load (1-min average) at start "
        f"{s['load_start']:.1f}, at end {s['load_end']:.1f} on {os.cpu_count()} cores.",
        "",
        "| screen | forward s/example | attack step (margin loss) s/example | step / forward | "
        "step / forward (all classes) | grad cosine vs all | sign agreement |",
        "|---|---|---|---|---|---|---|",
    ]
    f_all = out["screens"]["all"]["forward_s"]
    for name, r in out["screens"].items():
        lines.append(
            f"| {name} | {r['forward_s'] / s['n']:.3f} | {r['step_s'] / s['n']:.3f} | "
            f"{r['step_s'] / r['forward_s']:.2f} | {r['step_s'] / f_all:.2f} | "
            f"{r['cosine']:.4f} | {100 * r['sign_agreement']:.1f}% |"
        )
    p = out["pgd"]
    lines += [
        "",
        f"PGD-{p['steps']} (L-inf eps {p['eps']}, screen {p['screen']}, one compiled region) on "
        f"{p['n']} digits: {p['wall_s']:.1f} s wall after a {p['compile_s']:.1f} s first call "
        f"(compile + run), {p['wall_s'] / p['n']:.1f} s per digit, success {p['success']}/{p['n']}.",
        "",
        "The SBGC paper (Zimmermann et al. 2021) reports ~90 minutes per forward+backward for one "
        "CIFAR-10 image on a V100. What differs here: 8x8x1 = 64 dimensions instead of 3072, a "
        "small MLP score model instead of a deep U-Net/NCSN++, a 1-probe Hutchinson divergence "
        "instead of the exact trace (one VJP per evaluation instead of 3072), a loose rtol=1e-3 "
        "adaptive solve, and a TopK screen so that only 2 of 10 classes are differentiated "
        "(the paper backpropagates through every class); the cost ratio of one attack step to "
        "one forward scoring (the table) is what transfers to larger models, not the seconds.",
    ]
    return "\n".join(lines) + "\n"


def _sbgc(workdir, labels, key, screen):
    from jaxrej.scorers.sbgc import SBGCScorer
    from jaxrej.training import load_trained

    tm = load_trained(workdir)
    base = (("divergence", "rademacher"), ("n_probes", 1), ("rtol", 1e-3), ("atol", 1e-3),
            ("max_steps", 64))  # fmt: skip
    return SBGCScorer(params=tm.params, key=key, labels=labels, score_fn=tm.score_fn,
                      sde=tm.sde, num_classes=10, n_levels=17,
                      options=(("screen", screen), *base))  # fmt: skip


def _commit():
    import subprocess

    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(__file__),
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "jaxrej/attacks"],
                               capture_output=True, text=True,
                               cwd=os.path.dirname(__file__)).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+attacks-modified" if dirty else "")


def _aot(jitted, *args, **kw):
    """(trace, lower, compile) wall seconds and compile process-CPU seconds of one jit."""
    t0 = time.perf_counter()
    tr = jitted.trace(*args, **kw)
    t1 = time.perf_counter()
    lo = tr.lower()
    t2 = time.perf_counter()
    c0 = time.process_time()
    lo.compile()
    return {"trace_s": t1 - t0, "lower_s": t2 - t1, "compile_s": time.perf_counter() - t2,
            "compile_cpu_s": time.process_time() - c0}  # fmt: skip


SUITE_ORDER = ["PGD-CE", "APGD-CE", "APGD-DLR", "APGD-T (DLR, 3 targets)", "APGD reject-aware"]


def render_compile(out: dict) -> str:
    s = out["setup"]
    lines = [
        f"Device: {out['device']}, one core (taskset), jax {s['jax']}. SBGC attack view of "
        f"`{s['workdir']}` on {s['n']} digits: TopK(k=2) keeping the label, 1-probe Rademacher, "
        f"rtol=atol=1e-3, max_steps 64; no persistent compilation cache. Machine load (1-min "
        f"average) at start {s['load_start']:.1f}, at end {s['load_end']:.1f} on "
        f"{os.cpu_count()} cores (other jobs shared them: wall seconds are inflated, CPU seconds "
        f"less so). Code: {s.get('commit')}.",
        "",
        "Where a first call goes (AOT trace / lower / compile of one jit):",
        "",
        "| program | trace s | lower s | XLA compile s (wall) | XLA compile s (CPU) |",
        "|---|---|---|---|---|",
    ]
    order = ["forward", "value_and_grad (CE)"]
    for name in order + sorted(set(out["breakdown"]) - set(order)):
        r = out["breakdown"][name]
        lines.append(f"| {name} | {r['trace_s']:.1f} | {r['lower_s']:.1f} | {r['compile_s']:.1f} "
                     f"| {r['compile_cpu_s']:.1f} |")  # fmt: skip
    lines += [
        "",
        f"The suite, {s['suite_steps']} steps each, eps {s['eps'][0]:g} then {s['eps'][1]:g} "
        "(seconds wall; the second call is the run alone: eps is traced, nothing recompiles):",
        "",
        "| attack | compiled: 1st call | compiled: 2nd call | python: 1st call | "
        "python: 2nd call | same x_adv |",
        "|---|---|---|---|---|---|",
    ]
    tot = {"compiled": 0.0, "python": 0.0}
    for name in [n for n in SUITE_ORDER if n in out["suite"]]:  # the order they ran in
        r = out["suite"][name]
        c, p = r["compiled"], r["python"]
        tot["compiled"] += c["first_s"]
        tot["python"] += p["first_s"]
        lines.append(f"| {name} | {c['first_s']:.1f} | {c['second_s']:.1f} | {p['first_s']:.1f} "
                     f"| {p['second_s']:.1f} | {'yes' if r['same'] else 'no'} |")  # fmt: skip
    lines.append(f"| **suite total** | **{tot['compiled']:.1f}** | | **{tot['python']:.1f}** | | |")
    lines += [
        "",
        "The python loop's first attack (PGD-CE) pays for compiling the shared gradient "
        "step; the later ones reuse it and compile only their small update functions.",
    ]
    q = out["square"]
    lines += [
        "",
        f"Square ({q['queries']} queries, forward only in the loop): compiled loop first call "
        f"{q['compiled']['first_s']:.1f} s, then {q['compiled']['second_s']:.1f} s; python loop "
        f"{q['python']['first_s']:.1f} s, then {q['python']['second_s']:.1f} s; same x_adv: "
        f"{'yes' if q['same'] else 'no'}.",
    ]
    return "\n".join(lines) + "\n"


def compile_main(args):
    """The --compile measurements (module doc)."""
    import jaxrej
    from jaxrej import attacks
    from jaxrej.attacks import attack_loss, eot
    from jaxrej.attacks.pgd import _pgd
    from jaxrej.data.preprocessing import to_unit_interval
    from jaxrej.data.registry import load_dataset

    load_start = os.getloadavg()[0]
    d = load_dataset("digits", "test")
    rows = np.linspace(0, len(d.labels) - 1, args.pgd_n).round().astype(int)
    x = jnp.asarray(to_unit_interval(d.images[rows], d.n_levels))
    y = jnp.asarray(d.labels[rows], jnp.int32)
    key = jax.random.key(0)
    f = _sbgc(args.workdir, y, key, (jaxrej.TopK(k=2),))
    bd = {"forward": _aot(jax.jit(lambda z: f(z)), x)}
    print("forward", bd["forward"], flush=True)
    vg = jax.jit(jax.value_and_grad(lambda z: jnp.sum(attack_loss(f(z), y, loss="ce"))))
    bd["value_and_grad (CE)"] = _aot(vg, x)
    print("value_and_grad", bd["value_and_grad (CE)"], flush=True)
    sf, leaves = eot.split_scorer(f)
    bd[f"PGD-{args.pgd_steps} region"] = _aot(
        _pgd, sf, leaves, x, y, key, jnp.float32(0.1), jnp.float32(0.25 / args.pgd_steps), None,
        norm="linf", steps=args.pgd_steps, restarts=1, loss="ce", clip=(0.0, 1.0),
        targeted=False, rand_init=True, n_eot=1, stochastic=False, keep_best=True)  # fmt: skip
    print("pgd region", bd[f"PGD-{args.pgd_steps} region"], flush=True)
    th = jnp.full((10,), -1e9, jnp.float32)  # accept all: the reject loss's program, not its result
    suite = {
        "PGD-CE": (attacks.pgd, dict(loss="ce")),
        "APGD-CE": (attacks.apgd, dict(loss="ce")),
        "APGD-DLR": (attacks.apgd, dict(loss="dlr")),
        "APGD-T (DLR, 3 targets)": (attacks.apgd_targeted, dict(n_targets=3)),
        "APGD reject-aware": (attacks.apgd, dict(loss="reject", thresholds=th)),
    }
    eps = (0.1, 0.2)
    res = {name: {} for name in suite}
    outs = {}
    for loop in ("compiled", "python"):  # the python loop's step is not warm from the regions
        for name, (attack, kw) in suite.items():
            times = []
            for e in eps:
                t = time.perf_counter()
                r = jax.block_until_ready(attack(f, x, y, key=key, eps=e, steps=args.suite_steps,
                                                 loop=loop, **kw))  # fmt: skip
                times.append(time.perf_counter() - t)
            outs[(name, loop)] = r
            res[name][loop] = {"first_s": times[0], "second_s": times[1],
                               "success": int(np.sum(r.success))}  # fmt: skip
            print(f"{loop} {name}: {times[0]:.1f}s then {times[1]:.1f}s", flush=True)
    for name in suite:
        a, b = outs[(name, "compiled")], outs[(name, "python")]
        res[name]["same"] = bool(np.allclose(a.x_adv, b.x_adv, atol=1e-6))
    sq = {"queries": args.square_queries}
    xs = {}
    for loop in ("compiled", "python"):
        times = []
        for e in eps:
            t = time.perf_counter()
            r = jax.block_until_ready(attacks.square(f, x, y, key=key, eps=e, loop=loop,
                                                     queries=args.square_queries))  # fmt: skip
            times.append(time.perf_counter() - t)
        xs[loop] = r.x_adv
        sq[loop] = {"first_s": times[0], "second_s": times[1]}
        print(f"square {loop}: {times}", flush=True)
    sq["same"] = bool(np.allclose(xs["compiled"], xs["python"], atol=1e-6))
    out = {
        "device": device_name(),
        "setup": {"n": args.pgd_n, "rows": rows.tolist(), "workdir": args.workdir,
                  "suite_steps": args.suite_steps, "eps": list(eps), "jax": jax.__version__,
                  "cache": os.environ.get("JAX_COMPILATION_CACHE_DIR"),
                  "commit": _commit(),
                  "load_start": load_start, "load_end": os.getloadavg()[0]},
        "breakdown": bd,
        "suite": res,
        "square": sq,
    }  # fmt: skip
    write_report(
        args.out if args.out != "attack_cost" else "attack_compile",
        out,
        args.results_dir,
        render_compile,
    )
    return out


def main(argv=None):
    import jaxrej  # noqa: F401
    from jaxrej.attacks import attack_loss, pgd
    from jaxrej.data.preprocessing import to_unit_interval
    from jaxrej.data.registry import load_dataset
    from jaxrej.scorers.sbgc import SBGCScorer
    from jaxrej.training import load_trained

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/digits")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pgd-n", type=int, default=4)
    ap.add_argument("--pgd-steps", type=int, default=40)
    ap.add_argument("--pgd-screen", default="topk2")
    ap.add_argument("--results-dir", default=RESULTS)
    ap.add_argument("--out", default="attack_cost")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 digits, PGD-3 on 1")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="where the first call's time goes (results/attack_compile)",
    )
    ap.add_argument("--suite-steps", type=int, default=10)
    ap.add_argument("--square-queries", type=int, default=50)
    args = ap.parse_args(argv)
    if args.compile:
        if args.quick:
            args.pgd_n, args.pgd_steps, args.suite_steps, args.square_queries = 1, 3, 2, 4
        return compile_main(args)
    if args.quick:
        args.n, args.repeats, args.pgd_n, args.pgd_steps = 2, 1, 1, 3
    load_start = os.getloadavg()[0]
    tm = load_trained(args.workdir)
    d = load_dataset("digits", "test")
    rows = np.linspace(0, len(d.labels) - 1, args.n).round().astype(int)
    x = jnp.asarray(to_unit_interval(d.images[rows], d.n_levels))
    y = jnp.asarray(d.labels[rows], jnp.int32)
    key = jax.random.key(0)
    base = (("divergence", "rademacher"), ("n_probes", 1), ("rtol", 1e-3), ("atol", 1e-3),
            ("max_steps", 64))  # fmt: skip

    def scorer(screen, labels):
        return SBGCScorer(params=tm.params, key=key, labels=labels, score_fn=tm.score_fn,
                          sde=tm.sde, num_classes=10, n_levels=d.n_levels,
                          options=(("screen", screen), *base))  # fmt: skip

    fns = {}
    for name, sc in screens().items():
        f = scorer(sc, y if sc is not None else None)
        fwd = jax.jit(lambda x, f=f: f(x))
        step = jax.jit(jax.value_and_grad(
            lambda x, f=f: jnp.sum(attack_loss(f(x), y, loss="margin"))))  # fmt: skip
        fns[name] = (fwd, step)
    grads, times = {}, {n: {"forward": [], "step": []} for n in fns}
    for name, (fwd, step) in fns.items():  # compile
        jax.block_until_ready(fwd(x))
        grads[name] = np.asarray(jax.block_until_ready(step(x))[1]).reshape(args.n, -1)
        print(f"compiled {name}")
    for r in range(args.repeats):
        for name, (fwd, step) in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fwd(x))
            times[name]["forward"].append(time.perf_counter() - t)
            t = time.perf_counter()
            jax.block_until_ready(step(x))
            times[name]["step"].append(time.perf_counter() - t)
        print(f"round {r}: " + ", ".join(f"{n} {v['step'][-1]:.1f}s" for n, v in times.items()))
    g_all = grads["all"]
    res = {}
    for name in fns:
        g = grads[name]
        norms = np.linalg.norm(g, axis=1) * np.linalg.norm(g_all, axis=1)
        if not np.all(norms > 0):  # a zero gradient has no direction to compare
            raise RuntimeError(
                f"{name}: a zero input gradient on rows {np.flatnonzero(norms == 0)}"
            )
        cos = np.sum(g * g_all, 1) / norms
        res[name] = {"forward_s": float(np.median(times[name]["forward"])),
                     "step_s": float(np.median(times[name]["step"])),
                     "forward_all_s": times[name]["forward"], "step_all_s": times[name]["step"],
                     "cosine": float(np.mean(cos)), "cosine_min": float(np.min(cos)),
                     "sign_agreement": float(np.mean(np.sign(g) == np.sign(g_all)))}  # fmt: skip
    xp, yp = x[: args.pgd_n], y[: args.pgd_n]
    f = scorer(screens()[args.pgd_screen], yp)
    kw = dict(key=key, eps=0.1, steps=args.pgd_steps)
    t = time.perf_counter()
    r1 = jax.block_until_ready(pgd(f, xp, yp, **kw))
    first = time.perf_counter() - t
    t = time.perf_counter()
    r1 = jax.block_until_ready(pgd(f, xp, yp, **kw))
    wall = time.perf_counter() - t
    out = {
        "device": device_name(),
        "setup": {
            "n": args.n,
            "repeats": args.repeats,
            "rows": rows.tolist(),
            "load_start": load_start,
            "load_end": os.getloadavg()[0],
        },  # fmt: skip
        "screens": res,
        "pgd": {
            "n": args.pgd_n,
            "steps": args.pgd_steps,
            "eps": 0.1,
            "screen": args.pgd_screen,
            "compile_s": first,
            "wall_s": wall,
            "success": int(np.sum(r1.success)),
        },  # fmt: skip
    }
    write_report(args.out, out, args.results_dir, render)


if __name__ == "__main__":
    main()
