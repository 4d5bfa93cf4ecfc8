"""The cost of one test-time latent-search step of ABS (`jaxrej.abs.class_bounds`) by decoder.

    python -m benchmarks.abs_conv_cost [--rows 20] [--steps 20] [--repeats 3] [--device TEXT]

Decoders (MNIST shapes, 10 classes, latent 8, untrained weights: the cost does not depend on
them): the MLP of configs/mnist_abs.py (hidden (256, 512)); the conv decoder (channels
(32, 16, 8), `jaxrej.abs.model`) with its 3x3 convolutions as matmuls of shifted copies (what the
library runs); and the same decoder with `lax.conv_general_dilated` instead (the reference
implementation, patched in for this measurement only). For each, `class_bounds` of `rows` rows
is compiled with `steps` Adam steps and with 0 steps (bank, encoder, Laplace term only), then
both are timed `repeats` times interleaved across decoders; the search step's cost is
(t_steps - t_0) / steps per row (every class and start of a row at once). Medians, and ratios
against the MLP. Writes benchmarks/results/abs_conv_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from unittest import mock

import jax

from benchmarks.report import invocation, write_report
from jaxrej import abs as A
from jaxrej.abs import model as abs_model

HERE = os.path.dirname(os.path.abspath(__file__))


def lax_conv3x3(h, kernel, bias):
    """`abs_model.conv3x3` by lax.conv_general_dilated (NHWC, HWIO, 'SAME')."""
    c_in = h.shape[-1]
    lead = h.shape[:-3]
    x = h.reshape((-1,) + h.shape[-3:])
    w = kernel.reshape(3, 3, c_in, -1)
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
    return y.reshape(lead + y.shape[1:]) + bias


DECODERS = {
    "mlp (256, 512)": ({"decoder": "mlp", "hidden": (256, 512)}, None),
    "conv (32, 16, 8) as matmuls": ({"decoder": "conv", "channels": (32, 16, 8)}, None),
    "conv (32, 16, 8) by lax.conv": ({"decoder": "conv", "channels": (32, 16, 8)}, lax_conv3x3),
}


def programs(fields, conv, rows, steps):
    """(run(steps), run(0)): jitted class_bounds of `rows` random rows, compiled."""
    model = A.ABSModel(num_classes=10, event_shape=(28, 28, 1), latent_dim=8, sigma=0.1, **fields)
    patch = mock.patch.object(abs_model, "conv3x3", conv) if conv else contextlib.nullcontext()
    with patch:
        params = A.init_params(model, key=jax.random.key(0))
        bank = A.latent_bank(model, params, n=1000, key=jax.random.key(1))
        x = jax.random.uniform(jax.random.key(2), (rows, 28, 28, 1))
        out = []
        for s in (steps, 0):
            opts = A.LatentOptions(steps=s)
            f = jax.jit(lambda xb, o=opts: A.class_bounds(model, params, bank, xb, options=o).score)
            f = f.lower(x).compile()
            f(x).block_until_ready()
            out.append(lambda f=f: f(x).block_until_ready())
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(params["dec"]))
    return out, n_params


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="")
    args = p.parse_args(argv)
    progs = {n: programs(f, c, args.rows, args.steps) for n, (f, c) in DECODERS.items()}
    times = {n: ([], []) for n in progs}
    for _ in range(args.repeats):
        for n, ((run_s, run_0), _) in progs.items():
            for i, run in enumerate((run_s, run_0)):
                t = time.perf_counter()
                run()
                times[n][i].append(time.perf_counter() - t)
    res = {}
    for n, (ts, t0) in times.items():
        ms, m0 = statistics.median(ts), statistics.median(t0)
        res[n] = {"t_steps_s": ms, "t_0_s": m0, "decoder_params": int(progs[n][1]),
                  "step_ms_per_row": 1e3 * (ms - m0) / args.steps / args.rows}  # fmt: skip
    ref = res["mlp (256, 512)"]["step_ms_per_row"]
    for r in res.values():
        r["vs_mlp"] = r["step_ms_per_row"] / ref
    out = {"device": args.device or str(jax.devices()), "jax": jax.__version__,
           "command": invocation() or "python -m benchmarks.abs_conv_cost",
           "commit": subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip(),
           "rows": args.rows, "steps": args.steps, "repeats": args.repeats, "decoders": res}  # fmt: skip
    write_report("abs_conv_cost", out, os.path.join(HERE, "results"), to_markdown)


def to_markdown(out: dict) -> str:
    lines = ["# ABS latent-search step cost by decoder (XLA:CPU)", "",
             f"Device: {out['device']}; jax {out['jax']}; commit {out['commit']}; `{out['command']}`. "
             f"class_bounds of {out['rows']} rows, {out['steps']} Adam steps vs 0 (10 classes x 2 "
             f"starts per row), median of {out['repeats']} interleaved runs.", "",
             "| decoder | params (10 classes) | with steps s | 0 steps s | ms per step per row | vs mlp |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for n, r in out["decoders"].items():
        lines.append(f"| {n} | {r['decoder_params']:,} | {r['t_steps_s']:.3f} | {r['t_0_s']:.3f} | "
                     f"{r['step_ms_per_row']:.3f} | {r['vs_mlp']:.1f}x |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
