"""Is the ELBO classifier limited by its Monte Carlo draws? Accuracy and bits/dim of a trained
run's denoising bound against the number of (t, z) draws, on validation rows.

    python -m benchmarks.elbo_draws --workdir runs/mnist_sbgc --rows 300 --reps 8
    python -m benchmarks.elbo_draws --quick      # a toy run of the MNIST config, 8 rows

`reps` independent calls of jaxrej.class_elbos as `jaxrej score --scorer elbo` makes them (the
run's eval.elbo_n_times stratified draws per call, split at the net's label cutoff), on the first
`rows` validation rows of the run's eval set, dequantized once (uniform noise, seed 0). Averaging
k calls gives the bound of k * n draws: if the accuracy does not rise with k, more draws cannot
help and the errors are the model's. Also per row: the spread over calls of (true class's bound
- best other class's), against its mean.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

from benchmarks.report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(workdir: str, rows: int, reps: int) -> dict:
    import jax
    import numpy as np

    from benchmarks.mnist_sbgc_run import validation_rows
    from jaxrej.elbo import class_elbos
    from jaxrej.training.workdir import load_trained

    tm = load_trained(workdir)
    d, e = tm.run.data, tm.run.eval
    levels, n_classes, n = d.n_levels, d.num_classes, e.elbo_n_times
    x, y, _ = validation_rows(d, rows)
    bound = jax.jit(lambda xb, k: class_elbos(
        tm.score_fn, tm.params, tm.sde, xb, num_classes=n_classes, key=k, n_times=n,
        time_sampling=e.elbo_time_sampling, eps=float(e.eps),
        chunk_size=e.elbo_chunk_size or None, label_cutoff=tm.label_cutoff))  # fmt: skip
    batch = int(e.batch_size)
    out = np.zeros((reps, len(x), n_classes))
    t0 = time.perf_counter()
    for r in range(reps):
        for i in range(0, len(x), batch):
            key = jax.random.fold_in(jax.random.key(7), r * 100_000 + i)
            out[r, i : i + batch] = np.asarray(bound(x[i : i + batch], key))
        print(f"call {r + 1}/{reps}: {time.perf_counter() - t0:.0f} s", flush=True)
    dims = math.prod(x.shape[1:])
    table = []
    k = 1
    while k <= reps:
        groups = [out[j : j + k].mean(0) for j in range(0, reps - k + 1, k)]
        accs = [float(np.mean(g.argmax(1) == y)) for g in groups]
        bpd = [float(np.mean(-(np.logaddexp.reduce(g, axis=1) - math.log(n_classes)) / dims
                             / math.log(2) + math.log2(levels))) for g in groups]  # fmt: skip
        table.append({"draws": k * n, "groups": len(groups), "acc": float(np.mean(accs)),
                      "acc_sd": float(np.std(accs)), "bpd": float(np.mean(bpd))})  # fmt: skip
        k *= 2
    true = out[:, np.arange(len(x)), y]
    other = np.where(np.eye(n_classes, dtype=bool)[y][None], -np.inf, out).max(2)
    gap = true - other  # (reps, rows)
    sd = gap.std(0, ddof=1) if reps > 1 else np.full(len(x), np.nan)
    return {
        "workdir": workdir, "checkpoint_step": tm.step, "rows": int(len(x)), "reps": reps,
        "draws_per_call": n, "time_sampling": e.elbo_time_sampling,
        "label_cutoff": tm.label_cutoff, "seconds": round(time.perf_counter() - t0, 1),
        "table": table,
        "wrong_at_all_draws": int(np.sum(out.mean(0).argmax(1) != y)),
        "gap_sd_median": float(np.median(sd)),
        "rows_within_2sd": int(np.sum(np.abs(gap.mean(0)) < 2 * sd)),
        "load": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def to_markdown(res: dict) -> str:
    lines = [
        "# Is the ELBO classifier limited by its draws?",
        "",
        f"Run `{res['workdir']}` (checkpoint {res['checkpoint_step']}), the first {res['rows']} "
        f"validation rows; {res['reps']} independent calls of {res['draws_per_call']} "
        f"{res['time_sampling']} draws (split at t = {res['label_cutoff']:g}), averaged k at a "
        f"time; {res['seconds']:.0f} s, load {res['load']} on 2 cores.",
        "",
        "| draws | averages | accuracy | sd over averages | bits/dim (bound) |",
        "|---|---|---|---|---|",
    ]
    for r in res["table"]:
        lines.append(f"| {r['draws']} | {r['groups']} | {100 * r['acc']:.2f}% | "
                     f"{100 * r['acc_sd']:.2f} | {r['bpd']:.3f} |")  # fmt: skip
    lines += [
        "",
        f"Rows wrong with all {res['reps'] * res['draws_per_call']} draws: "
        f"{res['wrong_at_all_draws']}. Per row, (true class - best other) over the calls: median "
        f"sd {res['gap_sd_median']:.3f} nats; {res['rows_within_2sd']} rows have a mean within "
        "2 sd of 0 (the rows more draws could still flip).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="runs/mnist_sbgc")
    p.add_argument("--rows", type=int, default=300)
    p.add_argument("--reps", type=int, default=8, help="independent calls (a power of 2)")
    p.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--quick", action="store_true", help="a toy run of the config, 8 rows, 2 calls")
    args = p.parse_args(argv)
    if args.reps < 1:
        raise SystemExit(f"--reps: expected >= 1, got {args.reps}")
    if args.quick:
        from benchmarks.mnist_sbgc_run import quick_dirs

        args.workdir, args.results_dir = quick_dirs("elbo_draws", args.results_dir)
        args.rows, args.reps = 8, 2
    res = measure(args.workdir, args.rows, args.reps)
    write_report("elbo_draws", res, args.results_dir, to_markdown)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
