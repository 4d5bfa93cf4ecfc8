"""ABS on MNIST: where the accuracy is lost, and which settings move it, on selection rows only.

    python -m benchmarks.abs_selection --runs base=runs/abs_base lat16=runs/abs_lat16 ... \
        [--curve n4922=runs/abs_n4922 n12307=runs/abs_n12307] [--rows validation] \
        [--train-rows 1000] [--out abs_selection]

Each RUN is a `jaxrej train --config configs/mnist_abs.py --workdir RUN [--config.X=V ...]` run
(its config.json names the settings). Selection rows: the 8k MNIST test-set file's 1,000
validation rows and its 5,000 'train' rows, which no ABS run trains on (ABS trains on the 19,690-row
training file; the 2,000 test rows are never read here). Per run: accuracy on the 6,000 rows with
its standard error, on the first 1,000 rows of its own training split (the generalisation gap),
and, for the first run, where its errors sit: each misclassified row's own-class log joint as a
percentile of the correctly classified rows of its class (an error of the rival decoder
reconstructing too well sits high; one of the own decoder failing sits near 0). --curve runs
(fewer training rows) give the accuracy against the number of training rows.
--rows validation scores the 1,000 validation rows only and --train-rows N the first N of a
run's training rows (for runs whose latent search is slow: the conv decoders); --out names the
results files (keep the 6,000-row abs_selection files whole). A run with several members per class
(`--config.model.members=M`) also gets the accuracy of its first k members, k = 1..M.
A run's selection scores are cached in RUN/selection_scores.npz (recomputed when absent or of
other rows).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from benchmarks.report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = "selection_scores.npz"


def _named(items):
    out = {}
    for it in items or []:
        name, _, path = it.partition("=")
        if not path:
            raise SystemExit(f"expected NAME=RUN, got {it!r}")
        out[name] = path
    return out


def selection_rows(cfg: dict, splits=("validation", "train")):
    """(x (6000, 28, 28, 1) in [0, 1], y): the eval file's validation then 'train' rows (or the
    `splits` named)."""
    from jaxrej.data.registry import load_dataset

    spec = cfg["data"]["eval_dataset"]
    parts = [load_dataset(spec, s) for s in splits]
    x = np.concatenate([p.images for p in parts]).astype(np.float32) / 255.0
    return x, np.concatenate([p.labels for p in parts])


def _settings(cfg: dict) -> str:
    m, t = cfg["model"], cfg["training"]
    aug = [
        f"{k[8:]} {t[k]}" for k in ("augment_rotate", "augment_scale", "augment_shift") if t.get(k)
    ]
    return (f"latent {m['latent_dim']}, {m.get('likelihood', 'gaussian')}"
            + (f" sigma {m['sigma']}" if m.get("likelihood", "gaussian") == "gaussian" else "")
            + f", {t['n_iters']} steps" + (f", augment {', '.join(aug)}" if aug else "")
            + (f", conv decoder {tuple(m.get('channels') or (32, 16, 8))}"
               if m.get("decoder") == "conv" else "")
            + (f", {m['members']} members per class" if (m.get("members") or 1) > 1 else ""))  # fmt: skip


def measure(run: str, x, y, *, full: bool, train_rows: int = 1000) -> dict:
    from jaxrej.abs.run import class_scores
    from jaxrej.abs.scorer import load_scorer
    from jaxrej.data.registry import load_dataset
    from jaxrej.training.workdir import read_config, read_summary

    cfg = read_config(run)
    sc, step = load_scorer(run)
    path = os.path.join(run, CACHE)
    cached = dict(np.load(path)) if os.path.isfile(path) else {}
    if cached.get("score", np.zeros(0)).shape[:1] != (len(y),) or (
        full and "log_joint" not in cached
    ):
        r = class_scores(sc, x, batch_size=100, desc=f"select {run}", full=True)
        cached = {k: r[k] for k in ("score", "log_joint", "decoder_score")}
        np.savez(path, **cached)
    s, lj = cached["score"], cached.get("log_joint")
    d = cfg["data"]
    tr = load_dataset(d["dataset"], d.get("train_split", "train"))
    xt = tr.images[:train_rows].astype(np.float32) / (d["n_levels"] - 1)
    st = class_scores(sc, xt, batch_size=100, progress=False)
    ok = np.argmax(s, 1) == y
    acc = float(ok.mean())
    out = {"run": run, "step": step, "settings": _settings(cfg), "n_train": int(len(tr.labels)),
           "accuracy": acc, "se": float(np.sqrt(acc * (1 - acc) / len(y))), "n": int(len(y)),
           "accuracy_val1000": float(ok[:1000].mean()),
           "train_accuracy_1000": float(np.mean(np.argmax(st, 1) == tr.labels[:train_rows])),
           "train_rows": int(train_rows), "_ok": ok, "_score": s,
           "train_time_s": (read_summary(os.path.join(run, "train.json")) or {}).get("train_time_s")}  # fmt: skip
    ds = cached.get("decoder_score")
    if ds is not None and ds.shape[1] > s.shape[1]:
        out["members"] = sub_ensembles(ds, y, s.shape[1])
    if full:
        own = lj[np.arange(len(y)), y]
        wrong = ~ok
        pct = [float(np.mean(own[(y == y[i]) & ok] < own[i])) for i in np.flatnonzero(wrong)]
        out["errors"] = {"n": int(wrong.sum()), "own_percentile": sorted(pct),
                         "share_below_5th": float(np.mean(np.asarray(pct) < 0.05)),
                         "confusions": np.bincount(y[wrong] * 10 + np.argmax(s, 1)[wrong],
                                                   minlength=100).reshape(10, 10).tolist()}  # fmt: skip
    return out


def sub_ensembles(decoder_score: np.ndarray, y: np.ndarray, num_classes: int) -> list[dict]:
    """A run with M members per class (`ABSModel.members`), decoder_score (N, C M): for k = 1..M
    the accuracy of its first k members as the mixture (logsumexp of their bounds - log k, the
    run's own class score at k = M) and as the mean of their bounds (a product of their
    likelihoods), with standard errors and the paired difference to k = 1."""
    n, M = len(y), decoder_score.shape[1] // num_classes
    b = decoder_score.reshape(n, num_classes, M)
    from scipy.special import logsumexp

    rows, ref = [], None
    for k in range(1, M + 1):
        row = {"k": k}
        for name, score in (("mixture", logsumexp(b[..., :k], axis=-1) - np.log(k)),
                            ("mean", b[..., :k].mean(-1))):  # fmt: skip
            ok = (np.argmax(score, 1) == y).astype(float)
            ref = ok if ref is None else ref
            d = ok - ref
            row[name] = {"accuracy": float(ok.mean()), "se": float(ok.std() / np.sqrt(n)),
                         "vs_one": float(d.mean()), "vs_one_se": float(d.std(ddof=1) / np.sqrt(n))}  # fmt: skip
        rows.append(row)
    return rows


def paired(out: dict, y) -> None:
    """Each later run against the first on the same rows (in place): the accuracy difference,
    its paired standard error sd(ok_run - ok_first) / sqrt(n), and the discordant rows; with
    several --runs, the accuracy of their summed class bounds."""
    runs = list(out["runs"].values()) + list(out.get("curve", {}).values())
    ref = runs[0]["_ok"]
    if len(out["runs"]) > 1:  # the --runs' bounds summed: a product-of-likelihoods combination
        total = sum(r["_score"] for r in out["runs"].values())
        out["sum_of_bounds"] = {
            "runs": list(out["runs"]),
            "accuracy": float(np.mean(np.argmax(total, 1) == y)),
        }
    for r in runs:
        r.pop("_score")
        ok = r.pop("_ok")
        if r is runs[0]:
            continue
        d = ok.astype(float) - ref
        r["vs_first"] = {"diff": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d))),
                         "only_this_right": int(np.sum(d > 0)),
                         "only_first_right": int(np.sum(d < 0))}  # fmt: skip


def to_markdown(out: dict) -> str:
    nt = next(iter(out["runs"].values())).get("train_rows", 1000)
    lines = [f"Device: {out['device']}; written at commit {out['commit']}. Selection rows: {out['rows']}.",
             "", "| run | settings | training rows | selection accuracy (n) | its first 1,000 rows | "
             f"own training rows (first {nt:,}) | training time |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in {**out["runs"], **out.get("curve", {})}.items():
        lines.append(f"| {name} | {r['settings']} | {r['n_train']:,} | {100 * r['accuracy']:.2f}% "
                     f"+- {100 * r['se']:.2f} ({r['n']:,}) | {100 * r['accuracy_val1000']:.1f}% | "
                     f"{100 * r['train_accuracy_1000']:.1f}% |"
                     + (f" {r['train_time_s'] / 60:.1f} min |" if r.get("train_time_s") else " |"))  # fmt: skip
    first_name = next(iter(out["runs"]))
    for name, r in {**out["runs"], **out.get("curve", {})}.items():
        v = r.get("vs_first")
        if v:
            lines += ["", f"`{name}` against `{first_name}` on the same rows: "
                      f"{100 * v['diff']:+.2f} points (paired SE {100 * v['se']:.2f}); "
                      f"{v['only_this_right']} rows only `{name}` gets right, "
                      f"{v['only_first_right']} only `{first_name}`."]  # fmt: skip
    for name, r in out["runs"].items():
        if r.get("members"):
            lines += ["", f"`{name}`'s first k members per class (`ABSModel.members`; k = 1 is one "
                      "plain ABS model), on the same rows: the mixture is the run's class score "
                      "(logsumexp of the members' bounds - log k), the mean of bounds a product of "
                      "their likelihoods; difference to k = 1 with its paired SE.", "",
                      "| k | mixture | vs k = 1 | mean of bounds | vs k = 1 |", "|---|---|---|---|---|"]  # fmt: skip
            for m in r["members"]:
                a, b = m["mixture"], m["mean"]
                lines.append(f"| {m['k']} | {100 * a['accuracy']:.2f}% +- {100 * a['se']:.2f} | "
                             f"{100 * a['vs_one']:+.2f} ({100 * a['vs_one_se']:.2f}) | "
                             f"{100 * b['accuracy']:.2f}% +- {100 * b['se']:.2f} | "
                             f"{100 * b['vs_one']:+.2f} ({100 * b['vs_one_se']:.2f}) |")  # fmt: skip
    sb = out.get("sum_of_bounds")
    if sb:
        lines += ["", f"The summed class bounds of {', '.join(f'`{n}`' for n in sb['runs'])} (a "
                  f"product of their likelihoods): {100 * sb['accuracy']:.2f}% on the same rows."]  # fmt: skip
    fit = out.get("learning_curve")
    if fit:
        n1 = f"{fit['n_for_1pct']:,.0f}" if fit["n_for_1pct"] else "never"
        lines += ["", f"Learning curve (the first run and the --curve runs): error ~ n^-{fit['exponent']:.2f}; "
                  f"1% error (the 99% target) at ~{n1} training rows by this fit (an extrapolation)."]  # fmt: skip
    first = next(iter(out["runs"].values()))
    e = first.get("errors")
    if e:
        pct = np.asarray(e["own_percentile"])
        lines += ["", f"Where `{first['run']}` loses ({e['n']} errors on the selection rows): the "
                  "true class's log joint of an error, as a percentile of the correctly classified "
                  f"rows of that class: median {np.nanmedian(pct):.3f}; {100 * e['share_below_5th']:.0f}% "
                  "of the errors sit below the 5th percentile (the own decoder fails to redraw an "
                  "atypical digit; a rival redrawing it too well would leave the own log joint "
                  "typical)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def learning_curve(out: dict) -> dict | None:
    """The --curve runs and the first run, by training rows: error rate e = a n^-b fitted in log
    space (>= 3 points), and the n at which it would reach 1%."""
    pts = [out["runs"][next(iter(out["runs"]))], *out.get("curve", {}).values()]
    if len(pts) < 3:
        return None
    n = np.array([r["n_train"] for r in pts], float)
    err = np.array([1 - r["accuracy"] for r in pts])
    slope, icpt = np.polyfit(np.log(n), np.log(err), 1)
    return {
        "n": n.tolist(),
        "error": err.tolist(),
        "exponent": float(-slope),
        "n_for_1pct": float(np.exp((np.log(0.01) - icpt) / slope)) if slope < 0 else None,
    }


def plot(out: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fit = out.get("learning_curve")
    fig, ax = plt.subplots(figsize=(5, 3.4))
    pts = [out["runs"][next(iter(out["runs"]))], *out.get("curve", {}).values()]
    n = np.array([r["n_train"] for r in pts])
    acc = np.array([100 * r["accuracy"] for r in pts])
    se = np.array([100 * r["se"] for r in pts])
    ax.errorbar(n, acc, yerr=1.96 * se, fmt="o", capsize=3, label="selection rows (95% interval)")
    if fit and fit["n_for_1pct"]:
        grid = np.geomspace(n.min(), max(fit["n_for_1pct"], n.max()), 50)
        a = np.exp(np.log(fit["error"][0]) + fit["exponent"] * np.log(fit["n"][0]))
        ax.plot(grid, 100 * (1 - a * grid ** -fit["exponent"]), "--", color="gray",
                label=f"error ~ n^-{fit['exponent']:.2f}")  # fmt: skip
    ax.axhline(99, color="red", lw=0.8, label="target 99%")
    ax.set_xscale("log")
    ax.set_xlabel("training rows")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("ABS (MLP decoders, latent 8) on MNIST")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", default=[], metavar="NAME=RUN")
    p.add_argument("--curve", nargs="*", default=[], metavar="NAME=RUN",
                   help="runs on fewer training rows (the learning curve)")  # fmt: skip
    p.add_argument("--device", default="", help="how the machine was loaded")
    p.add_argument("--out", default="abs_selection")
    p.add_argument(
        "--rows",
        choices=("all", "validation"),
        default="all",
        help="selection rows: validation (1,000) and 'train' (5,000), or validation only",
    )
    p.add_argument("--train-rows", type=int, default=1000,
                   help="a run's own training rows scored (its first N)")  # fmt: skip
    p.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--quick", action="store_true",
                   help="a 20-step digits ABS run (2 members per class) measured on its own "
                   "rows, into a temp folder")  # fmt: skip
    args = p.parse_args(argv)
    import subprocess

    import jax

    from jaxrej.training.workdir import read_config

    if args.quick:
        import tempfile

        from jaxrej.cli import main as jaxrej

        tmp = tempfile.mkdtemp(prefix="abs_selection_quick_")
        wd = os.path.join(tmp, "run")
        config = os.path.join(os.path.dirname(HERE), "configs", "digits_abs.py")
        assert jaxrej(["train", "--config", config, "--workdir", wd, "--no-progress",
                       "--config.training.n_iters=20", "--config.model.members=2"]) == 0  # fmt: skip
        args.runs, args.results_dir = [f"toy={wd}"], tmp
        from jaxrej.data.registry import load_dataset

        ds = load_dataset("digits", "test")  # a toy: the digits run has no other held-out rows
        x, y, rows = ds.images.astype(np.float32) / 16.0, ds.labels, "digits test (toy)"
    runs, curve = _named(args.runs), _named(args.curve)
    if not runs:
        raise SystemExit("--runs: name at least one run")
    if not args.quick:
        only_val = args.rows == "validation"
        splits = ("validation",) if only_val else ("validation", "train")
        x, y = selection_rows(read_config(next(iter(runs.values()))), splits)
        rows = ("the 8k file's validation rows (1,000)" if only_val
                else "the 8k file's validation (1,000) and 'train' (5,000) rows")  # fmt: skip
    out = {"device": args.device or str(jax.devices()), "rows": rows,
           "commit": subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip(),
           "runs": {n: measure(r, x, y, full=i == 0, train_rows=args.train_rows)
                    for i, (n, r) in enumerate(runs.items())},
           "curve": {n: measure(r, x, y, full=False, train_rows=args.train_rows)
                     for n, r in curve.items()}}  # fmt: skip
    paired(out, y)
    out["learning_curve"] = learning_curve(out)
    write_report(args.out, out, args.results_dir, to_markdown, plot=plot if curve else None)


if __name__ == "__main__":
    main(sys.argv[1:])
