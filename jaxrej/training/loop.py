"""The training loop: optax Adam with linear warm-up and global-norm clipping, an EMA of the
params, ONE jitted train step, periodic evaluation, orbax checkpoints, resume, JSON-lines
metrics and a progress bar.

Determinism: the batch and the noise at step s are pure functions of (data, key, s)
(per-epoch permutations from fold_in(data_key, epoch), per-step keys from fold_in(step_key, s)),
so a run resumed from a checkpoint ends with exactly the params of an uninterrupted run.

Data parallelism (`TrainOptions.data_parallel`, on by default; used when more than one device
exists): a one-axis mesh "batch" over all devices (`jaxrej.batch_mesh()`); the params, the EMA,
the optimiser state and the (small, device-resident) training set are replicated, and each
step's batch is sharded over the mesh with a sharding constraint inside the one jitted step
(`jax.jit` with in/out shardings; XLA inserts the all-reduce of the gradient). The step is
written once for the global batch, so its random draws (batch rows, dequantization noise, t and
z) and its batch mean are those of single-device training: the result equals it up to float
rounding (the order of the cross-device sums), whatever the device count. shard_map with a
pmean would have to re-derive each device's slice of those draws and average loss, gradient
and gradient norm by hand. training.batch_size must be a multiple of the device count.

Multi-host (not tested here): call `jax.distributed.initialize()` first in every process; then
`jax.devices()`, and so `batch_mesh()`, span all hosts, and `train` works unchanged when every
process loads the same training set with the same key (it is replicated on every device). For
a training set too large to replicate, stream batches instead: every process draws the same
global row indices for step s (`batch_indices`), reads only its own contiguous block of them
(rows [p * B / P, (p + 1) * B / P) for process p of P), builds the global batch with
`jax.make_array_from_process_local_data(NamedSharding(mesh, P("batch")), local_rows)` (labels
likewise) and calls `make_batch_train_step(..., mesh=mesh)` with fold_in(step_key, s).
"""

from __future__ import annotations

import dataclasses
import functools
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
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrej.checks import check_int
from jaxrej.data.batching import padded_batches
from jaxrej.data.preprocessing import check_images, dequantize
from jaxrej.io import atomic_write_text
from jaxrej.training.checkpoint import (
    CHECKPOINT_DIR,
    checkpoint_manager,
    latest_step,
    restore_checkpoint,
    save_checkpoint,
    set_aside,
)
from jaxrej.training.losses import (
    REDUCES,
    WEIGHTINGS,
    class_ce_loss,
    class_denoising_losses,
    dsm_loss,
    label_gap,
)

METRICS_FILE = "metrics.jsonl"


