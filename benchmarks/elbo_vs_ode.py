"""Two class scorers on one score model: the denoising bound (jaxrej.elbo) against the ODE.

Run:  python -m benchmarks.elbo_vs_ode [--workdir runs/digits] [--dataset SPEC] [--n 120]
      [--times 8 32 128] [--timing-n 20] [--repeats 3] [--divergence exact] [--quick]
      [--out elbo_vs_ode]

Workload: a trained conditional score model (a `jaxrej train` workdir; the digits model by
default, trained first if missing), the first n / C test images of each class of `--dataset` (the
run's own dataset by default; any dataset string), dequantized with a fixed key, and two OOD sets
made from them (`jaxrej.data.ood.transformed`: the same images inverted, uniform noise).

Scorers, each giving (B, C) class scores and log p(x) = logsumexp_y - log C:
- ODE: `jaxrej.class_log_likelihoods(..., divergence="exact")` (`--divergence`), every other
  option at the library default (FlowSolve(), DEFAULT_SCREEN): log p_eps(x | y) in nats.
- ELBO(K): `jaxrej.elbo.class_elbos(..., n_times=K)` (stratified importance times, K (t, z) draws
  per image shared by its classes): a lower bound on log p(x | y), so its bits/dim is an upper
  bound (of the SDE model's).
Accuracy, bits/dim and OOD AUROC (positive = in-distribution, score log p(x)) on the whole subset;
wall time on the first `--timing-n` images, every scorer compiled first and the scorers timed in
turn for `--repeats` rounds (medians, and the ODE's time over each one's: the speed-up).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxrej
from benchmarks.report import write_report
from benchmarks.trained import WORKDIR, ensure_trained
from jaxrej.elbo import class_elbos


def ode_name(divergence: str) -> str:
    return f"ODE: class_log_likelihoods(divergence={divergence!r})"


def device_name() -> str:
    import platform

    d = jax.devices()[0]
    cpu = f"{os.cpu_count()} cores" if d.platform == "cpu" else ""
    return f"{d.platform.upper()} {d.device_kind} {cpu}".strip() + f" ({platform.machine()})"


def load_workload(workdir, dataset, split, n, data_dir=None):
    """(score_fn, params, sde, config, step, sets {name: x (N, *event)}, labels, n_levels, C,
    dataset string)."""
    from jaxrej.data.ood import transformed
    from jaxrej.data.preprocessing import dequantize
    from jaxrej.data.registry import load_dataset
    from jaxrej.training import load_trained

    score_fn, params, sde, run, step, _ = load_trained(workdir)
    spec = dataset or run.data.dataset
    data = load_dataset(spec, split, data_dir=data_dir)
    c = run.data.num_classes
    per = max(1, n // c)
    idx = np.sort(np.concatenate([np.flatnonzero(data.labels == k)[:per] for k in range(c)]))
    images, labels = np.asarray(data.images)[idx], np.asarray(data.labels)[idx]
    levels = int(data.n_levels)
    sets = {"test": images, **transformed(images, levels, seed=0)}
    key = jax.random.key(0)
    sets = {k: dequantize(jnp.asarray(v), levels, key=jax.random.fold_in(key, i))
            for i, (k, v) in enumerate(sets.items())}  # fmt: skip
    return score_fn, params, sde, run.config, step, sets, labels, levels, c, spec


def make_scorers(score_fn, params, sde, c, times, divergence="exact"):
    """{name: f(x, key) -> (B, C) class scores}; the ODE's first."""
    scorers = {
        ode_name(divergence): lambda x, key: jaxrej.class_log_likelihoods(
            score_fn, params, sde, x, num_classes=c, key=key, divergence=divergence
        )
    }
    for k in times:
        scorers[f"ELBO: class_elbos(n_times={k})"] = lambda x, key, k=k: class_elbos(
            score_fn, params, sde, x, num_classes=c, key=key, n_times=k
        )
    return scorers


