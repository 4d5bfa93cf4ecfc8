"""`jaxrej gwin --config CONFIG --workdir DIR [--config.a.b=v ...]`: GWIN (Cosentino & Zhu 2019)
on a dataset: an MC-dropout classifier, a conditional WGAN-GP trained on its confident-and-correct
training examples, and the tau table of transform-and-reclassify on the test split.

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
import time

CONFIG_FILE = "gwin_config.json"
CLASSIFIER_DIR = "gwin_classifier"
CHECKPOINT_DIR = "gwin_checkpoints"
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


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_workdir(workdir: str, cfg: dict) -> bool:
    """True if `workdir` holds this run (resume), False if it holds no GWIN run; ValueError if it
    holds another run's results (a different config, or GWIN files without a config)."""
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
    a, b = _flatten(_fixed(stored)), _flatten(_fixed(cfg))
    diff = sorted(k for k in set(a) | set(b) if a.get(k, "<missing>") != b.get(k, "<missing>"))
    if diff:
        shown = ", ".join(f"{k}: {a.get(k, '<missing>')!r} -> {b.get(k, '<missing>')!r}"
                          for k in diff[:5])  # fmt: skip
        raise ValueError(
            f"--workdir: {workdir!r} holds another GWIN run (config differs in {shown}); "
            "refusing to overwrite it (use another --workdir)"
        )
    return True


def settings(config) -> dict:
    """The config as plain values (library objects and keywords); ValueError names a bad field."""
    from jaxrej.gwin.wgan import GEN_INPUTS, GanOptions

    c = config
    try:
        gan = c.gan
        out = {
            "seed": int(c.seed),
            "dataset": str(c.data.dataset),
            "classifier": {
                "name": str(c.classifier.name),
                "dropout": float(c.classifier.dropout),
                "epochs": int(c.classifier.epochs),
                "batch_size": int(c.classifier.batch_size),
                "learning_rate": float(c.classifier.learning_rate),
                "weight_decay": float(c.classifier.weight_decay),
                "mc_samples": int(c.classifier.mc_samples),
            },
            "tau_star": float(gan.tau_star),
            "generator_hidden": tuple(int(w) for w in gan.generator_hidden),
            "residual": bool(gan.residual),
            "gen_inputs": str(gan.gen_inputs),
            "heldout_fraction": float(gan.heldout_fraction),
            "critic_channels": tuple(int(w) for w in gan.critic_channels),
            "critic_dense": int(gan.critic_dense),
            "taus": tuple(float(t) for t in c.eval.taus),
            "grid_tau": float(c.eval.grid_tau),
            "grid_size": int(c.eval.grid_size),
            "batch_size": int(c.eval.batch_size),
        }
        out["gan"] = GanOptions(
            n_steps=gan.n_steps,
            batch_size=gan.batch_size,
            n_critic=gan.n_critic,
            lambda_gp=gan.lambda_gp,
            lambda_loss=gan.lambda_loss,
            lr=gan.lr,
            b1=gan.b1,
            b2=gan.b2,
            noise_dim=gan.noise_dim,
            clf_samples=gan.clf_samples,
            input_noise=gan.input_noise,
            input_shift=gan.input_shift,
            log_every=gan.log_every,
            checkpoint_every=gan.checkpoint_every,
            max_to_keep=gan.max_to_keep,
        )
    except (AttributeError, KeyError, TypeError) as e:
        raise ValueError(f"--config: missing or malformed field ({e})") from e
    if out["gen_inputs"] not in GEN_INPUTS:
        raise ValueError(f"gan.gen_inputs: expected one of {GEN_INPUTS}, got {out['gen_inputs']!r}")
    if not out["taus"]:
        raise ValueError("eval.taus: expected at least one threshold")
    return out


def _classifier(workdir, s, x_train, y_train, num_classes, key, progress):
    """The trained MC-dropout classifier (model, params): restored from DIR/gwin_classifier or
    trained and saved there."""
    import jax.numpy as jnp

    from jaxrej.gwin import mc_dropout
    from jaxrej.training.checkpoint import (
        checkpoint_manager,
        latest_step,
        restore_checkpoint,
        save_checkpoint,
    )

    c = s["classifier"]
    model = mc_dropout.make_classifier(c["name"], num_classes, dropout=c["dropout"])
    state = mc_dropout.init(model, x_train[:1], key=key)
    state = state.replace(losses=jnp.zeros((c["epochs"],)))
    ckpt = os.path.join(workdir, CLASSIFIER_DIR)
    if latest_step(ckpt) is not None:
        state, _ = restore_checkpoint(ckpt, state)
        return model, state, True
    if progress:
        print(f"jaxrej gwin: training the classifier ({c['epochs']} epochs)", file=sys.stderr)
    state = mc_dropout.train(model, state, x_train, y_train, key=key, epochs=c["epochs"],
                             batch_size=c["batch_size"], learning_rate=c["learning_rate"],
                             weight_decay=c["weight_decay"])  # fmt: skip
    with checkpoint_manager(ckpt, max_to_keep=1) as mngr:
        save_checkpoint(mngr, c["epochs"], state)
    return model, state, False


