"""`jaxrej gwin --config CONFIG --workdir DIR [--config.a.b=v ...]`: GWIN (Cosentino & Zhu 2019)
on a dataset: an MC-dropout classifier, a conditional WGAN-GP trained on its confident-and-correct
training examples, and the tau table of transform-and-reclassify on validation rows carved from
the training split and (eval.test) on the test split. The command
turns the config into `jaxrej.gwin.pipeline.GwinOptions`, calls `pipeline.run` and writes files.

Files in DIR (each written atomically; other files are left alone):
  gwin_config.json   the run's config, written first; a later call with a different config is
                     refused (only gan.n_steps/log_every/checkpoint_every/max_to_keep and eval.*
                     may change: the run resumes from its checkpoints)
  gwin_classifier/   orbax checkpoint of the trained classifier (reused on resume)
  gwin_checkpoints/  orbax checkpoints of the GAN (resumed from the newest intact one)
  gwin_val.json      the tau table on the validation rows (data.val_fraction of the training
                     rows, stratified, never trained on: settings are chosen here): a list of rows
                     with keys tau, rejected_frac, n_rejected, acc_rejected_before,
                     acc_rejected_after, acc_with_reject, acc_with_transform
  gwin.json          the same table on the test split; only with eval.test = True (the default;
                     eval.test = False leaves the test rows unread while settings are chosen, and
                     a later call with eval.test = True resumes the run, retraining nothing)
  gwin_run.json      accuracies, sizes, what the transformation did per split (`stats`), the
                     GAN's training log (with ||G(x) - x|| and the gradient norm of each term of
                     the generator's loss) and its trace on the validation rows, timings, load
  gwin_curves.png    the table's columns against tau (test; validation without eval.test)
  gwin_grid.png      rejected inputs (at eval.grid_tau) beside their transformations (same split)
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


def check_workdir(workdir: str, cfg: dict) -> bool:
    """True if `workdir` holds this run (resume), False if it holds no GWIN run; ValueError if it
    holds another run's results (a different config, or GWIN files without a config)."""
    from jaxrej.gwin.pipeline import CHECKPOINT_DIR, CLASSIFIER_DIR
    from jaxrej.training.workdir import fixed_settings

    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir: {workdir!r} exists and is not a directory")
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        others = [n for n in ("gwin.json", "gwin_val.json", CLASSIFIER_DIR, CHECKPOINT_DIR)
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
    # absent and None are the same setting
    diff = config_diff(fixed_settings(stored, RESUMABLE), fixed_settings(cfg, RESUMABLE))
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
            val_fraction=float(c.data.val_fraction),
            test=bool(c.eval.test),
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

    atomic_write_json(os.path.join(workdir, "gwin_val.json"), res.val_rows)
    if res.rows is not None:
        atomic_write_json(os.path.join(workdir, "gwin.json"), res.rows)
    shown = res.rows if res.rows is not None else res.val_rows
    split = "test" if res.rows is not None else "validation"
    figures.curves_png(os.path.join(workdir, "gwin_curves.png"), shown,
                       title=f"GWIN on {opts.dataset} {split} (seed {opts.seed})")  # fmt: skip
    g = res.grid
    figures.grid_png(os.path.join(workdir, "gwin_grid.png"), g["x"], g["x_transformed"],
                     g["labels"], g["pred_before"], g["pred_after"],
                     title=f"{g['split']}, rejected at tau={opts.grid_tau:g}: input (left), transformed (right)")  # fmt: skip
    run_info = {
        "dataset": opts.dataset,
        "seed": opts.seed,
        "accuracy": res.accuracy,
        "val_accuracy": res.val_accuracy,
        "n": res.n,
        "stats": res.stats,
        "classifier_restored": res.classifier_restored,
        "resumed": resumed,
        "gan_log": res.gan_log,
        "trace": res.trace,
        "seconds": res.seconds,
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "device": str(jax.devices()[0].platform),
    }
    run_path = os.path.join(workdir, "gwin_run.json")
    if resumed and not res.gan_log and os.path.exists(run_path):
        # nothing trained in this call: keep the log and trace of the call that trained
        with open(run_path) as f:
            earlier = json.load(f)
        for k in ("gan_log", "trace"):
            run_info[k] = earlier.get(k, [])
    atomic_write_json(run_path, run_info)
    print(f"validation ({res.n['validation']} training rows, never trained on):", file=sys.stderr)
    print(protocol.markdown(res.val_rows), file=sys.stderr)
    if res.rows is not None:
        print(f"test ({res.n['test']} rows):", file=sys.stderr)
        print(protocol.markdown(res.rows), file=sys.stderr)

    def rounded(rows):
        if rows is None:
            return None
        return [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows
        ]

    return {
        "gwin_json": os.path.join(workdir, "gwin.json") if res.rows is not None else None,
        "accuracy": None if res.accuracy is None else round(res.accuracy, 4),
        "val_accuracy": round(res.val_accuracy, 4),
        "critic_pool": res.n["critic_pool"],
        "validation": rounded(res.val_rows),
        "test": rounded(res.rows),
        "seconds": res.seconds,
    }