@struct.dataclass
class TrainState:
    """step (), params, ema_params (EMA of params), opt_state (optax)."""

    step: jax.Array
    params: object
    ema_params: object
    opt_state: object


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """Plain values that define a DSM training run; __post_init__ names any bad value."""

    n_iters: int = 20_000
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 500
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    weight_decay: float = 0.0
    weighting: str = "plain"
    importance_sampling: bool = False
    reduce: str = "mean"
    eps: float = 1e-5
    augment_shift: int = 0  # `shift_augment`: random translations of up to this many pixels
    # losses.class_ce_loss on the first `class_ce_rows` rows of each batch, weighted (0: off);
    # num_classes is set from the data at the command boundary
    class_ce_weight: float = 0.0
    class_ce_rows: int = 16
    class_ce_t_min: float = 0.01
    class_ce_t_max: float = 1.0  # its draws on [t_min, t_max] (< 1: the scorer's label window)
    num_classes: int = 0
    log_every: int = 100
    eval_every: int = 1000
    checkpoint_every: int = 1000
    max_to_keep: int = 3
    data_parallel: bool = True
    label_gap_rows: int = 256

    def __post_init__(self):
        for n in ("n_iters", "batch_size", "log_every", "eval_every", "checkpoint_every",
                  "max_to_keep", "class_ce_rows"):  # fmt: skip
            check_int(f"training.{n}", getattr(self, n))
        for n in ("warmup", "augment_shift", "num_classes", "label_gap_rows"):
            check_int(f"training.{n}", getattr(self, n), minimum=0)
        w = self.class_ce_weight
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            raise ValueError(f"training.class_ce_weight: expected a number >= 0, got {w!r}")
        if w and self.num_classes < 2:
            raise ValueError(
                "training.class_ce_weight: needs num_classes >= 2 (set from the data), "
                f"got {self.num_classes!r}"
            )
        if w and self.class_ce_rows > self.batch_size:
            raise ValueError(
                f"training.class_ce_rows: expected <= batch_size={self.batch_size}, "
                f"got {self.class_ce_rows!r}"
            )
        if not (isinstance(self.class_ce_t_min, float) and 0.0 < self.class_ce_t_min < 1.0):
            raise ValueError(
                f"training.class_ce_t_min: expected a float in (0, 1), got {self.class_ce_t_min!r}"
            )
        t_max = self.class_ce_t_max
        if not (isinstance(t_max, float) and self.class_ce_t_min < t_max <= 1.0):
            raise ValueError(
                f"training.class_ce_t_max: expected a float in (class_ce_t_min="
                f"{self.class_ce_t_min}, 1], got {t_max!r}"
            )
        if not isinstance(self.data_parallel, bool):
            raise ValueError(
                f"training.data_parallel: expected True or False, got {self.data_parallel!r}"
            )
        for n in ("lr", "grad_clip"):
            v = getattr(self, n)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"training.{n}: expected a positive finite number, got {v!r}")
        if not (isinstance(self.ema_decay, (int, float)) and 0.0 <= self.ema_decay < 1.0):
            raise ValueError(f"training.ema_decay: expected 0 <= decay < 1, got {self.ema_decay!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"training.weight_decay: expected >= 0, got {self.weight_decay!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(
                f"training.weighting: expected one of {WEIGHTINGS}, got {self.weighting!r}"
            )
        if self.reduce not in REDUCES:
            raise ValueError(f"training.reduce: expected one of {REDUCES}, got {self.reduce!r}")
        if self.importance_sampling and self.weighting != "likelihood":
            raise ValueError(
                "training.importance_sampling: only defined with training.weighting='likelihood'"
            )
        if not (isinstance(self.eps, float) and 0.0 < self.eps < 1.0):
            raise ValueError(f"training.eps: expected a float in (0, 1), got {self.eps!r}")


def make_optimizer(
    *, lr: float, warmup: int, grad_clip: float, weight_decay: float = 0.0
) -> optax.GradientTransformation:
    """clip_by_global_norm(grad_clip) then Adam(W) with lr ramped linearly over `warmup` steps."""
    schedule = optax.linear_schedule(0.0, lr, warmup) if warmup > 0 else optax.constant_schedule(lr)
    adam = (
        optax.adamw(schedule, weight_decay=weight_decay)
        if weight_decay > 0
        else optax.adam(schedule)
    )
    return optax.chain(optax.clip_by_global_norm(grad_clip), adam)


def init_train_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    """Step 0: params (copied, so the jitted step may donate them), EMA = params, optimizer init."""
    params = jax.tree_util.tree_map(jnp.array, params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree_util.tree_map(jnp.copy, params),
        opt_state=optimizer.init(params),
    )


def batch_indices(step: jax.Array, n: int, batch_size: int, *, key: jax.Array) -> jax.Array:
    """Rows of step `step`: the (step mod E)-th slice of permutation fold_in(key, step // E),
    E = n // batch_size steps per epoch (the remainder rows of each epoch are skipped)."""
    per_epoch = n // batch_size
    perm = jax.random.permutation(jax.random.fold_in(key, step // per_epoch), n)
    return jax.lax.dynamic_slice(perm, ((step % per_epoch) * batch_size,), (batch_size,))


# TrainOptions fields only the loop reads (not a step): left out of a compiled step's key
LOOP_FIELDS = ("n_iters", "log_every", "eval_every", "checkpoint_every", "max_to_keep",
               "data_parallel", "label_gap_rows")  # fmt: skip


def step_options(opts: TrainOptions) -> TrainOptions:
    """`opts` with the `LOOP_FIELDS` at their defaults: the static key of the compiled step and
    eval loss, so that runs differing only there (a resumed run given more steps) share them."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainOptions)}
    return dataclasses.replace(opts, **{k: defaults[k] for k in LOOP_FIELDS})


def optimizer_from_options(opts: TrainOptions) -> optax.GradientTransformation:
    return make_optimizer(
        lr=opts.lr, warmup=opts.warmup, grad_clip=opts.grad_clip, weight_decay=opts.weight_decay
    )


BATCH_AXIS = "batch"  # the axis name of jaxrej.batch_mesh()


def data_mesh(opts: TrainOptions, devices=None) -> Mesh | None:
    """The data-parallel mesh of a run: a one-axis Mesh "batch" over `devices` (default: all
    devices) when opts.data_parallel and there is more than one device, else None. ValueError
    when training.batch_size is not a multiple of the device count."""
    devices = jax.devices() if devices is None else list(devices)
    if not opts.data_parallel or len(devices) < 2:
        return None
    if opts.batch_size % len(devices):
        raise ValueError(
            f"training.batch_size: {opts.batch_size} is not a multiple of the {len(devices)} "
            "devices the batch is sharded over; use a multiple of the device count or "
            "training.data_parallel=False"
        )
    return Mesh(np.asarray(devices), (BATCH_AXIS,))


def _shard_batch(mesh, *arrays):
    """The arrays with their leading (batch) axis sharded over `mesh` (unchanged if None)."""
    if mesh is None:
        return arrays
    s = NamedSharding(mesh, P(BATCH_AXIS))
    return tuple(jax.lax.with_sharding_constraint(a, s) for a in arrays)


def shift_augment(levels: jax.Array, max_shift: int, *, key: jax.Array) -> jax.Array:
    """Each image of levels (B, H, W, C) translated by its own integer (dy, dx), uniform in
    [-max_shift, max_shift]^2, the uncovered border filled with level 0 (the background)."""
    if levels.ndim != 4:
        raise ValueError(
            f"training.augment_shift: needs image batches (B, H, W, C), got shape {levels.shape}"
        )
    k = int(max_shift)
    b, h, w, c = levels.shape
    padded = jnp.pad(levels, ((0, 0), (k, k), (k, k), (0, 0)))
    d = jax.random.randint(key, (b, 2), 0, 2 * k + 1)

    def one(img, dyx):
        return jax.lax.dynamic_slice(img, (dyx[0], dyx[1], 0), (h, w, c))

    return jax.vmap(one)(padded, d)


def _dsm(opts: TrainOptions, score_fn, params, sde, x, labels, *, key, mask=None):
    """`dsm_loss` with the DSM fields of `opts` (weighting, importance sampling, eps, reduce)."""
    return dsm_loss(score_fn, params, sde, x, labels, key=key, weighting=opts.weighting,
                    importance_sampling=opts.importance_sampling, eps=opts.eps,
                    reduce=opts.reduce, mask=mask)  # fmt: skip


def _batch_update(state: TrainState, levels, labels, key, *, score_fn, sde, opts, n_levels, mesh):
    """One optimiser + EMA step on a batch of integer levels (B, *event) and labels (B,);
    `key` is the step's key (fold_in(step_key, step))."""
    optimizer = optimizer_from_options(opts)
    levels, labels = _shard_batch(mesh, levels, labels)
    if opts.augment_shift:
        key, aug_key = jax.random.split(key)
        levels = shift_augment(levels, opts.augment_shift, key=aug_key)
    dq_key, loss_key = jax.random.split(key)
    x = dequantize(levels, n_levels, key=dq_key)

    def loss_fn(params):
        dsm = _dsm(opts, score_fn, params, sde, x, labels, key=loss_key)
        if not opts.class_ce_weight:
            return dsm, {}
        r = opts.class_ce_rows
        ce = class_ce_loss(score_fn, params, sde, x[:r], labels[:r],
                           key=jax.random.fold_in(loss_key, 1), num_classes=opts.num_classes,
                           t_min=opts.class_ce_t_min, t_max=opts.class_ce_t_max)  # fmt: skip
        return dsm + opts.class_ce_weight * ce, {"dsm": dsm, "class_ce": ce}

    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    d = opts.ema_decay
    ema = jax.tree_util.tree_map(lambda e, p: d * e + (1.0 - d) * p, state.ema_params, params)
    new = TrainState(step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state)
    return new, {"loss": loss, "grad_norm": optax.tree.norm(grads), **parts}


def _step(state: TrainState, images, labels, key, *, score_fn, sde, opts, n_levels, mesh):
    data_key, step_key = jax.random.split(key)
    idx = batch_indices(state.step, images.shape[0], opts.batch_size, key=data_key)
    return _batch_update(state, images[idx], labels[idx], jax.random.fold_in(step_key, state.step),
                         score_fn=score_fn, sde=sde, opts=opts, n_levels=n_levels, mesh=mesh)  # fmt: skip


_STATIC = ("score_fn", "sde", "opts", "n_levels", "mesh")
_train_step = jax.jit(_step, static_argnames=_STATIC, donate_argnums=(0,))


@functools.lru_cache(maxsize=64)
def _jit_on_mesh(fn, mesh, sharded_batch: bool, **static):
    """fn(state, a, b, key, **static) jitted on `mesh`: state, key and outputs replicated; a and
    b replicated (a whole training set, the batch sharded inside by `_shard_batch`) or, with
    sharded_batch, a global batch sharded over "batch"; state donated."""
    rep = NamedSharding(mesh, P())
    data = NamedSharding(mesh, P(BATCH_AXIS)) if sharded_batch else rep
    return jax.jit(functools.partial(fn, mesh=mesh, **static), in_shardings=(rep, data, data, rep),
                   out_shardings=rep, donate_argnums=(0,))  # fmt: skip


def replicate(tree, mesh: Mesh | None):
    """`tree` placed whole on every device of `mesh` (unchanged if mesh is None)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, P()))


def make_train_step(
    score_fn: Callable, sde, opts: TrainOptions, *, n_levels: int, mesh: Mesh | None = None
) -> Callable:
    """The jitted step (state, images, labels, key) -> (state, metrics); state is donated.

    images: (N, *event) integer levels of the whole training set (device-resident);
    labels: (N,). The step gathers its batch (`batch_indices`), dequantizes it
    (preprocessing.dequantize), takes one step of `optimizer_from_options(opts)` on the DSM
    loss and updates the EMA:  ema <- decay * ema + (1 - decay) * params.
    mesh (`data_mesh`): shard the batch over the mesh's "batch" axis, everything else
    replicated (inputs are placed so; `replicate` them once to avoid a copy per step).
    One compilation is shared by every call with the same (score_fn, sde, opts, n_levels, mesh),
    opts compared without its `LOOP_FIELDS` (`step_options`).
    """
    static = dict(score_fn=score_fn, sde=sde, opts=step_options(opts), n_levels=n_levels)
    if mesh is None:
        return functools.partial(_train_step, mesh=None, **static)
    return _jit_on_mesh(_step, mesh, False, **static)


def make_batch_train_step(
    score_fn: Callable, sde, opts: TrainOptions, *, n_levels: int, mesh: Mesh | None = None
) -> Callable:
    """The jitted step (state, levels, labels, step_key) -> (state, metrics) on a given batch:
    levels (B, *event) integer levels, labels (B,), step_key the step's own key. With a mesh,
    levels and labels may be global arrays sharded over "batch" (the multi-host recipe in the
    module doc); the result equals make_train_step's when given its batch and
    fold_in(step_key, step)."""
    static = dict(score_fn=score_fn, sde=sde, opts=step_options(opts), n_levels=n_levels)
    if mesh is None:
        return jax.jit(functools.partial(_batch_update, mesh=None, **static), donate_argnums=(0,))
    return _jit_on_mesh(_batch_update, mesh, True, **static)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _eval_loss(params, images, labels, mask, key, *, score_fn, sde, opts, n_levels, mesh):
    images, labels, mask = _shard_batch(mesh, images, labels, mask)
    dq_key, loss_key = jax.random.split(key)
    x = dequantize(images, n_levels, key=dq_key)
    mean = _dsm(opts, score_fn, params, sde, x, labels, key=loss_key, mask=mask)
    n = jnp.sum(mask)
    return mean * n, n


def make_eval_loss(
    score_fn: Callable, sde, opts: TrainOptions, *, n_levels: int, mesh: Mesh | None = None
) -> Callable:
    """jitted (params, images, labels, mask, key) -> (sum of per-example DSM losses, count),
    the training objective (same weighting/sampling) on dequantized inputs."""
    return functools.partial(_eval_loss, score_fn=score_fn, sde=sde, opts=step_options(opts),
                             n_levels=n_levels, mesh=mesh)  # fmt: skip


def evaluate_loss(eval_fn, params, images, labels, *, batch_size: int, key: jax.Array) -> float:
    """Mean DSM loss over a whole split, in fixed-size padded batches with per-batch keys."""
    total, count = 0.0, 0.0
    for i, ((xb, yb), mask) in enumerate(padded_batches(images, labels, batch_size=batch_size)):
        s, n = eval_fn(params, xb, yb, mask, jax.random.fold_in(key, i))
        total += float(s)
        count += float(n)
    return total / count


@functools.partial(jax.jit, static_argnames=("score_fn", "sde", "num_classes", "eps"))
def _label_gap(params, x, y, mask, key, *, score_fn, sde, num_classes, eps):
    losses = class_denoising_losses(score_fn, params, sde, x, num_classes=num_classes, key=key,
                                    n_samples=8, weighting="likelihood", eps=eps)  # fmt: skip
    g = label_gap(losses, y)
    return jnp.sum(jnp.where(mask, g.gap, 0.0)), jnp.sum(mask & g.correct)


def evaluate_label_gap(score_fn, params, sde, images, labels, *, n_levels: int, num_classes: int,
                       key: jax.Array, eps: float = 1e-5, batch_size: int = 16) -> dict:  # fmt: skip
    """Does the model use its label? On (images, labels) at bin centres: `label_gap_nats`, the
    mean over rows of (the other classes' mean denoising bound - the true class's), nats, and
    `label_acc`, the accuracy of the class with the smallest bound (losses.label_gap), in padded
    batches of `batch_size` rows (each row costs 8 * num_classes network calls).
    Near 0 and near 1 / num_classes: the class-conditional scores ignore the label."""
    from jaxrej.data.preprocessing import center

    gap, correct, n = 0.0, 0, 0
    for i, ((xb, yb), mask) in enumerate(padded_batches(images, labels, batch_size=batch_size)):
        g, c = _label_gap(params, center(jnp.asarray(xb), n_levels), jnp.asarray(yb, jnp.int32),
                          jnp.asarray(mask), jax.random.fold_in(key, i), score_fn=score_fn,
                          sde=sde, num_classes=num_classes, eps=eps)  # fmt: skip
        gap, correct, n = gap + float(g), correct + int(c), n + int(np.sum(mask))
    return {"label_gap_nats": gap / n, "label_acc": correct / n}


def _all_finite(tree) -> bool:
    return bool(
        jax.device_get(
            jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))
        )
    )


def _read_metrics(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a kill: drop it and everything after
    return rows


def train(
    *,
    workdir: str,
    score_fn: Callable,
    sde,
    init_params,
    images: np.ndarray,
    labels: np.ndarray,
    n_levels: int,
    opts: TrainOptions,
    key: jax.Array,
    eval_images: np.ndarray | None = None,
    eval_labels: np.ndarray | None = None,
    progress: bool = True,
    on_step: Callable[[TrainState], None] | None = None,
) -> tuple[TrainState, dict]:
    """Train (or resume) a DSM score model; returns (final state, summary dict).

    workdir must exist. If workdir/checkpoints holds a checkpoint, training resumes from
    the newest intact one (the caller checks that the run's config matches); unreadable newer
    ones are named in a warning and moved to workdir/corrupt_checkpoints. Checkpoints every
    `opts.checkpoint_every` steps and at the end; metrics as JSON lines in workdir/metrics.jsonl
    (with eval data: eval_loss_ema and, on the first opts.label_gap_rows eval rows,
    `evaluate_label_gap`'s label_gap_nats and label_acc). With more than one device and
    opts.data_parallel, every step is data-parallel over all devices (`data_mesh`; module doc).
    `on_step(state)` is called after every step (tests use it to simulate a kill).
    """
    if not os.path.isdir(workdir):
        raise ValueError(f"workdir: no such directory {workdir!r}")
    images = np.asarray(images)
    labels = np.asarray(labels)
    check_images(images, n_levels)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"labels: expected {images.shape[0]} rows, got {labels.shape[0]}")
    if images.shape[0] < opts.batch_size:
        raise ValueError(
            f"training.batch_size: {opts.batch_size} exceeds the {images.shape[0]} training examples"
        )
    mesh = data_mesh(opts)
    state = init_train_state(init_params, optimizer_from_options(opts))
    ckpt_dir = os.path.join(workdir, CHECKPOINT_DIR)
    metrics_path = os.path.join(workdir, METRICS_FILE)
    start, kept = 0, []
    if latest_step(ckpt_dir) is not None:
        state, start = restore_checkpoint(ckpt_dir, state)  # the newest intact checkpoint
        with checkpoint_manager(ckpt_dir, create=False) as m:
            newer = [s for s in m.all_steps() if s > start]  # unreadable: skipped by the restore
        for path in set_aside(ckpt_dir, newer):
            print(f"jaxrej: moved the unreadable checkpoint to {path!r}", file=sys.stderr)
        kept = [r for r in _read_metrics(metrics_path) if r.get("step", 0) <= start]
        atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
    elif os.path.exists(metrics_path):
        atomic_write_text(metrics_path, "")
    train_key, eval_key = jax.random.split(key)
    step_fn = make_train_step(score_fn, sde, opts, n_levels=n_levels, mesh=mesh)
    eval_fn, gap_rows = None, None
    if eval_images is not None:
        eval_fn = make_eval_loss(score_fn, sde, opts, n_levels=n_levels, mesh=mesh)
        num_classes = int(max(labels.max(), np.max(eval_labels))) + 1
        if opts.label_gap_rows and num_classes >= 2:
            n_gap = min(opts.label_gap_rows, len(eval_labels))
            gap_rows = (np.asarray(eval_images)[:n_gap], np.asarray(eval_labels)[:n_gap])
    state = replicate(state, mesh)
    dev_images = replicate(jnp.asarray(images.astype(np.uint8 if n_levels <= 256 else np.int32)),
                           mesh)  # fmt: skip
    dev_labels = replicate(jnp.asarray(labels.astype(np.int32)), mesh)
    summary = {"start_step": start, "n_iters": opts.n_iters,
               "data_parallel_devices": 1 if mesh is None else int(mesh.size)}  # fmt: skip
    t0 = time.perf_counter()
    acc_loss, acc_n = 0.0, 0
    last = kept[-1] if kept else {}  # a finished run resumed reports its last logged row
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=opts.n_iters, initial=start, desc="train", dynamic_ncols=True)
    mngr = checkpoint_manager(ckpt_dir, max_to_keep=opts.max_to_keep)
    try:
        with open(metrics_path, "a") as mf:
            for step in range(start, opts.n_iters):
                state, m = step_fn(state, dev_images, dev_labels, train_key)
                if on_step is not None:
                    on_step(state)
                acc_loss = acc_loss + m["loss"]
                acc_n += 1
                s = step + 1
                row = None
                if s % opts.log_every == 0 or s == opts.n_iters:
                    loss = float(acc_loss) / acc_n
                    if not math.isfinite(loss):
                        raise ValueError(
                            f"training diverged: loss is {loss} at step {s} (lower training.lr?); "
                            f"no checkpoint written after step {mngr.latest_step()}"
                        )
                    row = {
                        "step": s,
                        "loss": loss,
                        "grad_norm": float(m["grad_norm"]),
                        "time_s": round(time.perf_counter() - t0, 3),
                    }
                    acc_loss, acc_n = 0.0, 0
                if eval_fn is not None and (s % opts.eval_every == 0 or s == opts.n_iters):
                    row = row or {"step": s, "time_s": round(time.perf_counter() - t0, 3)}
                    row["eval_loss_ema"] = evaluate_loss(
                        eval_fn,
                        state.ema_params,
                        eval_images,
                        eval_labels,
                        batch_size=opts.batch_size,
                        key=eval_key,
                    )
                    if gap_rows is not None:
                        row.update(evaluate_label_gap(
                            score_fn, state.ema_params, sde, *gap_rows, n_levels=n_levels,
                            num_classes=num_classes, key=jax.random.fold_in(eval_key, 1_000_003),
                            eps=opts.eps))  # fmt: skip
                if row is not None:
                    mf.write(json.dumps(row) + "\n")
                    mf.flush()
                    last = row
                    if bar is not None:
                        bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4f}")
                if s % opts.checkpoint_every == 0 or s == opts.n_iters:
                    if not _all_finite(state.params):
                        raise ValueError(
                            f"training diverged: non-finite params at step {s} (lower training.lr?); "
                            f"no checkpoint written after step {mngr.latest_step()}"
                        )
                    save_checkpoint(mngr, s, state)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        mngr.close()
    summary.update(
        {
            "final_step": int(state.step),
            "train_time_s": round(time.perf_counter() - t0, 2),
            "last_metrics": last,
        }
    )
    return state, summary