def score_all(fn, x, batch, key):
    """fn over x in batches of `batch` (the last padded with its last row): (N, C) numpy."""
    out = []
    for i, s in enumerate(range(0, x.shape[0], batch)):
        part = x[s : s + batch]
        keep = part.shape[0]
        if keep < batch:
            part = jnp.concatenate([part, jnp.repeat(part[-1:], batch - keep, axis=0)])
        out.append(np.asarray(fn(part, jax.random.fold_in(key, i)), np.float64)[:keep])
    return np.concatenate(out)


def margin(scores, labels):
    """The true class's score minus the best other class's: (N, C) -> (N,) (None -> None)."""
    if scores is None:
        return None
    true = scores[np.arange(len(labels)), labels]
    other = np.where(np.eye(scores.shape[1], dtype=bool)[labels], -np.inf, scores).max(1)
    return true - other


def mc_std(a, b):
    """RMS over images of the Monte-Carlo std of one estimate, from two independent ones; for
    (N, C) class scores, of log p(x). None without a second estimate."""
    if b is None:
        return None
    if a.ndim == 2:
        a, b = (np.asarray(jaxrej.marginal_log_likelihood(jnp.asarray(v))) for v in (a, b))
    return float(np.sqrt(np.mean(np.square(a - b) / 2)))


