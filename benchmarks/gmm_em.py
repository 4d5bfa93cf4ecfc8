"""GMM EM in JAX (jaxrej.heads.gmm.fit) against scikit-learn's GaussianMixture.

    python -m benchmarks.gmm_em [--repeats 3] [--repeats-large 1] [--quick]

Data: 10,000 training and 5,000 held-out 64-d features drawn from a random 20-component
Gaussian mixture (full covariances, overlapping clusters). For K in (10, 100) and covariance "diag" and "full",
both fit with the same settings (k-means init, reg_covar=1e-6, tol=1e-3, max_iter=100,
n_init=1) and are timed end to end (init + EM), JAX after one compiling call on another
seed, with block_until_ready. Reports the median wall time, EM iterations, seconds per
iteration, and the mean train / held-out log-likelihood of each (equal log-likelihood is part
of the target: faster than scikit-learn at equal log-likelihood). Writes
benchmarks/results/gmm_em.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import numpy as np
import sklearn
from sklearn.mixture import GaussianMixture

from benchmarks.report import write_report
from jaxrej.heads import gmm

DEVICE = "CPU, 2 cores"
HERE = os.path.dirname(os.path.abspath(__file__))


def make_data(n_train=10_000, n_test=5_000, d=64, k=20, seed=0):
    r = np.random.default_rng(seed)
    mus = r.normal(scale=0.35, size=(k, d))  # overlapping clusters: EM needs many iterations
    mix = r.normal(size=(k, d, d)) / np.sqrt(d)
    z = r.integers(0, k, n_train + n_test)
    x = mus[z] + np.einsum("nij,nj->ni", mix[z], r.normal(size=(z.size, d)))
    x = x.astype(np.float32)
    return x[:n_train], x[n_train:]


def bench_one(xtr, xte, k, covariance_type, repeats):
    opts = dict(reg_covar=1e-6, tol=1e-3, max_iter=100, n_init=1)
    em = gmm.EMOptions(k, covariance_type, **opts)
    # JAX: compile with another seed, then time
    jax.block_until_ready(gmm.fit(xtr, em, key=jax.random.key(99)).means)
    # interleave the two so that load from other processes hits both alike
    o_times, o_fits, s_times, s_fits = [], [], [], []
    for s in range(repeats):
        t = time.perf_counter()
        g = gmm.fit(xtr, em, key=jax.random.key(s))
        jax.block_until_ready(g.means)
        o_times.append(time.perf_counter() - t)
        o_fits.append(g)
        t = time.perf_counter()
        sk = GaussianMixture(k, covariance_type=covariance_type, random_state=s, **opts).fit(xtr)
        s_times.append(time.perf_counter() - t)
        s_fits.append(sk)
    ours = {
        "median_s": statistics.median(o_times),
        "times_s": o_times,
        "n_iter": [int(g.n_iter) for g in o_fits],
        "converged": [bool(g.converged) for g in o_fits],
        "train_loglik": [float(np.mean(gmm.log_prob(g, xtr))) for g in o_fits],
        "test_loglik": [float(np.mean(gmm.log_prob(g, xte))) for g in o_fits],
    }
    ref = {
        "median_s": statistics.median(s_times),
        "times_s": s_times,
        "n_iter": [int(f.n_iter_) for f in s_fits],
        "converged": [bool(f.converged_) for f in s_fits],
        "train_loglik": [float(f.score(xtr)) for f in s_fits],
        "test_loglik": [float(f.score(xte)) for f in s_fits],
    }
    for r in (ours, ref):
        r["s_per_iter"] = statistics.median(
            t / max(1, n) for t, n in zip(r["times_s"], r["n_iter"], strict=True)
        )
        r["median_test_loglik"] = statistics.median(r["test_loglik"])
    return {
        "k": k,
        "covariance_type": covariance_type,
        "jaxrej": ours,
        "sklearn": ref,
        "speedup": ref["median_s"] / ours["median_s"],
        "speedup_per_iter": ref["s_per_iter"] / ours["s_per_iter"],
        "test_loglik_rel_diff": (ours["median_test_loglik"] - ref["median_test_loglik"])
        / abs(ref["median_test_loglik"]),
    }


def to_markdown(res) -> str:
    lines = [
        f"# GMM EM: jaxrej (JAX, float32) vs scikit-learn {res['sklearn']} (float64)",
        "",
        f"Device: {res['device']}; jax {res['jax']}; data {res['n_train']}x{res['d']} train, "
        f"{res['n_test']} held out; median of {res['repeats']} fits (init + EM), tol=1e-3, reg_covar=1e-6.",
        "",
        "| K | cov | jaxrej s | sklearn s | speed-up | jaxrej s/iter | sklearn s/iter | iters (jaxrej / sklearn) "
        "| held-out LL jaxrej | held-out LL sklearn | rel. diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["results"]:
        o, s = r["jaxrej"], r["sklearn"]
        lines.append(
            f"| {r['k']} | {r['covariance_type']} | {o['median_s']:.2f} | {s['median_s']:.2f} | "
            f"{r['speedup']:.2f}x | {o['s_per_iter']:.4f} | {s['s_per_iter']:.4f} | "
            f"{o['n_iter']} / {s['n_iter']} | {o['median_test_loglik']:.3f} | {s['median_test_loglik']:.3f} | "
            f"{100 * r['test_loglik_rel_diff']:+.2f}% |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="fits per setting for K=10")
    p.add_argument("--repeats-large", type=int, default=1, help="fits per setting for K=100")
    p.add_argument("--quick", action="store_true", help="K=10 only, 1 repeat (a smoke run)")
    args = p.parse_args(argv)
    xtr, xte = make_data()
    ks = (10,) if args.quick else (10, 100)
    repeats = 1 if args.quick else args.repeats
    results = []
    for k in ks:
        for ct in ("diag", "full"):
            r = bench_one(xtr, xte, k, ct, repeats if k <= 10 else min(repeats, args.repeats_large))
            print(
                json.dumps(
                    {
                        key: r[key]
                        for key in ("k", "covariance_type", "speedup", "test_loglik_rel_diff")
                    }
                ),
                flush=True,
            )
            results.append(r)
    res = {
        "benchmark": "gmm_em",
        "device": DEVICE,
        "platform": platform.platform(),
        "jax": jax.__version__,
        "sklearn": sklearn.__version__,
        "n_train": int(xtr.shape[0]),
        "n_test": int(xte.shape[0]),
        "d": int(xtr.shape[1]),
        "repeats": {"K=10": repeats, "K=100": min(repeats, args.repeats_large)},
        "results": results,
    }
    if args.quick:
        print(to_markdown(res))
    else:
        write_report("gmm_em", res, os.path.join(HERE, "results"), to_markdown)
    return res


if __name__ == "__main__":
    main()
