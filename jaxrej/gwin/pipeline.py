"""The GWIN pipeline on a dataset (Cosentino & Zhu 2019), as one function of plain options.

    run(workdir, opts) -> GwinResult

1. the MC-dropout classifier (`mc_dropout`): trained on the training rows (on the rows not held
   out for the generator when opts.gen_inputs == "heldout"), checkpointed in
   WORKDIR/gwin_classifier and restored from there on a later call;
2. the conditional WGAN-GP (`wgan.train`): the critic sees the training rows classified correctly
   with certainty >= opts.tau_star, the generator learns on opts.gen_inputs; checkpointed in
   WORKDIR/gwin_checkpoints and resumed from the newest intact one;
3. the test split: every input rejected at max(opts.taus) is transformed and reclassified, and
   the tau table (`protocol.tau_table`) is computed for every tau.

Nothing else is written: the caller (`jaxrej gwin`) writes the table, the figures and the record.
Random keys: split from opts.seed (classifier, MC masks, GAN, transformation).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

from jaxrej.checks import check_int
from jaxrej.gwin.wgan import GEN_INPUTS, GanOptions

__all__ = ["ClassifierOptions", "GwinOptions", "GwinResult", "CLASSIFIER_DIR", "CHECKPOINT_DIR", "run"]  # fmt: skip

CLASSIFIER_DIR = "gwin_classifier"
CHECKPOINT_DIR = "gwin_checkpoints"


@dataclasses.dataclass(frozen=True)
class ClassifierOptions:
    """The MC-dropout classifier: preset name (`mc_dropout.PRESETS`), dropout rate, training
    (epochs, batch_size, learning_rate, weight_decay of AdamW) and MC samples at prediction."""

    name: str
    dropout: float
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    mc_samples: int

    def __post_init__(self):
        from jaxrej.gwin.mc_dropout import PRESETS

        if self.name not in PRESETS:
            raise ValueError(f"classifier.name: expected one of {sorted(PRESETS)}, got {self.name!r}")  # fmt: skip
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"classifier.dropout: expected a number in [0, 1), got {self.dropout!r}")  # fmt: skip
        for name in ("epochs", "batch_size", "mc_samples"):
            check_int(f"classifier.{name}", getattr(self, name))
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ValueError(f"classifier.learning_rate: expected a positive number, got {self.learning_rate!r}")  # fmt: skip
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"classifier.weight_decay: expected >= 0, got {self.weight_decay!r}")


@dataclasses.dataclass(frozen=True)
class GwinOptions:
    """One GWIN run: data and seed, the classifier, the GAN (training options `gan`, the critic's
    pool threshold `tau_star`, the generator's inputs and the two networks' sizes) and the
    evaluation (the taus of the table, the grid's tau and size, the prediction batch size)."""

    dataset: str
    seed: int
    classifier: ClassifierOptions
    gan: GanOptions
    tau_star: float
    gen_inputs: str
    heldout_fraction: float
    generator_hidden: tuple[int, ...]
    residual: bool
    critic_channels: tuple[int, ...]
    critic_dense: int
    taus: tuple[float, ...]
    grid_tau: float
    grid_size: int
    batch_size: int

    def __post_init__(self):
        if self.gen_inputs not in GEN_INPUTS:
            raise ValueError(f"gan.gen_inputs: expected one of {GEN_INPUTS}, got {self.gen_inputs!r}")  # fmt: skip
        if not self.taus:
            raise ValueError("eval.taus: expected at least one threshold")
        if not all(0.0 <= t <= 1.0 for t in self.taus):
            raise ValueError(f"eval.taus: expected thresholds in [0, 1], got {self.taus!r}")
        if not (0.0 < self.heldout_fraction < 1.0):
            raise ValueError(f"gan.heldout_fraction: expected a number in (0, 1), got {self.heldout_fraction!r}")  # fmt: skip
        for name in ("grid_size", "batch_size", "critic_dense"):
            check_int(name, getattr(self, name))


@dataclasses.dataclass(frozen=True)
class GwinResult:
    """rows: the tau table (`protocol.tau_table`); accuracy: the classifier's on the test split;
    n: row counts (train, classifier_train, test, critic_pool, generator_inputs);
    classifier_restored; gan_log: the GAN's logged metric rows; seconds per stage;
    grid: rejected test inputs at opts.grid_tau (up to opts.grid_size) -- arrays x, x_transformed
    (G, *event), labels, pred_before, pred_after (G,)."""

    rows: list[dict]
    accuracy: float
    n: dict
    classifier_restored: bool
    gan_log: list[dict]
    seconds: dict
    grid: dict


def _classifier(workdir, c: ClassifierOptions, x_train, y_train, num_classes, key, progress):
    """(model, state, restored): restored from WORKDIR/gwin_classifier, or trained and saved."""
    import jax.numpy as jnp

    from jaxrej import classifiers
    from jaxrej.gwin import mc_dropout
    from jaxrej.training.checkpoint import (
        checkpoint_manager,
        latest_step,
        restore_checkpoint,
        save_checkpoint,
    )

    model = mc_dropout.make_classifier(c.name, num_classes, dropout=c.dropout)
    state = classifiers.init(model, x_train[:1], key=key)
    state = state.replace(losses=jnp.zeros((c.epochs,)))
    ckpt = os.path.join(workdir, CLASSIFIER_DIR)
    if latest_step(ckpt) is not None:
        state, _ = restore_checkpoint(ckpt, state)
        return model, state, True
    if progress:
        print(f"jaxrej gwin: training the classifier ({c.epochs} epochs)", file=sys.stderr)
    state = classifiers.train(model, state, x_train, y_train, key=key, epochs=c.epochs,
                              batch_size=c.batch_size, learning_rate=c.learning_rate,
                              weight_decay=c.weight_decay, progress=progress)  # fmt: skip
    with checkpoint_manager(ckpt, max_to_keep=1) as mngr:
        save_checkpoint(mngr, c.epochs, state)
    return model, state, False


def run(workdir: str, opts: GwinOptions, *, progress: bool = True) -> GwinResult:
    """The pipeline of the module doc on opts.dataset (`jaxrej.data.registry`); checkpoints under
    `workdir` (created if missing)."""
    import jax

    from jaxrej.data.preprocessing import to_unit_interval
    from jaxrej.data.registry import load_dataset
    from jaxrej.gwin import mc_dropout, protocol, transform, wgan
    from jaxrej.reject import decide

    os.makedirs(workdir, exist_ok=True)
    t0 = time.time()
    train, test = load_dataset(opts.dataset, "train"), load_dataset(opts.dataset, "test")
    x_train = to_unit_interval(np.asarray(train.images), train.n_levels)
    x_test = to_unit_interval(np.asarray(test.images), test.n_levels)
    y_train, y_test = np.asarray(train.labels), np.asarray(test.labels)
    k_clf, k_mc, k_gan, k_t = jax.random.split(jax.random.key(opts.seed), 4)
    if opts.gen_inputs == "heldout":  # the generator learns on rows the classifier never saw
        clf_rows, held_rows = wgan.heldout_split(y_train, opts.heldout_fraction, seed=opts.seed)
    else:
        clf_rows = np.arange(y_train.size)

    model, clf, restored = _classifier(workdir, opts.classifier, x_train[clf_rows],
                                       y_train[clf_rows], train.num_classes, k_clf, progress)  # fmt: skip
    t_clf = time.time()

    def mc(x):
        return mc_dropout.mc_predict(model, clf.params, x, key=k_mc, n_samples=opts.classifier.mc_samples,
                                     batch_size=opts.batch_size)  # fmt: skip

    on_train = mc(x_train)
    pool = wgan.critic_pool(x_train, y_train, on_train.pred, on_train.certainty,
                            tau_star=opts.tau_star)  # fmt: skip
    if opts.gen_inputs == "heldout":
        gen_rows = held_rows
    else:
        gen_rows = wgan.generator_inputs(on_train.pred, on_train.certainty, y_train,
                                         which=opts.gen_inputs, tau_star=opts.tau_star)  # fmt: skip
    generator = wgan.Generator(event_shape=x_train.shape[1:], hidden=opts.generator_hidden,
                               residual=opts.residual)  # fmt: skip
    critic = wgan.Critic(num_classes=train.num_classes, channels=opts.critic_channels,
                         dense=opts.critic_dense)  # fmt: skip
    gan, log = wgan.train(ckpt_dir=os.path.join(workdir, CHECKPOINT_DIR), generator=generator,
                          critic=critic, classifier=model, clf_params=clf.params,
                          gen_images=x_train[gen_rows], gen_labels=y_train[gen_rows], pool=pool,
                          opts=opts.gan, key=k_gan, progress=progress)  # fmt: skip
    t_gan = time.time()

    before = mc(x_test)
    _, rejected_max = decide(before.probs, np.float32(max(opts.taus)))
    res = transform.transform_and_reclassify(
        lambda xb: mc(xb).probs,
        transform.generator_transform(generator, gan.g_params, opts.gan.noise_dim),
        x_test, before.probs, np.asarray(rejected_max), key=k_t, batch_size=opts.batch_size,
    )  # fmt: skip
    pred_before, pred_after = np.asarray(before.pred), np.asarray(res.pred_after)
    rows = protocol.tau_table(y_test, before.probs, pred_after, opts.taus)
    t_eval = time.time()

    grid = np.flatnonzero(np.asarray(before.certainty) < opts.grid_tau)[: opts.grid_size]
    grid = grid[pred_after[grid] >= 0]  # a grid_tau above max(taus): rows never transformed
    return GwinResult(
        rows=rows,
        accuracy=float(np.mean(pred_before == y_test)),
        n={
            "train": int(y_train.size),
            "classifier_train": int(clf_rows.size),
            "test": int(y_test.size),
            "critic_pool": int(pool.labels.shape[0]),
            "generator_inputs": int(gen_rows.size),
        },  # fmt: skip
        classifier_restored=restored,
        gan_log=log,
        seconds={
            "classifier": round(t_clf - t0, 1),
            "gan": round(t_gan - t_clf, 1),
            "eval": round(t_eval - t_gan, 1),
            "total": round(time.time() - t0, 1),
        },  # fmt: skip
        grid={
            "x": x_test[grid],
            "x_transformed": np.asarray(res.x_transformed)[grid],
            "labels": y_test[grid],
            "pred_before": pred_before[grid],
            "pred_after": pred_after[grid],
        },  # fmt: skip
    )