def interleaved(fns: dict, x, key, repeats: int):
    """{name: per-round wall seconds}: each fn compiled (run once) first, then timed in turn."""
    for fn in fns.values():
        jax.block_until_ready(fn(x, key))
    wall = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(x, key))
            wall[k].append(time.perf_counter() - t0)
    return wall


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=WORKDIR)
    ap.add_argument("--dataset", default=None, help="dataset string (default: the run's own)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=120, help="images: the first n / C of each class")
    ap.add_argument("--times", type=int, nargs="+", default=[8, 32, 128], help="ELBO n_times")
    ap.add_argument("--batch", type=int, default=40, help="images per scorer call")
    ap.add_argument("--timing-n", type=int, default=20, help="images in the timed batch")
    ap.add_argument("--divergence", default="exact", choices=["exact", "rademacher", "gaussian"],
                    help="the ODE's divergence (exact costs one JVP per pixel: use rademacher "
                    "beyond small images)")  # fmt: skip
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="--n 30 --times 8 32 --repeats 1")
    ap.add_argument("--results-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--out", default="elbo_vs_ode", help="results file stem")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.times, args.repeats, args.timing_n = 30, [8, 32], 1, 10
    if args.workdir == WORKDIR:
        ensure_trained(args.workdir)
    load0, t_start = os.getloadavg()[0], time.perf_counter()
    score_fn, params, sde, config, step, sets, labels, levels, c, spec = load_workload(
        args.workdir, args.dataset, args.split, args.n, args.data_dir
    )
    event = tuple(sets["test"].shape[1:])
    print(f"workload: {len(labels)} {spec} {args.split} images x {c} classes + OOD "
          f"{', '.join(k for k in sets if k != 'test')}; {device_name()}")  # fmt: skip
    scorers = make_scorers(score_fn, params, sde, c, args.times, args.divergence)
    ODE = ode_name(args.divergence)
    key = jax.random.key(1)

    xt = sets["test"][: args.timing_n]
    wall = interleaved(scorers, xt, key, args.repeats)
    ode_wall = wall[ODE]

    scores, again = {}, {}
    for name, fn in scorers.items():
        t0 = time.perf_counter()
        scores[name] = {k: score_all(fn, x, args.batch, key) for k, x in sets.items()}
        if name != ODE:  # the Monte-Carlo spread: the test set again with other draws
            again[name] = score_all(fn, sets["test"], args.batch, jax.random.fold_in(key, 10**6))
        print(f"{name}: scored {sum(len(x) for x in sets.values())} images in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip

    ode_pred = scores[ODE]["test"].argmax(1)
    rows = []
    for name, s in scores.items():
        logpx = {
            k: np.asarray(jaxrej.marginal_log_likelihood(jnp.asarray(v))) for k, v in s.items()
        }
        pred = s["test"].argmax(1)
        ood = {k: jaxrej.metrics.ood_detection(logpx["test"], logpx[k])["auroc"]
               for k in sets if k != "test"}  # fmt: skip
        bpd = jaxrej.bits_per_dim(jnp.asarray(logpx["test"]), event, n_levels=levels)
        paired = [o / w for o, w in zip(ode_wall, wall[name], strict=True)]
        rows.append(dict(
            method=name, n_times=None if name == ODE else int(name.split("=")[1].rstrip(")")),
            accuracy=float(np.mean(pred == labels)), agree_with_ode=float(np.mean(pred == ode_pred)),
            bits_per_dim=float(np.mean(np.asarray(bpd))), auroc=ood,
            ms_per_image=1e3 * float(np.median(wall[name])) / xt.shape[0],
            speedup=float(np.median(ode_wall) / np.median(wall[name])),
            speedup_range=[min(paired), max(paired)],
            nonfinite=int(sum((~np.isfinite(v)).sum() for v in s.values())),
            mc_std_logpx=mc_std(s["test"], again.get(name)),
            mc_std_margin=mc_std(margin(s["test"], labels), margin(again.get(name), labels)),
        ))  # fmt: skip
        print(rows[-1])
    out = dict(
        device=device_name(), load_average_start=load0, load_average_end=os.getloadavg()[0],
        seconds_total=time.perf_counter() - t_start,
        workload=dict(workdir=args.workdir, dataset=spec, split=args.split, images=len(labels),
                      per_class=int(args.n // c), classes=c, event_shape=list(event),
                      n_levels=levels, ood_sets=[k for k in sets if k != "test"],
                      timing_images=int(xt.shape[0]), repeats=args.repeats, batch=args.batch,
                      checkpoint_step=int(step), ode_divergence=args.divergence,
                      sde=type(sde).__name__),
        rows=rows,
    )  # fmt: skip
    write_report(args.out, out, args.results_dir, render)


def fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def render(out) -> str:
    w = out["workload"]
    oods = w["ood_sets"]
    lines = [
        f"Device: {out['device']}; load average {out['load_average_start']:.1f} at start, "
        f"{out['load_average_end']:.1f} at end (the machine was shared); whole run "
        f"{out['seconds_total'] / 60:.1f} min. Workload: `{w['workdir']}` ({w['sde']}), "
        f"{w['images']} {w['dataset']} {w['split']} images (the first {w['per_class']} of each "
        f"of {w['classes']} classes), OOD: the same images {' / '.join(oods)}; timing on the first "
        f"{w['timing_images']} images, {w['repeats']} interleaved rounds.",
        "",
        "| scorer | accuracy | argmax = ODE's | bits/dim | "
        + " | ".join(f"AUROC {k}" for k in oods)
        + " | MC std, log p(x) (nats) | MC std, true-class margin (nats) | ms / image | "
        "speed-up vs ODE | paired speed-ups |",
        "|---|---|---|---|" + "---|" * len(oods) + "---|---|---|---|---|",
    ]
    for r in out["rows"]:
        lines.append(
            f"| {r['method']} | {r['accuracy']:.3f} | {r['agree_with_ode']:.3f} | "
            f"{r['bits_per_dim']:.3f} | "
            + " | ".join(f"{r['auroc'][k]:.3f}" for k in oods)
            + f" | {fmt(r.get('mc_std_logpx'))} | {fmt(r.get('mc_std_margin'))}"
            f" | {r['ms_per_image']:.1f} | {r['speedup']:.1f}x | "
            f"{r['speedup_range'][0]:.1f}-{r['speedup_range'][1]:.1f}x |"
        )
    lines += [
        "",
        "AUROC: positive = in-distribution, score log p(x) (the ELBO rows: the class-marginal "
        "bound). The ELBO rows' bits/dim are upper bounds (of the SDE model's), the ODE's an "
        "estimate of the ODE model's. MC std: the spread of one ELBO estimate over its (t, z) "
        "draws (RMS over the test images, from a second scoring with other draws); the margin "
        "(true class minus best other) is what the decision sees, its draws shared by the classes.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
