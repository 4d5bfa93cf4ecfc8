"""Gradient attacks on every scorer of the digits data, with the reject option (issue 11's table).

Run:  python -m benchmarks.adversarial_digits [--workdir runs/digits] [--heads-dir runs/adversarial_heads]
      [--eps 0.1 0.2 0.3] [--steps 40] [--sbgc-n 8] [--sbgc-steps 10] [--sbgc-eps 0.1 0.3]
      [--skip-sbgc] [--quick] [--out adversarial_digits]

Pixel space and eps convention: 8x8 digits with 17 levels, x = k / 16 in [0, 1] (what the base
classifiers see; `jaxrej.eval.pixel_scorers` maps it to the score model's bin centres). L-inf eps
0.1 / 0.2 / 0.3 as for MNIST: the same fraction of the pixel range (0.1 = 1.6 of 16 levels), which
is the only thing L-inf measures. (L2 would scale MNIST's eps by sqrt(64 / 784) = 0.29.)

Scorers: SBGC (class log-likelihoods through the probability-flow ODE of the trained `jaxrej
train` run; 1-probe Rademacher divergence at rtol = atol = 1e-3, TopK(k=2) keeping the label,
max_steps 64 -- the attack's and the decision's scorer), SDIM-logit, GMM class-conditional, GMM,
MSP, temperature-scaled MSP, Mahalanobis (heads on configs/digits_heads.py's MLP, fitted with
`pixel_scorers.fit_heads`, saved in --heads-dir). Thresholds: per class at the 1st and 2nd
percentile of held-out rows: for the heads the validation rows (15% of train, not the rows they
were fit on); for the SBGC, trained on every train digit, the test digits it is not attacked on.
--heads-from RESULTS.json reuses the heads rows of an earlier run (same eps and steps) and runs
the SBGC part only.
Attacks: PGD (CE, random start, step 2.5 eps / steps), APGD (DLR), the adaptive reject-aware PGD;
protocol and checks: `jaxrej.eval.adversarial`. The SBGC gets fewer digits and steps (CPU
budget, stated in the table).

Writes benchmarks/results/adversarial_digits.json and .md; prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from benchmarks.report import write_report

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def device_name() -> str:
    import platform

    d = jax.devices()[0]
    return f"{d.platform.upper()} {d.device_kind} ({platform.machine()}, {os.cpu_count()} cores)"


def load_or_fit_heads(heads_dir, data):
    import importlib.util

    from jaxrej.eval import pixel_scorers as ps

    try:
        return ps.load_heads(heads_dir), "loaded"
    except ValueError:
        pass
    path = os.path.join(os.path.dirname(__file__), "..", "configs", "digits_heads.py")
    spec = importlib.util.spec_from_file_location("digits_heads", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    sd = dict(c.sdim)
    heads = ps.fit_heads(data.fit, data.val, num_classes=data.num_classes, model=c.model.name,
                         model_kwargs=dict(c.model.kwargs), train=dict(c.train), sdim=sd,
                         gmm=dict(c.gmm), key=jax.random.key(c.seed))  # fmt: skip
    ps.save_heads(heads_dir, heads)
    return heads, "fitted"


def sbgc_scorer(workdir, labels, key):
    import jaxrej
    from jaxrej.eval.pixel_scorers import SBGCScorer
    from jaxrej.training import load_trained

    tm = load_trained(workdir)
    opts = (("screen", (jaxrej.TopK(k=2),)), ("divergence", "rademacher"), ("n_probes", 1),
            ("rtol", 1e-3), ("atol", 1e-3), ("max_steps", 64))  # fmt: skip
    return tm, SBGCScorer(params=tm.params, key=key, labels=labels, score_fn=tm.score_fn,
                          sde=tm.sde, num_classes=int(tm.config["data"]["num_classes"]),
                          n_levels=int(tm.config["data"]["n_levels"]), options=opts)  # fmt: skip


def render(out: dict) -> str:
    from jaxrej.eval.adversarial import markdown

    s = out["setup"]
    head = (
        f"Device: {out['device']}. Pixel space x = k/16 in [0, 1]; L-inf eps {s['eps']} (MNIST's "
        f"convention: a fraction of the range). Heads scorers: {s['n_heads']} test digits, "
        f"PGD/APGD {s['steps']} steps. SBGC: {s['sbgc_n']} test digits, {s['sbgc_steps']} steps, "
        f"eps {s['sbgc_eps']} ({s['sbgc_note']}). Thresholds: per class, percentiles "
        f"{s['percentiles']} of {s['n_val']} held-out validation digits. 'worst acc': a "
        "success of PGD or APGD counts; 'rej. adv': rejection rate of those adversarial inputs; "
        "'fooled+acc.': misclassified and accepted; 'adaptive': the best of the plain and the "
        "reject-aware attack. Checks: unbounded (success at eps = the whole range), monotone "
        "(success for steps/4, steps, steps x 2 restarts), transfer (from the MSP base classifier "
        "vs white-box, per eps), eot (SBGC, Hutchinson probes redrawn per step).\n\n"
    )
    return head + markdown(out["scorers"], percentiles=s["percentiles"]) + "\n"


def main(argv=None):
    from jaxrej import attacks
    from jaxrej.eval import adversarial
    from jaxrej.eval import pixel_scorers as ps
    from jaxrej.eval.heads import load_heads_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/digits")
    ap.add_argument("--heads-dir", default="runs/adversarial_heads")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--n-heads", type=int, default=360)
    ap.add_argument("--sbgc-n", type=int, default=8)
    ap.add_argument("--sbgc-steps", type=int, default=10)
    ap.add_argument("--sbgc-eps", type=float, nargs="+", default=[0.1, 0.3])
    ap.add_argument("--skip-sbgc", action="store_true")
    ap.add_argument("--heads-from", default="", help="reuse the heads rows of this results json")
    ap.add_argument("--quick", action="store_true", help="a smoke run: few digits and steps")
    ap.add_argument("--results-dir", default=RESULTS)
    ap.add_argument("--out", default="adversarial_digits")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_heads, args.steps, args.eps = 24, 5, [0.1, 0.3]
        args.sbgc_n, args.sbgc_steps, args.sbgc_eps = 2, 2, [0.3]
    pct = (1.0, 2.0)
    t_start = time.time()
    data = load_heads_data("digits", val_fraction=0.15, seed=0)
    heads, how = load_or_fit_heads(args.heads_dir, data)
    print(f"heads {how} ({time.time() - t_start:.0f}s)")
    (xv, yv), (xt, yt) = data.val, data.test
    n = min(args.n_heads, len(yt))
    x, y = xt[:n], yt[:n]
    opts = adversarial.AttackOptions(eps=tuple(args.eps), steps=args.steps, batch_size=120,
                                     percentiles=pct)  # fmt: skip
    results, transfer = {}, {}
    key = jax.random.key(0)
    order = ["msp", "msp_temperature", "sdim_logit", "gmm_cc", "gmm", "mahalanobis"]
    if args.heads_from:  # the heads rows of an earlier run; transfer inputs recomputed below
        with open(args.heads_from) as f:
            prev = json.load(f)
        results = {k: v for k, v in prev["scorers"].items() if k != "sbgc"}
        if prev["setup"]["eps"] != list(args.eps) or prev["setup"]["steps"] != args.steps:
            raise ValueError("--heads-from: its eps/steps differ from this run's")
        order = []
    for name in order:
        fn = ps.HeadScorer(heads=heads, kind=name)
        t0 = time.time()
        th = adversarial.fit_thresholds(adversarial.scores_of(fn, xv, batch_size=120), yv, pct)
        print(f"{name}:")
        r = adversarial.evaluate_scorer(lambda yb, fn=fn: fn, x, y, th, options=opts, key=key,
                                        transfer=transfer or None)  # fmt: skip
        if name == "msp":
            transfer = {float(e): v["_x_adv_pgd"] for e, v in r["eps"].items()}
        r["seconds"] = time.time() - t0
        results[name] = adversarial.json_ready(r)

    def report(sbgc_note):
        out = {
            "device": device_name(),
            "setup": {
                "eps": list(args.eps),
                "steps": args.steps,
                "n_heads": n,
                "n_val": len(yv),
                "sbgc_n": args.sbgc_n,
                "sbgc_steps": args.sbgc_steps,
                "sbgc_eps": list(args.sbgc_eps),
                "sbgc_note": sbgc_note,
                "percentiles": list(pct),
                "norm": "linf",
                "heads": how,
            },
            "scorers": results,
            "seconds": time.time() - t_start,
            "load_average_1min": os.getloadavg()[0],
        }
        write_report(args.out, out, args.results_dir, render)

    if args.skip_sbgc:
        report("skipped")
    else:
        report("not run yet: this file is rewritten when the SBGC part ends")
        t0 = time.time()
        k_sb = jax.random.key(1)
        _, base = sbgc_scorer(args.workdir, None, k_sb)
        # an even spread of the test split (every class), then the same rows for every attack
        rows = np.linspace(0, n - 1, args.sbgc_n).round().astype(int)
        xs, ys = xt[rows], yt[rows]
        # thresholds: the other test digits -- the score model was trained on the whole train
        # split (validation rows included), and fits its training digits better than new ones
        held = np.setdiff1d(np.arange(len(yt)), rows)
        th = adversarial.fit_thresholds(
            adversarial.scores_of(base, xt[held], batch_size=32), yt[held], pct)  # fmt: skip
        t_th = time.time() - t0
        if args.heads_from:
            msp = ps.HeadScorer(heads=heads, kind="msp")
            transfer = {
                float(e): adversarial.batched_attack(
                    attacks.pgd, lambda yb: msp, xs, ys, key=jax.random.key(2),
                    batch_size=len(ys), eps=e, steps=args.steps)["x_adv"]
                for e in args.sbgc_eps
            }  # fmt: skip
            tr = transfer
        else:
            tr = {e: v[rows] for e, v in transfer.items()}
        o_sb = adversarial.AttackOptions(eps=tuple(args.sbgc_eps), steps=args.sbgc_steps,
                                         batch_size=args.sbgc_n, percentiles=pct, n_eot=4)  # fmt: skip
        print("sbgc:")
        r = adversarial.evaluate_scorer(lambda yb: base.replace(labels=yb), xs, ys, th,
                                        options=o_sb, key=key, transfer=tr, stochastic=True)  # fmt: skip
        r["seconds"] = time.time() - t0
        r["threshold_fit_seconds"] = t_th
        results = {"sbgc": adversarial.json_ready(r), **results}
        sbgc_note = (f"rows {rows.tolist()}; thresholds from the other {len(held)} test digits "
                     "(the score model trained on all train digits); 1-probe Hutchinson, "
                     f"rtol=atol=1e-3, TopK(k=2); {r['seconds'] / 60:.0f} min")  # fmt: skip
        report(sbgc_note)


if __name__ == "__main__":
    main()
