"""`jaxrej train --config CONFIG --workdir DIR [--config.a.b=v ...]`: DSM training of a
class-conditional score model (on the train split less `data.val_fraction` of each class when
set: the rows `jaxrej evaluate` fits reject thresholds on; a local set's train split already
excludes its validation rows); resumes from DIR's newest intact checkpoint if DIR holds the same
run (an unreadable newer one is named and moved to DIR/corrupt_checkpoints/).

Writes DIR/config.json (once), DIR/checkpoints/, DIR/metrics.jsonl and DIR/train.json. A run
already trained to training.n_iters keeps its train.json, which is printed again.
`--init-from RUN[@STEP]` starts a new run from another run's checkpoint (a fine-tune: the data,
sde and model sections must match; the training section may differ) and records it in
DIR/init_from.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from jaxrej.config import RunEval, flatten_config, load_config

TRAIN_FILE = "train.json"

# fields a resumed run may change without invalidating its checkpoints
RESUMABLE_FIELDS = {
    "training": {
        "n_iters",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "max_to_keep",
        "data_parallel",
        "label_gap_rows",
    },
    "eval": None,  # the whole section (scoring settings)
}


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="ml_collections config file (get_config())")
    parser.add_argument("--workdir", required=True, help="run folder (created if missing)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--init-from", default=None, metavar="RUN[@STEP]",
                        help="start from another run's checkpoint (default its newest): a "
                             "fine-tune under this config's training settings; the data, sde and "
                             "model sections must match")  # fmt: skip


def _comparable(cfg: dict) -> dict:
    out = {}
    for section, value in cfg.items():
        if section in RESUMABLE_FIELDS and RESUMABLE_FIELDS[section] is None:
            continue
        if section in RESUMABLE_FIELDS and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in RESUMABLE_FIELDS[section]}
        out[section] = value
    return out


def _normalise(obj):
    """JSON round-trip form (tuples -> lists) so stored and new configs compare equal."""
    return json.loads(json.dumps(obj))


def _stored_summary(path: str) -> dict | None:
    """The train.json at `path`, or None when there is none or it cannot be read."""
    try:
        with open(path) as f:
            out = json.load(f)
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def prepare(config) -> dict:
    """Validate a ConfigDict into plain values: (cfg dict, TrainOptions, data, eval settings)."""
    from jaxrej.data.registry import is_local, load_train_and_eval
    from jaxrej.training.loop import TrainOptions
    from jaxrej.training.workdir import build_net, build_sde

    cfg = config.to_dict()
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
        "cfg": _normalise(cfg),
        "opts": opts,
        "train": train,
        "eval": evals,
        "net": net,
        "sde": sde,
    }


def run(args) -> dict:
    import jax
    import numpy as np

    from jaxrej.io import atomic_write_json
    from jaxrej.models.score import init_params, make_score_fn
    from jaxrej.training.checkpoint import CHECKPOINT_DIR
    from jaxrej.training.loop import train
    from jaxrej.training.workdir import (
        CONFIG_FILE,
        check_init_from,
        parse_init_from,
        read_config,
        seed_from_run,
    )

    config = load_config(args.config, args.overrides)
    if "model" in config and config.model.get("name") == "abs":  # analysis by synthesis
        from jaxrej.abs.commands import train_run

        return train_run(config.to_dict(), args.workdir, progress=not args.no_progress)
    p = prepare(config)
    cfg, opts = p["cfg"], p["opts"]
    workdir = args.workdir
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"workdir: {workdir!r} exists and is not a directory")
    cfg_path = os.path.join(workdir, CONFIG_FILE)
    if os.path.isfile(cfg_path):
        old = read_config(workdir)
        a, b = flatten_config(_comparable(old)), flatten_config(_comparable(cfg))
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if diff:
            raise ValueError(
                f"workdir: {workdir!r} holds a run with a different config (differs in {diff}); "
                "use a new --workdir (nothing was changed)"
            )
    elif os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
        raise ValueError(
            f"workdir: {workdir!r} has checkpoints but no {CONFIG_FILE}; refusing to touch it"
        )
    init = None
    if getattr(args, "init_from", None):  # validated before anything is written
        init = check_init_from(cfg, *parse_init_from(args.init_from))
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
        progress=not args.no_progress,
    )
    path = os.path.join(workdir, TRAIN_FILE)
    stored = _stored_summary(path)
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
