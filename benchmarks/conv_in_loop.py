"""Training steps inside a compiled loop vs a Python loop of jitted steps, on XLA:CPU.

    python -m benchmarks.conv_in_loop [--steps 40] [--repeats 3] [--quick]

Why `jaxrej.classifiers.train` runs one jitted step per batch instead of a `lax.scan` over an
epoch: on XLA:CPU, the gradient of a convolution inside a loop body runs far slower than the
same step compiled alone. For each network (the CNN of configs/mnist_heads.py, a wider CNN, and
an MLP as the control), batches of 32 28x28 images, Adam: `steps` training steps as (a) one
jitted `lax.scan`, (b) a Python loop over one jitted step; and the forward pass alone, as (c) a
`lax.fori_loop` and (d) a Python loop. Each is compiled first, then timed `repeats` times
interleaved (a, b, c, d, a, b, ...) so that load from other processes hits all alike; the
table gives medians, the ratio scan / loop, and how far apart the parameters after (a) and (b)
end (the same steps: float rounding only). Writes benchmarks/results/conv_in_loop.json, .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.report import write_report
from jaxrej import classifiers

DEVICE = "CPU, 2 cores"
HERE = os.path.dirname(os.path.abspath(__file__))
NETS = {
    "cnn (8, 16, 32)": ("cnn", {"channels": (8, 16, 32), "dense": 64}),
    "cnn (16, 32, 64)": ("cnn", {"channels": (16, 32, 64), "dense": 128}),
    "mlp (256, 128)": ("mlp", {"hidden": (256, 128)}),
}


def programs(model, params, x, y):
    """The four compiled programs: (train scan, train step, forward fori, forward)."""
    opt = optax.adam(1e-3)

    def step(carry, xy):
        p, o = carry
        xb, yb = xy
        g = jax.grad(
            lambda p: optax.softmax_cross_entropy_with_integer_labels(
                model.apply({"params": p}, xb)[0], yb
            ).mean()
        )(p)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), o), None

    scan = jax.jit(lambda c, xs, ys: jax.lax.scan(step, c, (xs, ys))[0])
    one = jax.jit(lambda c, xb, yb: step(c, (xb, yb))[0])

    def fwd(h, xb):  # the input depends on the carry: nothing to hoist out of the loop
        return h + 1e-3 * model.apply({"params": params}, xb + h)[0].sum()

    fori = jax.jit(lambda h: jax.lax.fori_loop(0, x.shape[0], lambda _, h: fwd(h, x[0]), h))
    fwd = jax.jit(fwd)
    carry = (params, opt.init(params))

    def train_loop():
        c = carry
        for i in range(x.shape[0]):
            c = one(c, x[i], y[i])
        return c

    def forward_loop():
        h = jnp.float32(0)
        for _ in range(x.shape[0]):
            h = fwd(h, x[0])
        return h

    return {
        "train_scan": lambda: scan(carry, x, y),
        "train_loop": train_loop,
        "forward_fori": lambda: fori(jnp.float32(0)),
        "forward_loop": forward_loop,
    }


def bench_net(name, steps, repeats):
    kind, kw = NETS[name]
    model = classifiers.make_model(kind, 10, **kw)
    r = np.random.default_rng(0)
    x = jnp.asarray(r.random((steps, 32, 28, 28, 1), dtype=np.float32))
    y = jnp.asarray(r.integers(0, 10, (steps, 32)), jnp.int32)
    params = classifiers.init(model, x[0], key=jax.random.key(0)).params
    progs = programs(model, params, x, y)
    for f in progs.values():  # compile
        jax.block_until_ready(f())
    times = {k: [] for k in progs}
    for _ in range(repeats):
        for k, f in progs.items():
            t = time.perf_counter()
            jax.block_until_ready(f())
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    # the two training programs compute the same steps: compare the parameters they end with
    diff = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(
            jax.tree_util.tree_leaves(progs["train_scan"]()[0]),
            jax.tree_util.tree_leaves(progs["train_loop"]()[0]),
            strict=True,
        )
    )
    return {
        "net": name,
        "steps": steps,
        "median_s": med,
        "times_s": times,
        "train_ratio": med["train_scan"] / med["train_loop"],
        "forward_ratio": med["forward_fori"] / med["forward_loop"],
        "params_max_abs_diff": diff,
    }


def to_markdown(res) -> str:
    lines = [
        "# Training steps in a compiled loop vs a Python loop of jitted steps (XLA:CPU)",
        "",
        f"Device: {res['device']}; jax {res['jax']}; {res['steps']} steps of batch 32 (28x28x1), "
        f"median of {res['repeats']} interleaved runs.",
        "",
        "| network | train: lax.scan s | train: loop of jitted steps s | scan / loop "
        "| forward: fori_loop s | forward: loop s | fori / loop | params max abs diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["results"]:
        m = r["median_s"]
        lines.append(
            f"| {r['net']} | {m['train_scan']:.3f} | {m['train_loop']:.3f} | "
            f"{r['train_ratio']:.1f}x | {m['forward_fori']:.3f} | {m['forward_loop']:.3f} | "
            f"{r['forward_ratio']:.1f}x | {r['params_max_abs_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40, help="training steps per timed run")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timed runs")
    p.add_argument("--quick", action="store_true", help="the small CNN, 4 steps, 1 repeat")
    args = p.parse_args(argv)
    nets = ["cnn (8, 16, 32)"] if args.quick else list(NETS)
    steps, repeats = (4, 1) if args.quick else (args.steps, args.repeats)
    results = []
    for name in nets:
        r = bench_net(name, steps, repeats)
        print(json.dumps({k: r[k] for k in ("net", "train_ratio", "forward_ratio")}), flush=True)
        results.append(r)
    res = {
        "benchmark": "conv_in_loop",
        "device": DEVICE,
        "platform": platform.platform(),
        "jax": jax.__version__,
        "steps": steps,
        "repeats": repeats,
        "results": results,
    }
    if args.quick:
        print(to_markdown(res))
    else:
        write_report("conv_in_loop", res, os.path.join(HERE, "results"), to_markdown)
    return res


if __name__ == "__main__":
    main()
