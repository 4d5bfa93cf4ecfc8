"""Training of the ABS model: every class's VAE by its ELBO, on class-balanced batches, plus the
E-ABS discriminative term (switchable). Python loop over ONE jitted step (a conv decoder runs
lax's convolutions here, one class at a time: `decode_class_rows`); orbax checkpoints every
`checkpoint_every` steps and at the end; resumes bit-identically from the newest intact one
(batches come from fold_in(key, step), so a resumed run sees the same batches).

Per step, a batch of `per_class` rows of every class for every decoder (C M per_class rows,
pixels x in [0, 1]; with M members per class, each member draws its own rows of its class):

    elbo(x, y) = E_{q(z|x,y)} log p(x | H_y(z)) - KL(q(z|x,y) || N(0, I))   (one sample; `bound`)
    s_c(x)     = log_joint(x, H_c(m_c), m_c),  m_c = the encoder's mean for class c   (every class)
    disc(x, y) = relu(margin - (s_y - max_{c != y} s_c))                              (E-ABS)
    loss       = mean(-beta-weighted elbo + disc_weight * disc) / D

The discriminative term pushes each decoder away from reconstructing the other classes' digits
(the out-of-domain reconstructions the E-ABS paper names as ABS's failure mode) and trains the
encoder that initialises the test-time latent search. Without an encoder q is N(m, I) with m
the bank's best latent (plain ABS training is then closer to an autoencoder; keep the encoder).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxrej.abs import bound
from jaxrej.abs.latent import binarize
from jaxrej.abs.model import ABSModel, class_params, decode_raw, encode
from jaxrej.data.augment import random_affine
from jaxrej.io import atomic_write_text
from jaxrej.training.checkpoint import (
    CHECKPOINT_DIR,
    checkpoint_manager,
    latest_step,
    restore_checkpoint,
    save_checkpoint,
    set_aside,
)

METRICS_FILE = "metrics.jsonl"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ABSTrainOptions:
    """n_iters: steps; per_class: rows of each class per batch; lr (Adam) with lr_schedule
    'cosine' | 'constant'; beta: KL weight; disc_weight / margin (nats): the E-ABS
    discriminative term (0: off); checkpoint_every, log_every, max_to_keep; eval_every /
    eval_rows: every eval_every steps the accuracy of the cheap scorer on the first eval_rows
    evaluation rows is logged (0: never); disc_start: the step the discriminative term starts
    at (two jitted steps, picked by step: a resume picks the same); disc_latent: the latent
    each class is scored at in that term: 'encoder' (its mean) or 'bank' (the better of the
    encoder's mean and the best of disc_bank fresh N(0, I) latents: the test-time search's
    start, so the term trains against what the search will find); augment_rotate (degrees),
    augment_scale (fraction), augment_shift (pixels): each training row is warped by its own
    random affine map of at most these sizes (`jaxrej.data.augment.random_affine`; all 0: off)."""

    n_iters: int = 6000
    per_class: int = 32
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    beta: float = 1.0
    disc_weight: float = 0.0
    margin: float = 50.0
    checkpoint_every: int = 1000
    log_every: int = 100
    max_to_keep: int = 2
    eval_every: int = 0
    eval_rows: int = 0
    disc_start: int = 0
    disc_latent: str = "bank"
    disc_bank: int = 256
    augment_rotate: float = 0.0
    augment_scale: float = 0.0
    augment_shift: float = 0.0

    def __post_init__(self):
        for name in ("n_iters", "per_class", "checkpoint_every", "log_every", "max_to_keep"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"training.{name}: expected an int >= 1, got {v!r}")
        for name in ("eval_every", "eval_rows", "disc_start"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"training.{name}: expected an int >= 0, got {v!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(
                f"training.lr_schedule: expected cosine|constant, got {self.lr_schedule!r}"
            )
        for name in ("lr", "beta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"training.{name}: expected > 0, got {getattr(self, name)!r}")
        if (
            isinstance(self.disc_bank, bool)
            or not isinstance(self.disc_bank, int)
            or self.disc_bank < 1
        ):
            raise ValueError(f"training.disc_bank: expected an int >= 1, got {self.disc_bank!r}")
        if self.disc_latent not in ("encoder", "bank"):
            raise ValueError(
                f"training.disc_latent: expected encoder|bank, got {self.disc_latent!r}"
            )
        for name in ("augment_rotate", "augment_scale", "augment_shift"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"training.{name}: expected a number >= 0, got {v!r}")
        if not self.augment_scale < 1:
            raise ValueError(f"training.augment_scale: expected < 1, got {self.augment_scale!r}")
        if self.disc_weight < 0 or self.margin < 0:
            raise ValueError("training.disc_weight / training.margin: expected >= 0")


class ABSTrainState(struct.PyTreeNode):
    step: jax.Array
    params: dict
    opt_state: optax.OptState


def optimizer(opts: ABSTrainOptions) -> optax.GradientTransformation:
    lr = opts.lr
    if opts.lr_schedule == "cosine":
        lr = optax.cosine_decay_schedule(opts.lr, opts.n_iters, alpha=0.02)
    return optax.chain(optax.clip_by_global_norm(10.0), optax.adam(lr))


def batch_loss(model: ABSModel, params: dict, x: jax.Array, *, key: jax.Array,
               opts: ABSTrainOptions) -> tuple[jax.Array, dict]:  # fmt: skip
    """Mean loss (module doc, per pixel) of a decoder-major batch x (C M, n, D): row x[i, j] is
    of decoder i's class, so each decoder runs as one matmul chain on its own rows."""
    C, n, D = x.shape
    flat = x.reshape(C * n, D)
    mu, logvar = jax.vmap(lambda xi: encode(model, params["enc"], xi))(flat)  # (C n, C, d)
    own = lambda a: jax.vmap(lambda ac, c: ac[:, c])(a.reshape(C, n, C, -1), jnp.arange(C))  # noqa: E731
    m, lv = own(mu), own(logvar)  # (C, n, d)
    z = m + jnp.exp(0.5 * lv) * jax.random.normal(key, m.shape)
    rec_fn = jax.vmap(jax.vmap(lambda xi, hi: bound.log_likelihood(model, xi, hi)))
    rec = rec_fn(x, decode_class_rows(model, params["dec"], z))  # (C, n)
    kl = 0.5 * jnp.sum(jnp.exp(lv) + m * m - 1.0 - lv, axis=-1)
    loss = -(rec - opts.beta * kl)
    out = {"elbo": jnp.mean(rec - kl)}
    if opts.disc_weight > 0:
        mc = jnp.swapaxes(mu, 0, 1)  # (C, C n, d): every row's latent for class c
        if opts.disc_latent == "bank":
            mc = jax.lax.stop_gradient(_bank_latents(model, params["dec"], flat, mc, opts, key))
        s = jax.vmap(jax.vmap(lambda xi, hi, zi: bound.log_joint(model, xi, hi, zi)),
                     in_axes=(None, 0, 0))(flat, decode_class_rows(model, params["dec"], mc), mc)  # fmt: skip
        s = s.T.reshape(C, n, C)  # [c, i, c']: row (c, i) scored by class c'
        own_s = own(s[..., None])[..., 0]
        other = jnp.max(jnp.where(jnp.eye(C, dtype=bool)[:, None, :], -jnp.inf, s), axis=-1)
        gap = own_s - other
        loss = loss + opts.disc_weight * jax.nn.relu(opts.margin - gap)
        out |= {"gap": jnp.mean(gap), "amortised_correct": jnp.mean(gap > 0)}
    return jnp.mean(loss) / D, out


