"""Train a run in a folder: a config dict in, DIR/config.json, checkpoints/, metrics.jsonl and
train.json out (`jaxrej train` and `jaxrej demo` call `train_run`). A score model (DSM, on the
train split less `data.val_fraction` of each class when set) resumes from DIR's newest intact
checkpoint when DIR holds the same run (`workdir.check_run_workdir`); `init_from` starts a new run
from another run's checkpoint (`workdir.check_init_from`); model.name == 'abs' hands the run to
`jaxrej.abs.run.train_run`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys


def prepare(cfg: dict) -> dict:
    """Validate a score-model run's config (a plain dict, `ConfigDict.to_dict()`) into the
    objects it trains: {"cfg": the JSON form stored as config.json, with the data's num_classes,
    n_levels and event_shape; "opts": TrainOptions; "train" / "eval": the Datasets; "net";
    "sde"}. ValueError naming a missing section or a bad field before anything is trained."""
    from jaxrej.config import RunEval, json_form
    from jaxrej.data.registry import is_local, load_train_and_eval
    from jaxrej.training.loop import TrainOptions
    from jaxrej.training.workdir import build_net, build_sde

    cfg = copy.deepcopy(dict(cfg))
    for section in ("data", "sde", "model", "training", "eval"):
        if section not in cfg:
            raise ValueError(f"config: missing section {section!r}")
    known = {f.name for f in dataclasses.fields(TrainOptions)}
    unknown = set(cfg["training"]) - known
    if unknown:
        raise ValueError(f"training: unknown field(s) {sorted(unknown)}")
    if "num_classes" in cfg["training"]:
        raise ValueError("training.num_classes: set from the data, not the config")
    TrainOptions(**{**cfg["training"], "class_ce_weight": 0.0})  # names a bad value early
    RunEval.from_dict(cfg["eval"])  # names a bad eval.* value before training
    sde_cfg = dict(cfg["sde"])
    sde = build_sde(sde_cfg.pop("name"), **sde_cfg)
    d = cfg["data"]
    train, evals = load_train_and_eval(d["dataset"], d.get("train_split", "train"),
                                       d.get("eval_dataset"), d.get("eval_split"),
                                       data_dir=d.get("data_dir") or None)  # fmt: skip
    vf = d.get("val_fraction")
    if vf and not is_local(d["dataset"]):  # hold out the reject thresholds' validation rows
        from jaxrej.eval.heads import split_validation

        if not 0.0 < vf < 1.0:
            raise ValueError(f"data.val_fraction: expected a number in (0, 1), got {vf!r}")
        fit_idx, _ = split_validation(train.labels, vf, seed=cfg.get("seed", 0))
        train = dataclasses.replace(
            train, images=train.images[fit_idx], labels=train.labels[fit_idx]
        )
    d["num_classes"] = int(train.num_classes)
    opts = TrainOptions(**cfg["training"], num_classes=int(train.num_classes))
    d["n_levels"] = int(train.n_levels)
    d["event_shape"] = list(train.images.shape[1:])
    model = dict(cfg["model"])
    net = build_net(model.pop("name"), num_classes=train.num_classes, **model)
    if not isinstance(cfg.get("seed", 0), int):
        raise ValueError(f"seed: expected an int, got {cfg.get('seed')!r}")
    return {
        "cfg": json_form(cfg),
        "opts": opts,
        "train": train,
        "eval": evals,
        "net": net,
        "sde": sde,
    }


def train_run(cfg: dict, workdir: str, *, init_from: str | None = None,
              progress: bool = True) -> dict:  # fmt: skip
    """Train (or resume) the run of config dict `cfg` in `workdir` and return its train.json
    summary (module doc); a run already trained to training.n_iters keeps its train.json, which
    is returned again. `init_from`: "RUN" or "RUN@STEP" (a fine-tune: the data, sde and model
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

    if cfg.get("model", {}).get("name") == "abs":  # analysis by synthesis
        from jaxrej.abs.run import train_run as train_abs

        if init_from:
            raise ValueError("--init-from: not supported for model.name='abs'")
        return train_abs(cfg, workdir, progress=progress)
    p = prepare(cfg)
    cfg, opts = p["cfg"], p["opts"]
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

    key = jax.random.key(cfg.get("seed", 0))
    init_key, train_key = jax.random.split(key)
    net, sde, data, evals = p["net"], p["sde"], p["train"], p["eval"]
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
