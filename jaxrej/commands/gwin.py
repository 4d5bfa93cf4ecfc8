"""`jaxrej gwin --config CONFIG --workdir DIR [--config.a.b=v ...]`: GWIN (Cosentino & Zhu 2019)
on a dataset: an MC-dropout classifier, a conditional WGAN-GP trained on its confident-and-correct
training examples, and the tau table of transform-and-reclassify on the test split. The command
turns the config into `jaxrej.gwin.pipeline.GwinOptions`, calls `pipeline.run` and writes files.

Files in DIR (each written atomically; other files are left alone):
  gwin_config.json   the run's config, written first; a later call with a different config is
                     refused (only gan.n_steps/log_every/checkpoint_every/max_to_keep and eval.*
                     may change: the run resumes from its checkpoints)
  gwin_classifier/   orbax checkpoint of the trained classifier (reused on resume)
  gwin_checkpoints/  orbax checkpoints of the GAN (resumed from the newest intact one)
  gwin.json          the tau table: a list of rows with keys tau, rejected_frac,
                     acc_rejected_before, acc_rejected_after, acc_with_reject, acc_with_transform
  gwin_run.json      accuracy, sizes, training log, timings and machine load
  gwin_curves.png    the table's columns against tau
  gwin_grid.png      rejected test inputs (at eval.grid_tau) beside their transformations
"""

from __future__ import annotations

import json
import os
import sys

from jaxrej.config import config_diff, format_diff

CONFIG_FILE = "gwin_config.json"
RESUMABLE = {"gan": {"n_steps", "log_every", "checkpoint_every", "max_to_keep"}, "eval": None}


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="ml_collections config file (get_config())")
    parser.add_argument("--workdir", required=True, help="run folder (created if missing)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fixed(cfg: dict) -> dict:
    """The part of a config that a resumed run must share with the stored one."""
    out = {}
    for section, value in cfg.items():
        keep = RESUMABLE.get(section, set())
        if keep is None:
            continue
        out[section] = {k: v for k, v in value.items() if k not in keep} if keep else value
    return out


def check_workdir(workdir: str, cfg: dict) -> bool:
    """True if `workdir` holds this run (resume), False if it holds no GWIN run; ValueError if it
    holds another run's results (a different config, or GWIN files without a config)."""
    from jaxrej.gwin.pipeline import CHECKPOINT_DIR, CLASSIFIER_DIR

    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir: {workdir!r} exists and is not a directory")
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        others = [n for n in ("gwin.json", CLASSIFIER_DIR, CHECKPOINT_DIR)
                  if os.path.exists(os.path.join(workdir, n))]  # fmt: skip
        if others:
            raise ValueError(
                f"--workdir: {workdir!r} holds GWIN results {others} without {CONFIG_FILE}; "
                "refusing to overwrite them (use another --workdir)"
            )
        return False
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"--workdir: cannot read {path!r}: {e}") from e
    diff = config_diff(_fixed(stored), _fixed(cfg))  # absent and None are the same setting
    if diff:
        shown = format_diff(diff, limit=5)
        raise ValueError(
            f"--workdir: {workdir!r} holds another GWIN run (config differs in {shown}); "
            "refusing to overwrite it (use another --workdir)"
        )
    return True


def options(config):
    """The config as a `GwinOptions` (the one place a GWIN config is read); ValueError names a
    bad or missing field."""
    import dataclasses

    from jaxrej.gwin.pipeline import ClassifierOptions, GwinOptions
    from jaxrej.gwin.wgan import GanOptions

    c = config
    try:
        gan = c.gan
        return GwinOptions(
            dataset=str(c.data.dataset),
            seed=int(c.seed),
            classifier=ClassifierOptions(
                **{f.name: c.classifier[f.name] for f in dataclasses.fields(ClassifierOptions)}
            ),
            gan=GanOptions(**{f.name: gan[f.name] for f in dataclasses.fields(GanOptions)}),
            tau_star=float(gan.tau_star),
            gen_inputs=str(gan.gen_inputs),
            heldout_fraction=float(gan.heldout_fraction),
            generator_hidden=tuple(int(w) for w in gan.generator_hidden),
            residual=bool(gan.residual),
            critic_channels=tuple(int(w) for w in gan.critic_channels),
            critic_dense=int(gan.critic_dense),
            taus=tuple(float(t) for t in c.eval.taus),
            grid_tau=float(c.eval.grid_tau),
            grid_size=int(c.eval.grid_size),
            batch_size=int(c.eval.batch_size),
        )
    except (AttributeError, KeyError, TypeError) as e:
        raise ValueError(f"--config: missing or malformed field ({e})") from e


def run(args) -> dict:
    import jax

    from jaxrej.config import load_config
    from jaxrej.gwin import figures, pipeline, protocol
    from jaxrej.io import atomic_write_json

    config = load_config(args.config, args.overrides)
    opts = options(config)
    cfg = json.loads(json.dumps(config.to_dict()))
    workdir = args.workdir
    resumed = check_workdir(workdir, cfg)
    os.makedirs(workdir, exist_ok=True)
    atomic_write_json(os.path.join(workdir, CONFIG_FILE), cfg)
    res = pipeline.run(workdir, opts, progress=not args.no_progress)

    atomic_write_json(os.path.join(workdir, "gwin.json"), res.rows)
    figures.curves_png(os.path.join(workdir, "gwin_curves.png"), res.rows,
                       title=f"GWIN on {opts.dataset} (seed {opts.seed})")  # fmt: skip
    g = res.grid
    figures.grid_png(os.path.join(workdir, "gwin_grid.png"), g["x"], g["x_transformed"],
                     g["labels"], g["pred_before"], g["pred_after"],
                     title=f"rejected at tau={opts.grid_tau:g}: input (left), transformed (right)")  # fmt: skip
    run_info = {
        "dataset": opts.dataset,
        "seed": opts.seed,
        "accuracy": res.accuracy,
        "n": res.n,
        "classifier_restored": res.classifier_restored,
        "resumed": resumed,
        "gan_log": res.gan_log,
        "seconds": res.seconds,
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "device": str(jax.devices()[0].platform),
    }
    atomic_write_json(os.path.join(workdir, "gwin_run.json"), run_info)
    print(protocol.markdown(res.rows), file=sys.stderr)
    return {
        "gwin_json": os.path.join(workdir, "gwin.json"),
        "accuracy": round(res.accuracy, 4),
        "critic_pool": res.n["critic_pool"],
        "rows": [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
            for r in res.rows
        ],  # fmt: skip
        "seconds": res.seconds,
    }
