"""Train a run in a folder: a config (`jaxrej.config.NewRun`, `new_run` of a config dict) in,
DIR/config.json, checkpoints/, metrics.jsonl and train.json out (`jaxrej train` and `jaxrej
demo` call `train_run`). A score model (DSM, on the
train split less `data.val_fraction` of each class when set) resumes from DIR's newest intact
checkpoint when DIR holds the same run (`workdir.check_run_workdir`); `init_from` starts a new run
from another run's checkpoint (`workdir.check_init_from`); model.name == 'abs' hands the run to
`jaxrej.abs.run.train_run`.
"""

from __future__ import annotations

import dataclasses
import os
import sys


def without_validation(train, data, *, seed: int):
    """The training Dataset less its validation rows: a stratified `data.val_fraction` of each
    class (`jaxrej.eval.heads.split_validation` with `seed`, the split `jaxrej evaluate` fits
    reject thresholds on) when set and the set is not local (a local set's train split already
    excludes its validation rows). data: a `jaxrej.config.RunData`. ValueError naming a fraction
    outside (0, 1)."""
    from jaxrej.data.registry import is_local

    vf = data.val_fraction
    if not vf or is_local(data.dataset):
        return train
    from jaxrej.eval.heads import split_validation

    if not 0.0 < vf < 1.0:
        raise ValueError(f"data.val_fraction: expected a number in (0, 1), got {vf!r}")
    fit_idx, _ = split_validation(train.labels, vf, seed=seed)
    return dataclasses.replace(train, images=train.images[fit_idx], labels=train.labels[fit_idx])


def prepare(new) -> dict:
    """A score-model run to train (`jaxrej.config.NewRun`, `new_run`) with its data loaded:
    {"run": its `RunSpec` (run.config: the JSON form stored as config.json, with the data's
    num_classes, n_levels and event_shape); "train" / "eval": the Datasets}. ValueError naming a
    bad field before anything is trained."""
    from jaxrej.data.registry import load_train_and_eval

    d = new.data
    train, evals = load_train_and_eval(d.dataset, d.train_split, d.eval_dataset, d.eval_split,
                                       data_dir=d.data_dir)  # fmt: skip
    train = without_validation(train, d, seed=new.seed)
    run = new.spec(num_classes=train.num_classes, n_levels=train.n_levels,
                   event_shape=train.images.shape[1:])  # fmt: skip
    return {"run": run, "train": train, "eval": evals}


def train_run(new, workdir: str, *, init_from: str | None = None,
              progress: bool = True) -> dict:  # fmt: skip
    """Train (or resume) the run `new` (`jaxrej.config.NewRun`, `new_run` of a config dict) in
    `workdir` and return its train.json summary (module doc); a run already trained to
    training.n_iters keeps its train.json, which is returned again. `init_from`: "RUN" or "RUN@STEP" (a fine-tune: the data, sde and model
    sections must match). ValueError, nothing written, for a bad config or a workdir holding
    another run."""
    import jax
    import numpy as np

    from jaxrej.io import atomic_write_json
    from jaxrej.models.score import init_params, make_score_fn
    from jaxrej.training.loop import train
    from jaxrej.training.workdir import (
        CONFIG_FILE,
        TRAIN_FILE,
        check_init_from,
        check_run_workdir,
        parse_init_from,
        read_summary,
        seed_from_run,
    )

    if new.kind == "abs":  # analysis by synthesis
        from jaxrej.abs.run import train_run as train_abs

        if init_from:
            raise ValueError("--init-from: not supported for model.name='abs'")
        return train_abs(new, workdir, progress=progress)
    p = prepare(new)
    run = p["run"]
    cfg, opts = run.config, run.training
    cfg_path = os.path.join(workdir, CONFIG_FILE)
    check_run_workdir(workdir, cfg)  # ValueError: another run, nothing changed
    init = None
    if init_from:  # validated before anything is written
        init = check_init_from(cfg, *parse_init_from(init_from))
        if not os.path.isfile(cfg_path) and os.path.isdir(workdir) and os.listdir(workdir):
            raise ValueError(f"workdir: {workdir!r} is not empty; --init-from starts a new run")
    os.makedirs(workdir, exist_ok=True)
    if not os.path.isfile(cfg_path):
        atomic_write_json(cfg_path, cfg)
    if init is not None:
        seed_from_run(workdir, *init)

    key = jax.random.key(run.seed)
    init_key, train_key = jax.random.split(key)
    net, sde, data, evals = run.net, run.sde, p["train"], p["eval"]
    params = init_params(net, data.images.shape[1:], key=init_key)
    n_params = int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
    state, summary = train(
        workdir=workdir,
        score_fn=make_score_fn(net, sde),
        sde=sde,
        init_params=params,
        images=data.images,
        labels=data.labels,
        n_levels=data.n_levels,
        opts=opts,
        key=train_key,
        eval_images=None if evals is None else evals.images,
        eval_labels=None if evals is None else evals.labels,
        progress=progress,
    )
    path = os.path.join(workdir, TRAIN_FILE)
    stored = read_summary(path)
    if summary["start_step"] == summary["final_step"] and stored is not None:
        if stored.get("final_step") == summary["final_step"]:  # nothing was left to train
            print(f"jaxrej train: {workdir!r} is already trained to step {summary['final_step']} "
                  f"(training.n_iters={opts.n_iters}); its {TRAIN_FILE} is kept", file=sys.stderr)  # fmt: skip
            return stored
    summary.update({"workdir": workdir, "n_params": n_params, "n_train": int(data.images.shape[0]),
                    "devices": str(jax.devices())})  # fmt: skip
    if init is not None:
        summary["init_from"] = {"run": os.path.abspath(init[0]), "step": init[1]}
    atomic_write_json(path, summary)
    return summary
