"""ABS and the plain classifier under attack on MNIST test rows (`jaxrej evaluate`'s tables), and
what ABS's fooled inputs are to ABS.

    python -m benchmarks.abs_adversarial --evaluate DIR [DIR ...] --run runs/abs_base [--device ...]

DIR: a `jaxrej evaluate` output folder (its adversarial/<norm>_<scorer>.json results and the
per-eps worst inputs <norm>_abs_worst.npz). RUN: the ABS run it evaluated (`jaxrej train --config
configs/mnist_abs.py`). Per norm, eps and attacked scorer (`jaxrej evaluate`'s; the worst case per
example over the suite and every smaller radius, judged by the clean table's scorer at the p1
thresholds): accuracy under attack, adversarial rejection and fooled-and-accepted with Wilson
95% intervals, n, and the masking checks. Then ABS's own view of its worst input per example and
eps (the independent run at that eps): for each input it is fooled by and accepts, the predicted
class's bound as a percentile of that class's bounds on the 1,000 validation rows (a typical
digit of that class sits near 50; the p1 threshold at 1), so "fooled and accepted" can be read as
"redrawn as a typical digit of another class" or "barely above the threshold". The figure: test
digits, their worst inputs at the largest radius of each norm, and ABS's reconstruction of each
by the class it predicts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from benchmarks.report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))
RULE = "p1"


def _rates(row: dict) -> dict:
    return {k: {"rate": row[k]["rate"], "k": row[k]["k"], "ci": row[k]["ci"]}
            for k in ("accuracy", "rejected", "fooled_accepted")}  # fmt: skip


def tables(folders) -> tuple[dict, dict]:
    """({norm: {scorer: {eps: rates + n}}}, {norm: {scorer: checks}}) of evaluate folders' per-
    scorer results (adversarial/<norm>_<scorer>.json, each written as its scorer finishes)."""
    table, checks = {}, {}
    for folder in folders:
        adv = os.path.join(folder, "adversarial")
        for fname in sorted(os.listdir(adv)) if os.path.isdir(adv) else ():
            if not fname.endswith(".json"):
                continue
            norm, _, name = fname[:-5].partition("_")
            with open(os.path.join(adv, fname)) as f:
                r = json.load(f)["result"]
            rows = {"0": {"n": r["n"], **_rates(r["clean"][RULE])}}
            rows |= {e: {"n": v[RULE]["n"], **_rates(v[RULE])} for e, v in r["eps"].items()}
            table.setdefault(norm, {})[name] = rows
            checks.setdefault(norm, {})[name] = [
                {"name": c["name"], "passed": c["passed"], "reason": c["reason"]}
                for c in r.get("checks", [])
            ]
    return table, checks


def _scores(scorer, x, batch=50):
    import jax

    fn = jax.jit(lambda sc, xb: sc.result(xb))
    out = [fn(scorer, x[i : i + batch]) for i in range(0, len(x), batch)]
    return (np.concatenate([np.asarray(o.score) for o in out]),
            np.concatenate([np.asarray(o.z) for o in out]))  # fmt: skip


def fooled_inputs(folders, run: str) -> tuple[dict, dict]:
    """ABS's bounds at its worst inputs (module doc): ({norm: {eps: summary}}, figure arrays)."""
    import jax.numpy as jnp

    from jaxrej.abs.latent import reconstructions
    from jaxrej.abs.scorer import load_scorer
    from jaxrej.data.registry import load_dataset
    from jaxrej.training.workdir import read_config

    scorer, _ = load_scorer(run)
    spec = read_config(run)["data"]["eval_dataset"]
    val, test = load_dataset(spec, "validation"), load_dataset(spec, "test")
    s_val, _ = _scores(scorer, val.images.astype(np.float32) / 255.0)
    xt, yt = test.images.astype(np.float32) / 255.0, test.labels
    out, fig = {}, {}
    for folder in folders:
        for norm in ("linf", "l2"):
            path = os.path.join(folder, "adversarial", f"{norm}_abs.json")
            worst = os.path.join(folder, "adversarial", f"{norm}_abs_worst.npz")
            if not (os.path.isfile(path) and os.path.isfile(worst)):
                continue
            with open(path) as f:
                r = json.load(f)["result"]
            with np.load(worst) as z:
                xw = z["x"]
            rows = np.asarray(r["rows"])
            levels = np.asarray(r["levels"]["independent"][RULE])
            x0, y = xt[rows], yt[rows]
            flat = x0.reshape(len(rows), -1)
            out[norm] = {}
            for i, e in enumerate(r["eps"]):
                s, z = _scores(scorer, xw[i])
                pred = s.argmax(1)
                fooled = levels[i] == 3
                pct = np.array([100.0 * np.mean(s_val[val.labels == c, c] <= s[j, c])
                                for j, c in enumerate(pred)])  # fmt: skip
                d = xw[i].reshape(len(rows), -1) - flat
                dist = np.abs(d).max(1) if norm == "linf" else np.sqrt((d**2).sum(1))
                q = np.percentile(pct[fooled], [25, 50, 75]) if fooled.any() else [np.nan] * 3
                out[norm][e] = {
                    "n": int(len(rows)),
                    "fooled_accepted": int(fooled.sum()),
                    "percentile_quartiles": [float(v) for v in q],
                    "typical": int((pct[fooled] >= 10).sum()),
                    "distance_median": float(np.median(dist[fooled])) if fooled.any() else None,
                }
                if i == len(r["eps"]) - 1:  # the figure: the largest radius
                    show = np.flatnonzero(fooled)[:6]
                    if show.size:
                        rec = reconstructions(scorer.model, scorer.params, jnp.asarray(z[show]))
                        rec = np.asarray(rec)[np.arange(show.size), pred[show]]
                        fig[f"{norm} {e}"] = {"x": x0[show], "adv": xw[i][show], "rec": rec,
                                              "y": y[show], "pred": pred[show],
                                              "pct": pct[show]}  # fmt: skip
    return out, fig


