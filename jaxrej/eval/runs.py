"""Scorers found in a workdir, for `jaxrej evaluate`: a trained score model (a folder with
config.json and checkpoints/, `jaxrej train`), an ABS run (the same, with model.name = 'abs'),
and reject heads (a folder with a saved heads model, `jaxrej heads`), in the workdir itself or
one level below it.

    runs = find_runs("runs/demo")        # {"sbgc": [dir, ...], "heads": [dir, ...], "abs": [...]}
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


def _is_trained(d: str) -> bool:
    return os.path.isfile(os.path.join(d, "config.json")) and os.path.isdir(
        os.path.join(d, "checkpoints")
    )


def _model_name(d: str):
    try:
        with open(os.path.join(d, "config.json")) as f:
            return json.load(f).get("model", {}).get("name")
    except (OSError, ValueError, AttributeError):
        return None


def _is_sbgc(d: str) -> bool:
    return _is_trained(d) and _model_name(d) != "abs"


def _is_abs(d: str) -> bool:
    return _is_trained(d) and _model_name(d) == "abs"


def _is_heads(d: str) -> bool:
    return os.path.isfile(os.path.join(d, HEADS_FILE))


def find_runs(workdir: str) -> dict[str, list[str]]:
    """{'sbgc': [...], 'heads': [...], 'abs': [...]}: `workdir` and its immediate sub-folders
    that hold a trained score model, saved heads or an ABS run. ValueError when there is none."""
    if not os.path.isdir(workdir):
        raise ValueError(f"--workdir: no such directory {workdir!r}")
    dirs = [workdir] + sorted(
        os.path.join(workdir, d)
        for d in os.listdir(workdir)
        if os.path.isdir(os.path.join(workdir, d)) and not d.startswith(".")
    )
    runs = {"sbgc": [d for d in dirs if _is_sbgc(d)], "heads": [d for d in dirs if _is_heads(d)],
            "abs": [d for d in dirs if _is_abs(d)]}  # fmt: skip
    if not any(runs.values()):
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


def abs_scorer(run_dir: str, *, batch_size: int, name: str = "abs") -> Scorer:
    """The ABS run's class bounds of pixel images (`jaxrej.abs.ABSScorer`, the run's eval
    settings: latent steps, starts, bank), jitted for one batch shape."""
    from jaxrej.abs.scorer import load_scorer

    sc, step = load_scorer(run_dir)
    fn = jax.jit(lambda s, x: s(x))
    settings = json.dumps({"run": os.path.abspath(run_dir), "step": step, "options": repr(sc.options),
                           "model": repr(sc.model), "batch_size": batch_size})  # fmt: skip
    return Scorer(name, lambda x: np.asarray(fn(sc, x)), batch_size, settings)


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
    for d in found["sbgc"][:1]:  # on its eval_dataset where it has one (held out of training)
        c = read_config(d)
        held_out = c["data"].get("eval_dataset")
        vf = None if held_out else c["data"].get("val_fraction")
        cands.append(("sbgc", d, {"dataset": held_out or c["data"]["dataset"], "val_fraction": vf,
                                  "seed": c.get("seed", 0), "ood": ()}))  # fmt: skip
    for d in found.get("abs", [])[:1]:  # evaluated on its eval_dataset (held out of training)
        c = read_config(d)
        cands.append(("abs", d, {"dataset": c["data"].get("eval_dataset") or c["data"]["dataset"],
                                 "val_fraction": None, "seed": c.get("seed", 0), "ood": ()}))  # fmt: skip
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
        from jaxrej.data.registry import is_local

        first = {**first, "val_fraction": 0.15}  # unused by a local set: its fixed split
        if not is_local(first["dataset"]):
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


def adversarial(
    found, data, *, out_dir: str, n_heads: int, n_sbgc: int, eps=(0.1, 0.2, 0.3),
    sbgc_eps=(0.1, 0.3), steps: int = 40, sbgc_steps: int = 10, percentiles=(1.0, 2.0),
    progress: bool = True,
) -> dict:  # fmt: skip
    """The adversarial protocol (`eval.adversarial`, L-inf in pixel space) for every head of the
    first heads run on the first n_heads test rows, and for the score model on n_sbgc rows spread
    over the test split, attacked and judged with its cheap differentiable scorer (1 Rademacher
    probe, rtol = atol = 1e-3, TopK(k=2) keeping the true class; thresholds of that scorer on the
    validation rows). Per-scorer results are kept in out_dir/adversarial/<name>.json and reused
    when their settings match. Returns {'report', 'markdown'}."""
    from jaxrej import attacks
    from jaxrej import scoring as sc
    from jaxrej.eval import adversarial as adv
    from jaxrej.training.checkpoint import atomic_write_json
    from jaxrej.training.workdir import load_trained

    folder = os.path.join(out_dir, "adversarial")
    os.makedirs(folder, exist_ok=True)
    (xv, yv), (xt, yt) = data.val, data.test
    results, transfer = {}, None
    msp = None

    def cached(name, settings, compute):
        path = os.path.join(folder, f"{name}.json")
        try:
            with open(path) as f:
                old = json.load(f)
            if old.get("settings") == settings:
                return old["result"]
        except (OSError, ValueError):
            pass
        r = adv.json_ready(compute())
        atomic_write_json(path, {"settings": settings, "result": r})
        return r

    log = print if progress else (lambda *a, **k: None)
    if found["heads"]:
        heads = load_heads(found["heads"][0])
        n = min(n_heads, len(yt))
        x, y = xt[:n], yt[:n]
        msp = head_scorers(heads)["msp"]
        stamp = os.path.getmtime(os.path.join(found["heads"][0], HEADS_FILE))
        opts = adv.AttackOptions(eps=tuple(eps), steps=steps, batch_size=min(120, n),
                                 percentiles=tuple(percentiles))  # fmt: skip
        for name, fn in head_scorers(heads).items():
            log(f"adversarial: {name}")
            settings = {"saved": stamp, "n": n, "options": repr(opts)}

            def compute(fn=fn):
                th = adv.fit_thresholds(adv.scores_of(fn, xv, batch_size=120), yv, percentiles)
                return adv.evaluate_scorer(lambda yb, fn=fn: fn, x, y, th, options=opts,
                                           key=jax.random.key(0), transfer=transfer, log=log)  # fmt: skip

            results[name] = cached(name, settings, compute)
            if name == "msp":
                transfer = {
                    float(e): adv.batched_attack(attacks.pgd, lambda yb: msp, x, y,
                                                 key=jax.random.key(2), batch_size=min(120, n),
                                                 eps=e, steps=steps)["x_adv"]
                    for e in eps
                }  # fmt: skip
    if found["sbgc"] and n_sbgc:
        tm = load_trained(found["sbgc"][0])
        d = tm.config["data"]
        options = (("screen", (sc.TopK(k=2),)), ("divergence", "rademacher"), ("n_probes", 1),
                   ("rtol", 1e-3), ("atol", 1e-3), ("max_steps", 64))  # fmt: skip
        base = SBGCScorer(params=tm.params, key=jax.random.key(1), score_fn=tm.score_fn,
                          sde=tm.sde, num_classes=int(d["num_classes"]),
                          n_levels=int(d["n_levels"]), options=options)  # fmt: skip
        rows = np.linspace(0, len(yt) - 1, min(n_sbgc, len(yt))).round().astype(int)
        xs, ys = xt[rows], yt[rows]
        opts = adv.AttackOptions(eps=tuple(sbgc_eps), steps=sbgc_steps, batch_size=len(rows),
                                 percentiles=tuple(percentiles), n_eot=4)  # fmt: skip
        settings = {"run": os.path.abspath(found["sbgc"][0]), "step": tm.step,
                    "rows": rows.tolist(), "options": repr(opts), "scorer": repr(options)}  # fmt: skip

        def compute_sbgc():
            log("adversarial: sbgc (cheap scorer: 1 probe, rtol 1e-3, TopK(k=2))")
            th = adv.fit_thresholds(adv.scores_of(base, xv, batch_size=36), yv, percentiles)
            tr = None
            if msp is not None:
                tr = {float(e): adv.batched_attack(attacks.pgd, lambda yb: msp, xs, ys,
                                                   key=jax.random.key(2), batch_size=len(rows),
                                                   eps=e, steps=steps)["x_adv"]
                      for e in sbgc_eps}  # fmt: skip
            r = adv.evaluate_scorer(lambda yb: base.replace(labels=yb), xs, ys, th, options=opts,
                                    key=jax.random.key(0), transfer=tr, stochastic=True, log=log)  # fmt: skip
            r["rows"] = rows.tolist()
            return r

        results = {"sbgc": cached("sbgc", settings, compute_sbgc), **results}
    md = "### Adversarial inputs (L-inf PGD / APGD in pixel space)\n\n"
    md += adv.markdown(results, percentiles=percentiles)
    return {"report": results, "markdown": md}
