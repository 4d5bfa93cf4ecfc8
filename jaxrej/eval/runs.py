"""Scorers found in a workdir, for `jaxrej evaluate`: a trained score model (a folder with
config.json and checkpoints/, `jaxrej train`) and reject heads (a folder with a saved heads
model, `jaxrej heads`), in the workdir itself or one level below it.

    runs = find_runs("runs/demo")        # {"sbgc": [dir, ...], "heads": [dir, ...]}
    sc = sbgc_scorer(runs["sbgc"][0], batch_size=36)
    scs = heads_scorers(runs["heads"][0], batch_size=256)   # {name: Scorer}
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from jaxrej.eval.pixel_scorers import HEAD_SCORERS, HEADS_FILE, SBGCScorer, head_scorers, load_heads
from jaxrej.eval.protocol import Scorer


def _is_sbgc(d: str) -> bool:
    return os.path.isfile(os.path.join(d, "config.json")) and os.path.isdir(
        os.path.join(d, "checkpoints")
    )


def _is_heads(d: str) -> bool:
    return os.path.isfile(os.path.join(d, HEADS_FILE))


def find_runs(workdir: str) -> dict[str, list[str]]:
    """{'sbgc': [...], 'heads': [...]}: `workdir` and its immediate sub-folders that hold a
    trained score model or saved heads. ValueError when there is none."""
    if not os.path.isdir(workdir):
        raise ValueError(f"--workdir: no such directory {workdir!r}")
    dirs = [workdir] + sorted(
        os.path.join(workdir, d)
        for d in os.listdir(workdir)
        if os.path.isdir(os.path.join(workdir, d)) and not d.startswith(".")
    )
    runs = {"sbgc": [d for d in dirs if _is_sbgc(d)], "heads": [d for d in dirs if _is_heads(d)]}
    if not runs["sbgc"] and not runs["heads"]:
        raise ValueError(
            f"--workdir: {workdir!r} holds no trained score model (config.json + checkpoints/, "
            f"`jaxrej train`) and no saved heads ({HEADS_FILE}, `jaxrej heads`), neither in it "
            "nor one level below"
        )
    return runs


def sbgc_scorer(run_dir: str, *, batch_size: int, solve=None, name: str = "sbgc") -> Scorer:
    """The run's class log-likelihoods of pixel images (`eval.pixel_scorers.SBGCScorer`), jitted
    for one batch shape, with the run's eval settings (divergence, n_probes, rtol, atol, eps,
    screen) unless `solve` (a FlowSolve) is given; probes from key(seed + 1)."""
    from jaxrej.flow import FlowSolve
    from jaxrej.training.workdir import load_trained

    tm = load_trained(run_dir)
    e, d = tm.config["eval"], tm.config["data"]
    if solve is None:
        solve = FlowSolve(divergence=e["divergence"], n_probes=e["n_probes"], rtol=e["rtol"],
                          atol=e["atol"], eps=e["eps"])  # fmt: skip
    options = (("solve", solve),) + ((("screen", None),) if e.get("screen") == "none" else ())
    scorer = SBGCScorer(params=tm.params, key=jax.random.key(tm.config.get("seed", 0) + 1),
                        score_fn=tm.score_fn, sde=tm.sde, num_classes=int(d["num_classes"]),
                        n_levels=int(d["n_levels"]), options=options)  # fmt: skip
    fn = jax.jit(lambda x: scorer(x))
    settings = json.dumps({"run": os.path.abspath(run_dir), "step": tm.step, "options": repr(options),
                           "batch_size": batch_size})  # fmt: skip
    return Scorer(name, lambda x: np.asarray(fn(x)), batch_size, settings)


def heads_scorers(run_dir: str, *, batch_size: int) -> dict[str, Scorer]:
    """{name: Scorer} for every head of HEAD_SCORERS saved in run_dir (`save_heads`), jitted."""
    heads = load_heads(run_dir)
    stamp = os.path.getmtime(os.path.join(run_dir, HEADS_FILE))
    out = {}
    for name, sc in head_scorers(heads).items():
        fn = jax.jit(sc.__call__)
        settings = json.dumps({"run": os.path.abspath(run_dir), "saved": stamp, "kind": name})
        out[name] = Scorer(name, lambda x, fn=fn: np.asarray(fn(x)), batch_size, settings)
    assert set(out) == set(HEAD_SCORERS)
    return out


def _run_data(found: dict[str, list[str]]) -> tuple[dict, list[str]]:
    """The runs' data settings {'dataset', 'val_fraction', 'seed', 'ood'} (heads run first),
    and notes; ValueError when the runs disagree on the dataset."""
    from jaxrej.training.workdir import read_config

    notes: list[str] = []
    cands = []
    for d in found["heads"][:1]:
        with open(os.path.join(d, "heads.json")) as f:
            c = json.load(f)["config"]
        cands.append(("heads", d, {"dataset": c["data"]["dataset"],
                                   "val_fraction": c["data"]["val_fraction"], "seed": c["seed"],
                                   "ood": tuple(c.get("ood", {}).get("datasets", ()))}))  # fmt: skip
    for d in found["sbgc"][:1]:
        c = read_config(d)
        vf = c["data"].get("val_fraction")
        cands.append(("sbgc", d, {"dataset": c["data"]["dataset"], "val_fraction": vf,
                                  "seed": c.get("seed", 0), "ood": ()}))  # fmt: skip
    first = cands[0][2]
    for kind, d, s in cands[1:]:
        if s["dataset"] != first["dataset"]:
            raise ValueError(f"--workdir: the runs use different datasets: {first['dataset']!r} "
                             f"and {s['dataset']!r} ({d!r})")  # fmt: skip
        if kind == "sbgc" and (s["val_fraction"], s["seed"]) != (
            first["val_fraction"],
            first["seed"],
        ):
            from jaxrej.data.registry import is_local

            if not is_local(s["dataset"]):
                notes.append(
                    f"the score model ({d!r}) was not trained with the heads' validation hold-out "
                    f"(its data.val_fraction={s['val_fraction']}, seed={s['seed']}): it may have "
                    "seen the validation rows its thresholds come from"
                )
    if first["val_fraction"] is None:
        first = {**first, "val_fraction": 0.15}
        notes.append("no run names data.val_fraction: validation = 15% of each training class")
    return first, notes


def eval_data(found, *, test: str | None, ood: list[str] | None, limit: int = 0):
    """(EvalData, sources, notes) of the runs' dataset: validation rows of the heads' rule
    (`eval.heads.load_heads_data`), the test split (or `test`), and OOD sets from `ood`, else the
    runs' configured sets, else `data.ood.synthetic_ood_sets` of the test images (seed 1000)."""
    from jaxrej.data import ood as ood_sets
    from jaxrej.eval.heads import load_heads_data
    from jaxrej.eval.protocol import EvalData

    s, notes = _run_data(found)
    named = tuple(ood) if ood else s["ood"]
    hd = load_heads_data(s["dataset"], ood=named, val_fraction=s["val_fraction"], seed=s["seed"],
                         test=test)  # fmt: skip
    xt, yt = hd.test
    if limit:
        xt, yt = xt[:limit], yt[:limit]
    sources = dict(hd.sources)
    if named:
        sets = dict(hd.ood)
    else:
        sets = ood_sets.synthetic_ood_sets(xt, seed=1000)
        sources = {k: v for k, v in sources.items() if not k.startswith("ood/")}
        sources |= {f"ood/{k}": "jaxrej.data.ood.synthetic_ood_sets(test, seed=1000)" for k in sets}
        notes.append("no OOD dataset named (--ood [name=]SPEC): the OOD sets are synthetic "
                     f"({', '.join(sets)})")  # fmt: skip
    sources.pop("fit", None)
    return EvalData(val=hd.val, test=(xt, yt), ood=sets), sources, notes
