"""The transfer masking check of a saved adversarial result, from a surrogate's worst inputs.

    python -m benchmarks.transfer_check --model-result DIR/adversarial/l2_abs.json --run runs/abs_base \
        --surrogate DIR2/adversarial/l2_msp.json [--name abs] [--out transfer_abs_l2] [--device ...]

`jaxrej evaluate` runs this check itself when the model and the surrogate are attacked in one run
(`jaxrej.eval.adversarial.transfer_checks`). This script runs the same function when they were
attacked in two runs: the model's result (`<norm>_<name>.json`, with its per-example levels and
the thresholds it was judged with) and the surrogate's (`<norm>_<surrogate>.json` and its
`_worst.npz` beside it), on the rows both attacked. The model's judge is loaded from RUN
(`jaxrej.scorers.load`) with the thresholds recorded in the model's result; how far the run's
own validation thresholds are from them is reported (a retrained run of the same config differs
in the last bits).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np

from benchmarks.report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(path):
    with open(path) as f:
        return json.load(f)


def _at_radii(result: dict, eps: list) -> dict:
    """An evaluate result restricted to the radii `eps` (its eps table and independent levels)."""
    keep = [list(result["eps"]).index(e) for e in eps]
    indep = {k: [v[i] for i in keep] for k, v in result["levels"]["independent"].items()}
    return {**result, "eps": {e: result["eps"][e] for e in eps},
            "levels": {**result["levels"], "independent": indep}}  # fmt: skip


def run(model_result: str, run_dir: str, surrogate: str, *, name: str = "abs") -> dict:
    from jaxrej import scorers
    from jaxrej.data.registry import load_dataset
    from jaxrej.eval import adversarial as adv
    from jaxrej.training.workdir import read_config

    model, sur = _load(model_result), _load(surrogate)
    worst_path = surrogate[: -len(".json")] + "_worst.npz"
    with np.load(worst_path) as z:
        worst = z["x"]
    r, rs = model["result"], sur["result"]
    common = [e for e in r["eps"] if e in rs["eps"]]
    if r["norm"] != rs["norm"] or not common:
        raise SystemExit(
            f"--surrogate: its radii {rs['norm']} {list(rs['eps'])} share none with the model's "
            f"{r['norm']} {list(r['eps'])}"
        )
    r = _at_radii(r, common)  # the check runs at the radii both results have
    worst = worst[[list(rs["eps"]).index(e) for e in common]]
    pos = {int(v): i for i, v in enumerate(rs["rows"])}
    missing = [v for v in r["rows"] if int(v) not in pos]
    if missing:
        raise SystemExit(f"--surrogate: {len(missing)} of the model's rows were not attacked there")
    idx = [pos[int(v)] for v in r["rows"]]
    spec = read_config(run_dir)["data"]["eval_dataset"]
    val, test = load_dataset(spec, "validation"), load_dataset(spec, "test")
    y = test.labels[np.asarray(r["rows"])]
    sc = scorers.load(run_dir, name)
    recorded = {k: np.asarray(v, np.float64) for k, v in model["settings"]["thresholds"].items()}
    refit = sc.fit_thresholds(val.images.astype(np.float32) / 255.0, val.labels).thresholds
    drift = {k: float(np.max(np.abs(np.asarray(refit[k]) - recorded[k]))) for k in recorded}
    judge = dataclasses.replace(sc, thresholds=recorded)
    sur_name = os.path.basename(surrogate)[: -len(".json")].partition("_")[2]
    checks = adv.transfer_checks(judge, r, worst[:, idx], y, surrogate=sur_name)
    return {"model_result": model_result, "surrogate_result": surrogate, "run": run_dir,
            "n": len(y), "threshold_drift": drift,
            "checks": [c.to_json() for c in checks]}  # fmt: skip


def to_markdown(out: dict) -> str:
    drift = ", ".join(f"{k} {v:.1e}" for k, v in out["threshold_drift"].items())
    lines = [f"Device: {out['device']}; written at commit {out['commit']}. Model result "
             f"`{out['model_result']}` (judge: run `{out['run']}` at the thresholds recorded there; "
             f"the run's own validation thresholds differ by at most: {drift} nats), surrogate "
             f"`{out['surrogate_result']}`; {out['n']} rows.", "",
             "| check | passed | rates | intervals (Wilson 95%) | reason |",
             "|---|---|---|---|---|"]  # fmt: skip
    for c in out["checks"]:
        rates = ", ".join(f"{k} {100 * v:.1f}%" for k, v in c["rates"].items())
        ci = ", ".join(
            f"{k} [{100 * a:.1f}, {100 * b:.1f}]" for k, (a, b) in c["intervals"].items()
        )
        lines.append(f"| {c['name']} | {'yes' if c['passed'] else '**no**'} | {rates} | {ci} | "
                     f"{c['reason']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-result", required=True, help="<norm>_<name>.json of the model")
    p.add_argument("--run", required=True, help="the model's run (its judge)")
    p.add_argument("--surrogate", required=True, help="<norm>_<surrogate>.json, _worst.npz beside")
    p.add_argument("--name", default="abs", help="the model's scorer name (jaxrej.scorers.NAMES)")
    p.add_argument("--device", default="", help="the machine and how it was loaded")
    p.add_argument("--out", default="transfer_check")
    p.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    import jax

    out = run(args.model_result, args.run, args.surrogate, name=args.name)
    out |= {"device": args.device or str(jax.devices()),
            "commit": subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip()}  # fmt: skip
    write_report(args.out, out, args.results_dir, to_markdown)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