def to_markdown(out: dict) -> str:
    lines = [f"Device: {out['device']}; written at commit {out['commit']}. Evaluation folders: "
             + ", ".join(f"`{f}`" for f in out["evaluate"]) + f"; ABS run `{out['run']}`.", "",
             "Worst case per example over the attack suite and every smaller radius, judged by the "
             f"clean table's scorer at the {RULE} thresholds (eps 0: the clean rows); rates in % "
             "with Wilson 95% intervals.", ""]  # fmt: skip

    def cell(v):
        return f"{100 * v['rate']:.1f} [{100 * v['ci'][0]:.1f}, {100 * v['ci'][1]:.1f}]"

    for norm, by_scorer in out["table"].items():
        lines += [f"### {'L-inf' if norm == 'linf' else 'L2'}", "",
                  "| scorer | eps | n | accuracy | rejected | fooled + accepted |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for name, rows in by_scorer.items():
            for e, v in rows.items():
                lines.append(f"| {name} | {e} | {v['n']} | {cell(v['accuracy'])} | "
                             f"{cell(v['rejected'])} | {cell(v['fooled_accepted'])} |")  # fmt: skip
        lines.append("")
        for name, cs in out["checks"][norm].items():
            failed = [c for c in cs if not c["passed"]]
            lines.append(f"- {name} masking checks: " + (
                f"all {len(cs)} pass ({', '.join(c['name'] for c in cs)})" if not failed else
                "**FAIL** " + "; ".join(f"{c['name']}: {c['reason']}" for c in failed)))  # fmt: skip
        lines.append("")
    if out["fooled"]:
        lines += ["### What ABS's fooled inputs are to ABS", "",
                  "Per eps, the inputs of the independent run at that eps that ABS classifies "
                  "wrong and accepts: the predicted class's bound as a percentile of that class's "
                  "bounds on the validation rows (50: a typical digit of that class; p1 accepts "
                  "from 1), and the distance moved.", "",
                  "| norm | eps | fooled + accepted | percentile of the predicted class's bound "
                  "(quartiles) | at or above the 10th | median distance |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for norm, by_eps in out["fooled"].items():
            for e, v in by_eps.items():
                q = v["percentile_quartiles"]
                qs = "–" if q[1] != q[1] else f"{q[0]:.0f} / {q[1]:.0f} / {q[2]:.0f}"
                dist = "–" if v["distance_median"] is None else f"{v['distance_median']:.2f}"
                lines.append(f"| {norm} | {e} | {v['fooled_accepted']} of {v['n']} | {qs} | "
                             f"{v['typical']} | {dist} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(fig: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxrej.io import save_png

    blocks = list(fig.items())
    if not blocks:
        return
    cols = max(len(v["y"]) for _, v in blocks)
    f, ax = plt.subplots(3 * len(blocks), cols, figsize=(1.5 * cols, 1.6 * 3 * len(blocks)),
                         squeeze=False)  # fmt: skip
    for b, (title, v) in enumerate(blocks):
        for j in range(cols):
            for k, (key, label) in enumerate((("x", "test digit"), ("adv", title),
                                              ("rec", "ABS redraws"))):  # fmt: skip
                a = ax[3 * b + k, j]
                a.axis("off")
                if j >= len(v["y"]):
                    continue
                a.imshow(np.asarray(v[key][j]).reshape(28, 28), cmap="gray", vmin=0, vmax=1)
                if k == 0:
                    a.set_title(f"label {v['y'][j]}", fontsize=8)
                elif k == 1:
                    a.set_title(f"{label}", fontsize=7)
                else:
                    a.set_title(f"as {v['pred'][j]} (pct {v['pct'][j]:.0f})", fontsize=7)
    f.suptitle("ABS's fooled-and-accepted inputs at the largest radius, and its redrawing")
    f.tight_layout()
    save_png(f, path)
    plt.close(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--evaluate", nargs="+", required=True, metavar="DIR",
                   help="jaxrej evaluate output folders (one per norm, or one for both)")  # fmt: skip
    p.add_argument("--run", required=True, help="the ABS run the folders evaluated")
    p.add_argument("--device", default="", help="the machine and how it was loaded")
    p.add_argument("--out", default="abs_adversarial")
    p.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    import jax

    table, checks = tables(args.evaluate)
    if not table:
        raise SystemExit("--evaluate: no adversarial tables in these folders")
    fooled, fig = fooled_inputs(args.evaluate, args.run)
    out = {"device": args.device or str(jax.devices()), "run": args.run,
           "evaluate": list(args.evaluate),
           "commit": subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip(),
           "table": table, "checks": checks, "fooled": fooled}  # fmt: skip
    write_report(args.out, out, args.results_dir, to_markdown, plot=lambda _, p: plot(fig, p))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