def run(args) -> dict:
    import jax
    import numpy as np

    from jaxrej.config import load_config
    from jaxrej.data.preprocessing import to_unit_interval
    from jaxrej.data.registry import load_dataset
    from jaxrej.gwin import figures, mc_dropout, protocol, transform, wgan
    from jaxrej.io import atomic_write_json
    from jaxrej.reject import decide

    config = load_config(args.config, args.overrides)
    s = settings(config)
    cfg = json.loads(json.dumps(config.to_dict()))
    workdir = args.workdir
    resumed = check_workdir(workdir, cfg)
    os.makedirs(workdir, exist_ok=True)
    atomic_write_json(os.path.join(workdir, CONFIG_FILE), cfg)
    progress = not args.no_progress
    t0 = time.time()

    train, test = load_dataset(s["dataset"], "train"), load_dataset(s["dataset"], "test")
    x_train = to_unit_interval(np.asarray(train.images), train.n_levels)
    x_test = to_unit_interval(np.asarray(test.images), test.n_levels)
    y_train, y_test = np.asarray(train.labels), np.asarray(test.labels)
    k_clf, k_mc, k_gan, k_t = jax.random.split(jax.random.key(s["seed"]), 4)
    if s["gen_inputs"] == "heldout":  # the generator learns on rows the classifier never saw
        clf_rows, held_rows = wgan.heldout_split(y_train, s["heldout_fraction"], seed=s["seed"])
    else:
        clf_rows = np.arange(y_train.size)

    model, clf, clf_restored = _classifier(workdir, s, x_train[clf_rows], y_train[clf_rows],
                                           train.num_classes, k_clf, progress)  # fmt: skip
    t_clf = time.time()
    n_mc = s["classifier"]["mc_samples"]

    def mc(x):
        return mc_dropout.mc_predict(model, clf.params, x, key=k_mc, n_samples=n_mc,
                                     batch_size=s["batch_size"])  # fmt: skip

    on_train = mc(x_train)
    pool = wgan.critic_pool(x_train, y_train, on_train.pred, on_train.certainty,
                            tau_star=s["tau_star"])  # fmt: skip
    if s["gen_inputs"] == "heldout":
        gen_rows = held_rows
    else:
        gen_rows = wgan.generator_inputs(on_train.pred, on_train.certainty, y_train,
                                         which=s["gen_inputs"], tau_star=s["tau_star"])  # fmt: skip
    shape = x_train.shape[1:]
    generator = wgan.Generator(
        event_shape=shape, hidden=s["generator_hidden"], residual=s["residual"]
    )
    critic = wgan.Critic(num_classes=train.num_classes, channels=s["critic_channels"],
                         dense=s["critic_dense"])  # fmt: skip
    gan, log = wgan.train(ckpt_dir=os.path.join(workdir, CHECKPOINT_DIR), generator=generator,
                          critic=critic, classifier=model, clf_params=clf.params,
                          gen_images=x_train[gen_rows], gen_labels=y_train[gen_rows], pool=pool, opts=s["gan"],
                          key=k_gan, progress=progress)  # fmt: skip
    t_gan = time.time()

    before = mc(x_test)
    taus = s["taus"]
    _, rejected_max = decide(before.probs, np.float32(max(taus)))
    res = transform.transform_and_reclassify(
        lambda xb: mc(xb).probs,
        transform.generator_transform(generator, gan.g_params, s["gan"].noise_dim),
        x_test, before.probs, np.asarray(rejected_max), key=k_t, batch_size=s["batch_size"],
    )  # fmt: skip
    pred_after = np.asarray(res.pred_after)
    rows = protocol.tau_table(y_test, before.probs, pred_after, taus)
    t_eval = time.time()

    atomic_write_json(os.path.join(workdir, "gwin.json"), rows)
    figures.curves_png(os.path.join(workdir, "gwin_curves.png"), rows,
                       title=f"GWIN on {s['dataset']} (seed {s['seed']})")  # fmt: skip
    probs = np.asarray(before.probs)
    grid_rej = np.flatnonzero(probs.max(-1) < s["grid_tau"])[: s["grid_size"]]
    if grid_rej.size and np.any(pred_after[grid_rej] < 0):  # grid_tau above max(taus)
        grid_rej = grid_rej[pred_after[grid_rej] >= 0]
    figures.grid_png(
        os.path.join(workdir, "gwin_grid.png"), x_test[grid_rej],
        np.asarray(res.x_transformed)[grid_rej], y_test[grid_rej],
        np.asarray(before.pred)[grid_rej], pred_after[grid_rej],
        title=f"rejected at tau={s['grid_tau']:g}: input (left), transformed (right)",
    )  # fmt: skip
    acc = float(np.mean(np.asarray(before.pred) == y_test))
    run_info = {
        "dataset": s["dataset"],
        "seed": s["seed"],
        "accuracy": acc,
        "n": {
            "train": int(y_train.size),
            "classifier_train": int(clf_rows.size),
            "test": int(y_test.size),
            "critic_pool": int(pool.labels.shape[0]),
            "generator_inputs": int(gen_rows.size),
        },  # fmt: skip
        "classifier_restored": clf_restored,
        "resumed": resumed,
        "gan_log": log,
        "seconds": {
            "classifier": round(t_clf - t0, 1),
            "gan": round(t_gan - t_clf, 1),
            "eval": round(t_eval - t_gan, 1),
            "total": round(time.time() - t0, 1),
        },  # fmt: skip
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "device": str(jax.devices()[0].platform),
    }
    atomic_write_json(os.path.join(workdir, "gwin_run.json"), run_info)
    print(protocol.markdown(rows), file=sys.stderr)
    return {
        "gwin_json": os.path.join(workdir, "gwin.json"),
        "accuracy": round(acc, 4),
        "critic_pool": run_info["n"]["critic_pool"],
        "rows": [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows
        ],  # fmt: skip
        "seconds": run_info["seconds"],
    }