def decode_class_rows(model: ABSModel, dec, z: jax.Array) -> jax.Array:
    """Raw outputs (C, n, D) of every class's decoder (stacked params) on its own latents z
    (C, n, d). An MLP decoder runs vmapped over the classes; a conv decoder runs lax's
    convolutions class by class (a Python loop unrolled in the jitted step): vmapped over the
    classes' kernels they would become one grouped convolution, which XLA:CPU runs far slower
    than the matmul form, where ten plain ones run faster than it."""
    if model.decoder != "conv":
        return jax.vmap(jax.vmap(lambda p, zi: decode_raw(model, p, zi), in_axes=(None, 0)))(dec, z)
    rows = lambda p, zc: jax.vmap(lambda zi: decode_raw(model, p, zi, conv_impl="lax"))(zc)  # noqa: E731
    return jnp.stack([rows(class_params(dec, c), z[c]) for c in range(z.shape[0])])


def _bank_latents(model, dec, flat, mc, opts, key):
    """Per row and class, the better (log joint) of the encoder's mean mc (C, R, d) and the best
    of opts.disc_bank fresh N(0, I) latents -> (C, R, d); no gradient flows through the choice."""
    dec = jax.lax.stop_gradient(dec)
    zb = jax.random.normal(jax.random.fold_in(key, 1), (opts.disc_bank, model.latent_dim))
    h = decode_class_rows(
        model, dec, jnp.broadcast_to(zb, (model.n_decoders, *zb.shape))
    )  # (C, K, D)
    lin, offset = bound.linear_terms(model, h)
    lj = jnp.einsum("ckd,rd->crk", lin, flat) + offset[:, None, :] - 0.5 * jnp.sum(zb**2, -1)
    best = jnp.argmax(lj, axis=-1)  # (C, R)
    zbest, lj_best = zb[best], jnp.max(lj, axis=-1)
    h_enc = decode_class_rows(model, dec, mc)
    lin_e, offset_e = bound.linear_terms(model, h_enc)
    lj_enc = jnp.einsum("crd,rd->cr", lin_e, flat) + offset_e - 0.5 * jnp.sum(mc**2, -1)
    return jnp.where((lj_enc >= lj_best)[..., None], mc, zbest)


