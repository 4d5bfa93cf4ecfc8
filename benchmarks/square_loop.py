"""The Square attack's loop on a convolutional scorer: one compiled fori_loop vs a Python loop.

    python -m benchmarks.square_loop [--queries 200] [--repeats 3] [--quick]

benchmarks/conv_in_loop found that XLA:CPU runs a convolution's GRADIENT 9-17x slower inside a
compiled loop; Square only evaluates the scorer (no gradient), so the question is whether a
forward convolution in a loop body is slow too. Scorers: the CNN of configs/mnist_heads.py
(channels 8, 16, 32) and a wider one (16, 32, 64), randomly initialised, on a batch of 32
28x28x1 images, and an MLP as the control; `jaxrej.attacks.square` (L-inf, eps 0.1, margin
loss) with loop="compiled" (one `lax.fori_loop`) and loop="python" (one jitted iteration per
query). Each compiled first (the first call's seconds are reported), then timed `repeats` times
interleaved; medians; both loops must return the same x_adv. Writes results/square_loop.json, .md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))
NETS = {
    "cnn (8, 16, 32)": ("cnn", {"channels": (8, 16, 32), "dense": 64}),
    "cnn (16, 32, 64)": ("cnn", {"channels": (16, 32, 64), "dense": 128}),
    "mlp (256, 128)": ("mlp", {"hidden": (256, 128)}),
}


def render(out: dict) -> str:
    s = out["setup"]
    lines = [
        "# Square attack: compiled loop vs Python loop on XLA:CPU",
        "",
        f"Device: {out['device']}; jax {s['jax']}; batch {s['batch']} of 28x28x1, "
        f"{s['queries']} queries, L-inf eps 0.1; medians of {s['repeats']} interleaved runs "
        f"after a first call; load (1-min average) {s['load_start']:.1f} -> {s['load_end']:.1f}.",
        "",
        "| scorer | compiled: 1st call s | python: 1st call s | compiled s | python s | "
        "compiled / python | same x_adv |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in out["nets"].items():
        lines.append(
            f"| {name} | {r['compiled_first_s']:.2f} | {r['python_first_s']:.2f} | "
            f"{r['compiled_s']:.3f} | {r['python_s']:.3f} | "
            f"{r['compiled_s'] / r['python_s']:.2f}x | {'yes' if r['same'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    from jaxrej import attacks, classifiers

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--quick", action="store_true", help="the small CNN, 10 queries, 1 repeat")
    args = p.parse_args(argv)
    nets = ["cnn (8, 16, 32)"] if args.quick else list(NETS)
    queries, repeats = (10, 1) if args.quick else (args.queries, args.repeats)
    load_start = os.getloadavg()[0]
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(args.batch, 28, 28, 1)), jnp.float32)
    res = {}
    for name in nets:
        kind, kw = NETS[name]
        model = classifiers.make_model(kind, 10, **kw)
        variables = model.init(jax.random.key(1), x[:1])

        def f(z, model=model, variables=variables):
            out = model.apply(variables, z)
            return out[0] if isinstance(out, tuple) else out

        y = jnp.argmax(f(x), axis=1)

        def run(loop, f=f, y=y):
            return jax.block_until_ready(attacks.square(f, x, y, key=jax.random.key(2), eps=0.1,
                                                        queries=queries, loop=loop))  # fmt: skip

        first, outs = {}, {}
        for loop in ("compiled", "python"):
            t = time.perf_counter()
            outs[loop] = run(loop)
            first[loop] = time.perf_counter() - t
        times = {"compiled": [], "python": []}
        for _ in range(repeats):
            for loop in times:
                t = time.perf_counter()
                run(loop)
                times[loop].append(time.perf_counter() - t)
        res[name] = {
            "compiled_first_s": first["compiled"],
            "python_first_s": first["python"],
            "compiled_s": statistics.median(times["compiled"]),
            "python_s": statistics.median(times["python"]),
            "compiled_all_s": times["compiled"],
            "python_all_s": times["python"],
            "same": bool(np.array_equal(outs["compiled"].x_adv, outs["python"].x_adv)),
        }
        print(name, res[name], flush=True)
    out = {
        "device": f"CPU ({platform.machine()}, {os.cpu_count()} cores)",
        "setup": {"batch": args.batch, "queries": queries, "repeats": repeats,
                  "jax": jax.__version__, "load_start": load_start,
                  "load_end": os.getloadavg()[0]},
        "nets": res,
    }  # fmt: skip
    write_report("square_loop", out, args.results_dir, render)
    return out


if __name__ == "__main__":
    main()
