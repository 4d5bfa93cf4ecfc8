"""An ABS run in a folder: `train_run` (a `jaxrej.config.NewRun` of kind 'abs' in, the run's files
out; `jaxrej.training.run.train_run` hands such a run here) and `score_run` (the ABS half of
`jaxrej score`'s library, `jaxrej.eval.run_scores.score_run`: the same `ScoreOptions` in, the
same `ScoreReport` out).

Config sections (configs/mnist_abs.py): data (dataset, train_split, eval_dataset, eval_split,
val_fraction: held out of training as for a score model, `training.run.without_validation`,
data_dir), model (name='abs' and the `ABSModel` fields), training (`ABSTrainOptions`), eval
(`jaxrej.config.ABSEval`: `LatentOptions` fields + bank_size, batch_size). `jaxrej.config`
turns them into these objects (`new_run`, `load_run`: `abs_model`, `abs_training`); nothing
here reads the dict.

Files: DIR/config.json, checkpoints/, metrics.jsonl, train.json (train); `jaxrej score` writes
DIR/score_<set>[_limit<N>][_step<S>][_<field><value>...].json / .npz and
score_ood_<name>[...].npz, the score model's names (`training.workdir.score_stem`).
The scorer is `jaxrej.abs.scorer.load_scorer`'s, the one `jaxrej evaluate` loads, on the pixels
k / (L - 1); the class score is the ABS bound in nats (a Gaussian or Bernoulli likelihood of
the pixels in [0, 1], not of the integer levels: no bits/dim); OOD sets are detected by the class-marginal bound
logsumexp_c s_c - log C.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, NamedTuple

import numpy as np

__all__ = ["ABSRun", "prepare", "train_run", "class_scores", "score_run"]

RESULT_FIELDS = ("score", "log_joint", "z", "member", "decoder_score")  # `latent.BoundResult`


class ABSRun(NamedTuple):
    """A validated ABS run with its data: run (the `jaxrej.config.RunSpec`: net the `ABSModel`,
    training the `ABSTrainOptions`, eval the `ABSEval`, config the JSON form stored as
    config.json, with the data's num_classes, n_levels and event_shape), train / evals
    (Datasets; evals None without an evaluation set)."""

    run: Any
    train: Any
    evals: Any


def prepare(new) -> ABSRun:
    """The run of a `jaxrej.config.NewRun` of kind 'abs' and its data (module doc); ValueError
    naming a bad field before anything is trained or written."""
    from jaxrej.data.registry import load_train_and_eval
    from jaxrej.training.run import without_validation

    d = new.data
    train, evals = load_train_and_eval(d.dataset, d.train_split, d.eval_dataset, d.eval_split,
                                       data_dir=d.data_dir)  # fmt: skip
    train = without_validation(train, d, seed=new.seed)  # the reject thresholds' rows
    run = new.spec(num_classes=train.num_classes, n_levels=train.n_levels,
                   event_shape=train.images.shape[1:])  # fmt: skip
    return ABSRun(run=run, train=train, evals=evals)


def train_run(new, workdir: str, *, progress: bool = True) -> dict:
    """Train (or resume) the ABS run of `new` (a `jaxrej.config.NewRun`) in `workdir` and return
    its train.json summary (module doc); a run already trained to training.n_iters keeps its
    train.json."""
    import jax

    from jaxrej.abs import scorer as sc
    from jaxrej.abs.model import init_params
    from jaxrej.abs.training import train
    from jaxrej.data.preprocessing import to_unit_interval
    from jaxrej.io import atomic_write_json
    from jaxrej.training.workdir import CONFIG_FILE, TRAIN_FILE, check_run_workdir, read_summary

    p = prepare(new)
    run, data = p.run, p.train
    model, opts, ev, seed = run.net, run.training, run.eval, run.seed
    cfg_path = os.path.join(workdir, CONFIG_FILE)
    check_run_workdir(workdir, run.config)  # ValueError: another run, nothing changed
    os.makedirs(workdir, exist_ok=True)
    if not os.path.isfile(cfg_path):
        atomic_write_json(cfg_path, run.config)
    init_key, train_key = jax.random.split(jax.random.key(seed))
    params = init_params(model, key=init_key)
    evaluate = None
    if p.evals is not None and opts.eval_rows and opts.eval_every:
        n = min(opts.eval_rows, len(p.evals.labels))
        xe = to_unit_interval(p.evals.images[:n], data.n_levels)
        ye = p.evals.labels[:n]

        def evaluate(p):
            s = sc.build_scorer(model, p, bank_size=ev.bank_size, seed=seed, options=ev.latent)
            scores = class_scores(s, xe, batch_size=ev.batch_size, progress=False)
            return {"eval_accuracy": float(np.mean(np.argmax(scores, 1) == ye)), "eval_rows": n}

    state, summary = train(workdir=workdir, model=model, init_params=params, images=data.images,
                           labels=data.labels, opts=opts, key=train_key, n_levels=data.n_levels,
                           progress=progress, evaluate=evaluate)  # fmt: skip
    path = os.path.join(workdir, TRAIN_FILE)
    stored = read_summary(path)
    if summary["start_step"] == summary["final_step"] and stored is not None:
        if stored.get("final_step") == summary["final_step"]:
            print(f"jaxrej train: {workdir!r} is already trained to step {summary['final_step']}; "
                  f"its {TRAIN_FILE} is kept", file=sys.stderr)  # fmt: skip
            return stored
    n_params = int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
    summary |= {"workdir": workdir, "model": "abs", "n_params": n_params,
                "n_train": int(data.images.shape[0]), "devices": str(jax.devices())}  # fmt: skip
    atomic_write_json(path, summary)
    return summary


def class_scores(scorer, x: np.ndarray, *, batch_size: int, progress: bool = True,
                 desc: str = "score abs", full: bool = False):  # fmt: skip
    """Class bounds (N, C) of pixels x (N, *event) in [0, 1] by an `ABSScorer`, in padded
    batches of one shape (`jaxrej.eval.run_scores.result_batches`: one compilation per scorer
    setting); full=True returns {field: (N, ...)} of every `RESULT_FIELDS` field."""
    from jaxrej.eval.run_scores import result_batches

    x = np.asarray(x, np.float32)
    r, _ = result_batches(scorer, x, names=RESULT_FIELDS, batch_size=batch_size,
                          progress=progress, desc=desc)  # fmt: skip
    return r if full else r["score"]


def score_run(workdir: str, *, options, run=None):
    """`jaxrej score` of an ABS run (module doc): a `run_scores.ScoreReport` of the scored set and
    the OOD sets under `options` (`run_scores.ScoreOptions` whose run_eval is the run's
    `jaxrej.config.ABSEval`, overrides applied; run: its `jaxrej.config.RunSpec`, None:
    `load_run`). Summary: the shared keys of
    `run_scores.summarize_scores` and `warnings_for` (accuracy, n_failed, label_dependence, ...)
    and the ABS ones: bound_nats (the mean class-marginal bound), bound_nats_conditional (the
    label's), model "abs", score / ood_score (what was scored); arrays: class_logp (N, C),
    log_joint (N, C), z (N, C, d), member (N, C), decoder_score (N, C M), pred, ok, log_px,
    labels where known; per OOD set class_logp,
    log_px, ok."""
    from jaxrej.abs.scorer import load_scorer
    from jaxrej.config import load_run
    from jaxrej.data.preprocessing import to_unit_interval
    from jaxrej.eval import run_scores as rs

    o, ev = options, options.run_eval
    run = load_run(workdir) if run is None else run
    set_name, test_spec, images, labels, oods = rs.load_sets(o, run.data)
    scorer, step = load_scorer(workdir, step=o.step, options=ev, run=run)
    levels = run.data.n_levels

    def score(images, desc):
        x = to_unit_interval(np.asarray(images), levels)
        return rs.result_batches(scorer, x, names=RESULT_FIELDS, batch_size=ev.batch_size,
                                 progress=o.progress, desc=f"score {desc}")  # fmt: skip

    compiled0 = rs._result._cache_size()
    t0 = time.perf_counter()
    r, nb = score(images, set_name)
    elapsed = time.perf_counter() - t0
    s = rs.summarize_scores(r["score"], labels)
    pred, ok, log_px, cond = s.pop("pred"), s.pop("ok"), s.pop("log_px"), s.pop("cond")
    s["bound_nats"] = rs.mean_ok(log_px, ok)
    s["bound_nats_conditional"] = None if cond is None else rs.mean_ok(cond, ok)
    arrays = {"class_logp": r["score"], "log_joint": r["log_joint"], "z": r["z"],
              "member": r["member"], "decoder_score": r["decoder_score"], "pred": pred, "ok": ok,
              "log_px": log_px}  # fmt: skip
    if labels is not None:
        arrays["labels"] = labels

    def describe(ro):
        so = rs.summarize_scores(ro["score"], None)
        arr = {"class_logp": ro["score"], "log_px": so["log_px"], "ok": so["ok"]}
        return so["log_px"], arr, {"n_failed": so["n_failed"],
                                   "bound_nats": rs.mean_ok(so["log_px"], so["ok"])}  # fmt: skip

    ood_results, ood_arrays = rs.score_ood_sets(oods, score, describe, log_px)
    summary = {
        "set": set_name,
        "scorer": "abs",
        "model": "abs",
        "dataset": test_spec,
        "split": o.split,
        "limit": o.limit or None,
        **s,
        "ood": ood_results,
        "ood_score": "class-marginal ABS bound logsumexp_c s_c(x) - log C (nats); AUROC "
        "positive = in-distribution (the scored set), as jaxrej.metrics",
        "score": f"ABS bound on log p(x | y) in nats (jaxrej.abs), {scorer.model.likelihood} "
        "pixel likelihood",
        "warnings": rs.warnings_for(s),
        "notes": [] if ood_results else [rs.NO_OOD_NOTE],
        "time_s": round(elapsed, 2),
        "compilations": rs._result._cache_size() - compiled0,
        "batches": nb,
        "checkpoint_step": step,
        "eval": ev.to_dict(),
    }
    return rs.ScoreReport(summary=summary, arrays=arrays, ood=ood_arrays, set_name=set_name)