def _batch(images, table, counts, per_class, key, n_levels):
    """Class-balanced rows: images (N, D) integer levels on device, table (C M, max_n) row indices
    of each decoder's class, counts (C M,) -> x (C M, per_class, D) in [0, 1] (row [i, j] of
    decoder i's class)."""
    u = jax.random.uniform(key, (table.shape[0], per_class))
    j = jnp.minimum((u * counts[:, None]).astype(jnp.int32), counts[:, None] - 1)
    rows = jnp.take_along_axis(table, j, axis=1)  # (C, per_class)
    return images[rows].astype(jnp.float32) / (n_levels - 1)


def make_step(model: ABSModel, opts: ABSTrainOptions, tx: optax.GradientTransformation, *,
              n_levels: int = 256) -> Callable:  # fmt: skip
    """jitted (state, images, table, counts, key) -> (state, metrics); the step's key is
    fold_in(key, state.step); pixels x = k / (n_levels - 1)."""

    def step(state, images, table, counts, key):
        k = jax.random.fold_in(key, state.step)
        k_batch, k_noise = jax.random.split(k)
        x = _batch(images, table, counts, opts.per_class, k_batch, n_levels)
        if opts.augment_rotate or opts.augment_scale or opts.augment_shift:
            imgs = random_affine(x.reshape(-1, *model.event_shape), jax.random.fold_in(k_batch, 1),
                                 max_rotate=opts.augment_rotate, max_scale=opts.augment_scale,
                                 max_shift=opts.augment_shift)  # fmt: skip
            x = imgs.reshape(x.shape)
        if model.binarize is not None:  # binary ABS trains on what it scores
            x = binarize(x, model.binarize)

        def loss_fn(params):
            return batch_loss(model, params, x, key=k_noise, opts=opts)

        (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        upd, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, upd)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        metrics |= out
        return ABSTrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return jax.jit(step)


