"""The GWIN pipeline on a dataset (Cosentino & Zhu 2019), as one function of plain options.

    run(workdir, opts) -> GwinResult

0. the validation rows (`validation_split`): a stratified opts.val_fraction of the training rows
   that nothing below trains on; settings are chosen on their table;
1. the MC-dropout classifier (`mc_dropout`): trained on the other training rows (on those not
   held out for the generator when opts.gen_inputs == "heldout"), checkpointed in
   WORKDIR/gwin_classifier and restored from there on a later call;
2. the conditional WGAN-GP (`wgan.train`): the critic sees the training rows classified correctly
   with certainty >= opts.tau_star, the generator learns on opts.gen_inputs; checkpointed in
   WORKDIR/gwin_checkpoints and resumed from the newest intact one; every gan.log_every steps
   the trace records what the generator does to the validation rows and to its own inputs;
3. the validation rows, then (only with opts.test) the test split: every input rejected at
   max(opts.taus) is transformed and reclassified, and the tau table (`protocol.tau_table`) and
   `transform_stats` are computed. Without opts.test the test split is never loaded.

Nothing else is written: the caller (`jaxrej gwin`) writes the tables, the figures and the record.
Random keys: split from opts.seed (classifier, MC masks, GAN, transformation); the row splits
come from numpy generators seeded with opts.seed.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

from jaxrej.checks import check_int
from jaxrej.gwin import protocol, wgan
from jaxrej.gwin.wgan import GEN_INPUTS, GanOptions

__all__ = ["ClassifierOptions", "GwinOptions", "GwinResult", "CLASSIFIER_DIR", "CHECKPOINT_DIR",
           "validation_split", "transform_stats", "run"]  # fmt: skip

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
    val_fraction: float = 0.2
    test: bool = True

    def __post_init__(self):
        if self.gen_inputs not in GEN_INPUTS:
            raise ValueError(f"gan.gen_inputs: expected one of {GEN_INPUTS}, got {self.gen_inputs!r}")  # fmt: skip
        if not self.taus:
            raise ValueError("eval.taus: expected at least one threshold")
        if not all(0.0 <= t <= 1.0 for t in self.taus):
            raise ValueError(f"eval.taus: expected thresholds in [0, 1], got {self.taus!r}")
        if not (0.0 < self.val_fraction < 1.0):
            raise ValueError(f"data.val_fraction: expected a number in (0, 1), got {self.val_fraction!r}")  # fmt: skip
        if not (0.0 < self.heldout_fraction < 1.0):
            raise ValueError(f"gan.heldout_fraction: expected a number in (0, 1), got {self.heldout_fraction!r}")  # fmt: skip
        for name in ("grid_size", "batch_size", "critic_dense"):
            check_int(name, getattr(self, name))


@dataclasses.dataclass(frozen=True)
class GwinResult:
    """val_rows: the tau table (`protocol.tau_table`) on the validation rows (`validation_split`),
    where settings are chosen; rows: the same on the test split (None unless opts.test);
    accuracy / val_accuracy: the classifier's on the test split (None unless opts.test) / on the
    validation rows; stats: `transform_stats` less its rows, per split ("validation", "test");
    trace: every gan.log_every steps, those stats on the validation rows ("val") and on the
    generator's own training inputs ("gen"), with acc_rejected {tau: [before, after]};
    n: row counts (train, validation, classifier_train, test, critic_pool, generator_inputs);
    classifier_restored; gan_log: the GAN's logged metric rows; seconds per stage;
    grid: rejected inputs at opts.grid_tau of the test split (of the validation rows without
    opts.test), up to opts.grid_size -- split, arrays x, x_transformed (G, *event), labels,
    pred_before, pred_after (G,)."""

    rows: list[dict] | None
    val_rows: list[dict]
    accuracy: float | None
    val_accuracy: float
    stats: dict
    trace: list[dict]
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


def validation_split(labels, fraction: float, *, seed: int):
    """(fit_rows, val_rows): sorted int arrays that partition range(N) for the training labels
    (N,); val_rows holds round(fraction * n_c) rows of every class c (`wgan.heldout_split` with
    its own random stream, (seed, 1)). Settings are chosen on val_rows; nothing is trained on
    them: the classifier, the critic's pool and the generator's inputs come from fit_rows."""
    return wgan.heldout_split(labels, fraction, seed=(seed, 1))


def transform_stats(labels, before, after, x, x_transformed, taus) -> dict:
    """What the transformation did to the rows it transformed (those rejected at max(taus)):
    labels (N,); before, after: `MCPrediction`s of the inputs and of their transformations (N,)
    (after's rows outside the rejected set are ignored); x, x_transformed (N, *event).

    rows:        the tau table (`protocol.tau_table`)
    n:           rows transformed; changed / fixed / broken: their prediction changed, went from
                 wrong to right, from right to wrong; wrong_before: wrong before (at most
                 this many can be fixed)
    move_l2:     mean and max over those rows of ||G(x) - x||_2 (pixels in [0, 1])
    certainty:   mean certainty before and after; p_true: mean probability of the true class
                 before and after."""
    import numpy as np

    from jaxrej.reject import decide

    labels = np.asarray(labels)
    _, rej = decide(before.probs, np.float32(max(taus)))
    rej = np.asarray(rej)
    pb, pa = np.asarray(before.pred), np.asarray(after.pred)
    pred_after = np.where(rej, pa, -1)
    d = np.sqrt(np.sum(np.square(np.asarray(x_transformed) - np.asarray(x)).reshape(len(labels), -1), -1))  # fmt: skip
    p_b, p_a = np.asarray(before.probs), np.asarray(after.probs)
    idx = np.arange(len(labels))
    r = rej

    def mean(v):
        return float(np.mean(v[r])) if r.any() else None

    return {
        "rows": protocol.tau_table(labels, before.probs, pred_after, taus),
        "n": int(r.sum()),
        "changed": int(np.sum(r & (pa != pb))),
        "fixed": int(np.sum(r & (pb != labels) & (pa == labels))),
        "broken": int(np.sum(r & (pb == labels) & (pa != labels))),
        "wrong_before": int(np.sum(r & (pb != labels))),
        "move_l2": mean(d),
        "move_l2_max": float(d[r].max()) if r.any() else None,
        "certainty_before": mean(np.asarray(before.certainty)),
        "certainty_after": mean(np.asarray(after.certainty)),
        "p_true_before": mean(p_b[idx, labels]),
        "p_true_after": mean(p_a[idx, labels]),
    }


def run(workdir: str, opts: GwinOptions, *, progress: bool = True) -> GwinResult:
    """The pipeline of the module doc on opts.dataset (`jaxrej.data.registry`); checkpoints under
    `workdir` (created if missing)."""
    import jax

    from jaxrej.data.preprocessing import to_unit_interval
    from jaxrej.data.registry import load_dataset
    from jaxrej.gwin import mc_dropout, transform
    from jaxrej.reject import decide

    os.makedirs(workdir, exist_ok=True)
    t0 = time.time()
    train = load_dataset(opts.dataset, "train")
    x_all = to_unit_interval(np.asarray(train.images), train.n_levels)
    y_all = np.asarray(train.labels)
    fit, val = validation_split(y_all, opts.val_fraction, seed=opts.seed)
    x_train, y_train, x_val, y_val = x_all[fit], y_all[fit], x_all[val], y_all[val]
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
    tau_max = np.float32(max(opts.taus))

    def evaluate(g_params, x, y, before):
        """transform_stats of the rows of x rejected at max(taus), and the transformation."""
        _, rej = decide(before.probs, tau_max)
        res = transform.transform_and_reclassify(
            lambda xb: mc(xb).probs, transform.generator_transform(generator, g_params, opts.gan.noise_dim),
            x, before.probs, np.asarray(rej), key=k_t, batch_size=opts.batch_size,
        )  # fmt: skip
        after = mc(res.x_transformed)  # only the rejected rows' entries are read
        return transform_stats(y, before, after, x, res.x_transformed, opts.taus), res

    val_before = mc(x_val)
    gen_before = mc(x_train[gen_rows])
    trace: list[dict] = []

    def on_step(state):  # the validation trace: what the generator does as it trains
        s = int(state.step)
        if s % opts.gan.log_every and s != opts.gan.n_steps:
            return
        row = {"step": s}
        for name, x, y, before in (("val", x_val, y_val, val_before),
                                   ("gen", x_train[gen_rows], y_train[gen_rows], gen_before)):  # fmt: skip
            st, _ = evaluate(state.g_params, x, y, before)
            rows = st.pop("rows")
            st["acc_rejected"] = {f"{r['tau']:g}": [r["acc_rejected_before"], r["acc_rejected_after"]]
                                  for r in rows if r["n_rejected"]}  # fmt: skip
            row[name] = st
        trace.append(row)

    gan, log = wgan.train(ckpt_dir=os.path.join(workdir, CHECKPOINT_DIR), generator=generator,
                          critic=critic, classifier=model, clf_params=clf.params,
                          gen_images=x_train[gen_rows], gen_labels=y_train[gen_rows], pool=pool,
                          opts=opts.gan, key=k_gan, progress=progress, on_step=on_step)  # fmt: skip
    t_gan = time.time()

    val_stats, res_g = evaluate(gan.g_params, x_val, y_val, val_before)
    val_rows = val_stats.pop("rows")
    test_rows = test_stats = accuracy = None
    x_g, y_g, before_g = x_val, y_val, val_before
    if opts.test:  # the test rows are read only here, after every setting is fixed
        test = load_dataset(opts.dataset, "test")
        x_g = to_unit_interval(np.asarray(test.images), test.n_levels)
        y_g = np.asarray(test.labels)
        before_g = mc(x_g)
        test_stats, res_g = evaluate(gan.g_params, x_g, y_g, before_g)
        test_rows = test_stats.pop("rows")
        accuracy = float(np.mean(np.asarray(before_g.pred) == y_g))
    t_eval = time.time()

    pred_before, pred_after = np.asarray(before_g.pred), np.asarray(res_g.pred_after)
    grid = np.flatnonzero(np.asarray(before_g.certainty) < opts.grid_tau)[: opts.grid_size]
    grid = grid[pred_after[grid] >= 0]  # a grid_tau above max(taus): rows never transformed
    return GwinResult(
        rows=test_rows,
        val_rows=val_rows,
        accuracy=accuracy,
        val_accuracy=float(np.mean(np.asarray(val_before.pred) == y_val)),
        stats={"validation": val_stats, "test": test_stats},
        trace=trace,
        n={
            "train": int(y_all.size),
            "validation": int(val.size),
            "classifier_train": int(clf_rows.size),
            "test": None if test_rows is None else int(y_g.size),
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
            "split": "test" if opts.test else "validation",
            "x": x_g[grid],
            "x_transformed": np.asarray(res_g.x_transformed)[grid],
            "labels": y_g[grid],
            "pred_before": pred_before[grid],
            "pred_after": pred_after[grid],
        },  # fmt: skip
    )