def _class_table(labels: np.ndarray, num_classes: int,
                 members: int = 1) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(table (C M, max_n) of each decoder's class's row indices, counts (C M,))."""
    counts = np.bincount(labels, minlength=num_classes)
    if counts.min() < 1:
        raise ValueError(f"labels: every class needs training rows, counts {counts.tolist()}")
    table = np.zeros((num_classes, counts.max()), np.int32)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        table[c, : len(idx)] = idx
    return np.repeat(table, members, axis=0), np.repeat(counts, members).astype(np.int32)


def _read_metrics(path: str) -> list[dict]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []


def train(*, workdir: str, model: ABSModel, init_params: dict, images: np.ndarray,
          labels: np.ndarray, opts: ABSTrainOptions, key: jax.Array, n_levels: int = 256,
          progress: bool = True, evaluate: Callable[[dict], dict] | None = None,
          on_step: Callable[[ABSTrainState], None] | None = None) -> tuple[ABSTrainState, dict]:  # fmt: skip
    """Train (or resume) in workdir (must exist); images (N, H, W, ch) integer levels
    < n_levels, labels (N,). Writes workdir/checkpoints/ and workdir/metrics.jsonl;
    `evaluate(params)` (every opts.eval_every steps and at the end) adds its dict to the logged row; `on_step(state)`
    runs after every step (tests simulate a kill with it). Returns (state, summary)."""
    if not os.path.isdir(workdir):
        raise ValueError(f"workdir: no such directory {workdir!r}")
    images, labels = np.asarray(images), np.asarray(labels)
    if images.shape[1:] != tuple(model.event_shape) or not np.issubdtype(images.dtype, np.integer):
        raise ValueError(f"images: expected integer levels (N, {tuple(model.event_shape)}), got "
                         f"{images.dtype} {images.shape}")  # fmt: skip
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels: expected ({images.shape[0]},), got {labels.shape}")
    if model.members > 1 and opts.disc_weight > 0:
        raise ValueError("training.disc_weight: the discriminative term is not defined for "
                         f"model.members = {model.members} > 1 (a class's members are not rivals)")  # fmt: skip
    table, counts = _class_table(labels, model.num_classes, model.members)
    tx = optimizer(opts)
    state = ABSTrainState(step=jnp.asarray(0, jnp.int32), params=init_params,
                          opt_state=tx.init(init_params))  # fmt: skip
    ckpt_dir = os.path.join(workdir, CHECKPOINT_DIR)
    metrics_path = os.path.join(workdir, METRICS_FILE)
    start, kept = 0, []
    if latest_step(ckpt_dir) is not None:
        state, start = restore_checkpoint(ckpt_dir, state)
        with checkpoint_manager(ckpt_dir, create=False) as m:
            newer = [s for s in m.all_steps() if s > start]
        for path in set_aside(ckpt_dir, newer):
            print(f"jaxrej: moved the unreadable checkpoint to {path!r}", file=sys.stderr)
        kept = [r for r in _read_metrics(metrics_path) if r.get("step", 0) <= start]
        atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
    elif os.path.exists(metrics_path):
        atomic_write_text(metrics_path, "")
    with_disc = make_step(model, opts, tx, n_levels=n_levels)
    plain = with_disc
    if opts.disc_start > 0 and opts.disc_weight > 0:
        plain = make_step(model, dataclasses.replace(opts, disc_weight=0.0), tx, n_levels=n_levels)
    dev = jnp.asarray(images.reshape(images.shape[0], -1))
    table, counts = jnp.asarray(table), jnp.asarray(counts)
    summary = {"start_step": start, "n_iters": opts.n_iters}
    last = kept[-1] if kept else {}
    t0 = time.perf_counter()
    acc = {}
    from tqdm.auto import tqdm

    bar = tqdm(total=opts.n_iters, initial=start, desc="train abs", dynamic_ncols=True,
               disable=not progress)  # fmt: skip
    mngr = checkpoint_manager(ckpt_dir, max_to_keep=opts.max_to_keep)
    try:
        with open(metrics_path, "a") as mf:
            for step in range(start, opts.n_iters):
                step_fn = with_disc if step >= opts.disc_start else plain
                state, m = step_fn(state, dev, table, counts, key)
                if on_step is not None:
                    on_step(state)
                for k, v in m.items():
                    total, count = acc.get(k, (0.0, 0))
                    acc[k] = (total + v, count + 1)
                s = step + 1
                row = None
                if s % opts.log_every == 0 or s == opts.n_iters:
                    row = {"step": s, **{k: float(t) / c for k, (t, c) in acc.items()},
                           "time_s": round(time.perf_counter() - t0, 3)}  # fmt: skip
                    acc = {}
                    if not math.isfinite(row["loss"]):
                        raise ValueError(f"training diverged: loss {row['loss']} at step {s} "
                                         "(lower training.lr?)")  # fmt: skip
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                ev = opts.eval_every
                if evaluate is not None and ev and (s % ev == 0 or s == opts.n_iters):
                    row = (row or {"step": s}) | evaluate(state.params)
                if row is not None:
                    mf.write(json.dumps(row) + "\n")
                    mf.flush()
                    last = row
                if s % opts.checkpoint_every == 0 or s == opts.n_iters:
                    save_checkpoint(mngr, s, state)
                bar.update(1)
    finally:
        bar.close()
        mngr.close()
    summary |= {"final_step": int(state.step), "train_time_s": round(time.perf_counter() - t0, 2),
                "last_metrics": last}  # fmt: skip
    return state, summary
