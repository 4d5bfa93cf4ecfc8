"""The conditional WGAN-GP of GWIN (Cosentino & Zhu 2019, Sec. 3.2; Gulrajani et al. 2017).

Generator G(x, z): the observation flattened and concatenated with noise z ~ N(0, I) -> MLP ->
sigmoid, an image in (0, 1)^D. Critic D(x, y): the one-hot label concatenated depth-wise to its
input and to every hidden layer. With generator inputs (x, y) drawn from the training set
(`generator_inputs`) and real examples x_r drawn, class by class (same y), from the critic pool --
the training examples the classifier labels correctly with certainty >= tau* (`critic_pool`) --
the losses are

    L_D = E[D(G(x, z), y)] - E[D(x_r, y)] + lambda_GP E[(||grad_x D(x_hat, y)||_2 - 1)^2],
          x_hat = e x_r + (1 - e) G(x, z),  e ~ U[0, 1]                          (WGAN-GP eq. 3)
    L_G = -E[D(G(x, z), y)] + lambda_Loss E[Loss(C(G(x, z)), y)]                (GWIN eq. 2)

with n_critic critic steps per generator step, Adam(lr, b1, b2) for both (WGAN-GP: 1e-4, 0, 0.9).
Loss (`transformation_penalty`) is the cross-entropy of the classifier with dropout off
(clf_samples = 0) or -log of its MC-dropout predictive over clf_samples fresh dropout draws, so
a perturbation that fools one deterministic network does not pay. Options beyond the paper: the
generator's inputs x may be `corrupt`ed (random translation, Gaussian noise) before G sees them,
and they may be all training rows, only the uncertain ones (`generator_inputs`), or rows held
out of the classifier's training (`heldout_split`): inputs it has not memorised, where the
transformation penalty has something to teach. One jitted step
does all n_critic + 1 updates; the randomness of step s is fold_in(key, s), so a resumed run ends with exactly the
parameters of an uninterrupted one (`train`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxrej.checks import check_int

__all__ = [
    "Generator",
    "Critic",
    "GanOptions",
    "GanState",
    "CriticPool",
    "critic_pool",
    "GEN_INPUTS",
    "heldout_split",
    "generator_inputs",
    "sample_real",
    "interpolate",
    "corrupt",
    "transformation_penalty",
    "gradient_norms",
    "gradient_penalty",
    "init_state",
    "make_train_step",
    "train",
]


class Generator(nn.Module):
    """G(x, z): x (B, *event) in [0, 1], z (B, noise_dim) -> (B, *event) in (0, 1).
    h = concat(flatten(x), z) -> [Dense -> ReLU] per `hidden` -> Dense(D); G = sigmoid(h), or with
    `residual`, G = sigmoid(logit(x') + h) with x' = x clipped to [0.01, 0.99] and the last layer
    zero-initialised, so that training starts from G(x, z) ~= x (the input re-mapped, not redrawn).
    """

    event_shape: Sequence[int]
    hidden: Sequence[int] = (256, 256)
    residual: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
        h = jnp.concatenate([x.reshape(x.shape[0], -1), z], axis=-1)
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        d = math.prod(self.event_shape)
        if not self.residual:
            return nn.sigmoid(nn.Dense(d)(h)).reshape(x.shape[0], *self.event_shape)
        h = nn.Dense(d, kernel_init=nn.initializers.zeros)(h)
        xc = jnp.clip(x.reshape(x.shape[0], -1), 0.01, 0.99)
        out = nn.sigmoid(jnp.log(xc) - jnp.log1p(-xc) + h)
        return out.reshape(x.shape[0], *self.event_shape)


class Critic(nn.Module):
    """D(x, y): x (B, H, W, Ch), y (B,) int -> (B,) scores. The one-hot label is concatenated
    depth-wise to the input and to every hidden feature map ([Conv 3x3 stride 2 -> LeakyReLU(0.2)]
    per `channels`), then to the flattened features before [Dense -> LeakyReLU] and Dense(1).
    No normalisation layer, so examples never interact (the gradient penalty is per example)."""

    num_classes: int
    channels: Sequence[int] = (32, 64)
    dense: int = 128

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        onehot = jax.nn.one_hot(y, self.num_classes, dtype=x.dtype)

        def with_label(h):
            lab = jnp.broadcast_to(onehot[:, None, None, :], (*h.shape[:3], self.num_classes))
            return jnp.concatenate([h, lab], axis=-1)

        h = x
        for ch in self.channels:
            h = nn.leaky_relu(nn.Conv(ch, (3, 3), strides=(2, 2))(with_label(h)), 0.2)
        h = jnp.concatenate([h.reshape(h.shape[0], -1), onehot], axis=-1)
        h = nn.leaky_relu(nn.Dense(self.dense)(h), 0.2)
        h = jnp.concatenate([h, onehot], axis=-1)
        return nn.Dense(1)(h)[:, 0]


@dataclasses.dataclass(frozen=True)
class GanOptions:
    """Plain values of a GWIN training run; __post_init__ names any bad value."""

    n_steps: int = 2000  # generator steps
    batch_size: int = 64
    n_critic: int = 5
    lambda_gp: float = 10.0
    lambda_loss: float = 10.0
    lr: float = 1e-4
    b1: float = 0.0
    b2: float = 0.9
    noise_dim: int = 16
    clf_samples: int = 0  # 0: penalty on the dropout-off classifier; k: on k MC-dropout networks
    input_noise: float = 0.0  # std of Gaussian noise on the generator's training inputs
    input_shift: int = 0  # max random translation (pixels) of the generator's training inputs
    log_every: int = 100
    checkpoint_every: int = 500
    max_to_keep: int = 2

    def __post_init__(self):
        for name in ("n_steps", "batch_size", "n_critic", "noise_dim", "log_every",
                     "checkpoint_every", "max_to_keep"):  # fmt: skip
            check_int(f"gan.{name}", getattr(self, name))
        for name in ("clf_samples", "input_shift"):
            check_int(f"gan.{name}", getattr(self, name), minimum=0)
        for name in ("lambda_gp", "lambda_loss", "lr", "input_noise"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"gan.{name}: expected a finite number, got {v!r}")
            if v < 0 or (name == "lr" and v == 0):
                raise ValueError(f"gan.{name}: expected a {'positive' if name == 'lr' else 'non-negative'} number, got {v!r}")  # fmt: skip
        for name in ("b1", "b2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and 0.0 <= v < 1.0):
                raise ValueError(f"gan.{name}: expected a number in [0, 1), got {v!r}")


@struct.dataclass
class CriticPool:
    """The critic's real examples, sorted by class: images (M, *event) float, labels (M,),
    start (C,) and count (C,) -- class c occupies rows start[c] : start[c] + count[c]."""

    images: jax.Array
    labels: jax.Array
    start: jax.Array
    count: jax.Array


def critic_pool(images, labels, pred, certainty, *, tau_star: float = 0.95) -> CriticPool:
    """The confident-and-correct subset {i : pred_i = y_i and certainty_i >= tau_star} of
    images (N, *event), labels (N,) int in [0, C), as a `CriticPool` (C = `pred`'s classes seen
    in labels: max(labels) + 1). ValueError if a class has no such example (no real to show)."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    pred = np.asarray(pred)
    certainty = np.asarray(certainty)
    n = images.shape[0]
    for name, a in (("labels", labels), ("pred", pred), ("certainty", certainty)):
        if a.shape != (n,):
            raise ValueError(f"{name}: expected shape ({n},), got {a.shape}")
    if not (isinstance(tau_star, (int, float)) and 0.0 <= tau_star <= 1.0):
        raise ValueError(f"tau_star: expected a number in [0, 1], got {tau_star!r}")
    num_classes = int(labels.max()) + 1
    keep = (pred == labels) & (certainty >= tau_star)
    rows = np.flatnonzero(keep)
    rows = rows[np.argsort(labels[rows], kind="stable")]
    count = np.bincount(labels[rows], minlength=num_classes)
    if np.any(count == 0):
        raise ValueError(
            f"tau_star={tau_star}: class(es) {np.flatnonzero(count == 0).tolist()} have no "
            "training example classified correctly with certainty >= tau_star (lower tau_star "
            "or train the classifier longer)"
        )
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    return CriticPool(
        images=jnp.asarray(images[rows], jnp.float32),
        labels=jnp.asarray(labels[rows], jnp.int32),
        start=jnp.asarray(start, jnp.int32),
        count=jnp.asarray(count, jnp.int32),
    )


GEN_INPUTS = ("all", "uncertain", "heldout")


def heldout_split(labels, fraction: float, *, seed: int):
    """(classifier_rows, heldout_rows), sorted int arrays that partition range(N) for labels (N,):
    class by class (classes in increasing order), a permutation from np.random.default_rng(seed)
    puts round(fraction * n_c) of the n_c rows of class c in heldout_rows -- inputs the
    classifier never trains on, for the generator to learn from (gen_inputs "heldout")."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected a non-empty int array (N,), got {labels.dtype} {labels.shape}")  # fmt: skip
    if isinstance(fraction, bool) or not (isinstance(fraction, (int, float)) and 0.0 < fraction < 1.0):  # fmt: skip
        raise ValueError(f"gan.heldout_fraction: expected a number in (0, 1), got {fraction!r}")
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        held.append(rows[: int(round(fraction * rows.size))])
    held = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(labels.size), held), held


def generator_inputs(pred, certainty, labels, *, which: str = "all", tau_star: float = 0.95):
    """Row indices (int array) of the training examples the generator learns to transform:
    "all" rows, or the "uncertain" ones -- outside the critic pool (wrong or certainty < tau_star),
    the population a certainty threshold rejects at test time. ("heldout" rows come from
    `heldout_split`, not from the classifier's outputs.)"""
    pred, certainty, labels = map(np.asarray, (pred, certainty, labels))
    if which == "all":
        return np.arange(labels.shape[0])
    if which != "uncertain":
        raise ValueError(f"which: expected 'all' or 'uncertain', got {which!r}")
    rows = np.flatnonzero((pred != labels) | (certainty < tau_star))
    if rows.size == 0:
        raise ValueError(f"tau_star={tau_star}: no uncertain training example to transform")
    return rows


def sample_real(pool: CriticPool, y: jax.Array, *, key: jax.Array) -> jax.Array:
    """One pool image of class y_i for every label of y (B,), uniformly with replacement."""
    u = jax.random.uniform(key, y.shape)
    off = jnp.minimum(jnp.floor(u * pool.count[y]).astype(jnp.int32), pool.count[y] - 1)
    return pool.images[pool.start[y] + off]


def interpolate(x_real: jax.Array, x_fake: jax.Array, *, key: jax.Array) -> jax.Array:
    """x_hat = e x_real + (1 - e) x_fake with one e ~ U[0, 1] per example; (B, *event)."""
    e = jax.random.uniform(key, (x_real.shape[0],) + (1,) * (x_real.ndim - 1), x_real.dtype)
    return e * x_real + (1.0 - e) * x_fake


def gradient_norms(critic_fn: Callable, x: jax.Array, y: jax.Array) -> jax.Array:
    """||grad_x D(x_i, y_i)||_2 per example (B,), for critic_fn(x (B, ...), y (B,)) -> (B,)."""

    def one(xi, yi):
        return critic_fn(xi[None], yi[None])[0]

    g = jax.vmap(jax.grad(one))(x, y)
    sq = jnp.sum(jnp.square(g).reshape(g.shape[0], -1), axis=-1)
    return jnp.sqrt(sq + jnp.finfo(sq.dtype).tiny)  # differentiable at 0


def gradient_penalty(critic_fn: Callable, x: jax.Array, y: jax.Array) -> jax.Array:
    """E_i[(||grad_x D(x_i, y_i)||_2 - 1)^2] at the points x (B, ...) (the caller interpolates)."""
    return jnp.mean(jnp.square(gradient_norms(critic_fn, x, y) - 1.0))


def corrupt(x: jax.Array, shift: int, noise: float, *, key: jax.Array) -> jax.Array:
    """x (B, H, W, Ch) in [0, 1], each example translated by (dy, dx) ~ U{-shift..shift}^2 (zero
    fill) and given N(0, noise^2) pixel noise, clipped to [0, 1]; x itself when both are 0."""
    if shift == 0 and noise == 0.0:
        return x
    k_s, k_n = jax.random.split(key)
    if shift > 0:
        h, w = x.shape[1:3]
        pad = jnp.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
        d = jax.random.randint(k_s, (x.shape[0], 2), 0, 2 * shift + 1)

        def one(xi, di):
            return jax.lax.dynamic_slice(xi, (di[0], di[1], 0), (h, w, x.shape[3]))

        x = jax.vmap(one)(pad, d)
    if noise > 0.0:
        x = jnp.clip(x + noise * jax.random.normal(k_n, x.shape, x.dtype), 0.0, 1.0)
    return x


def transformation_penalty(classifier, clf_params, x, y, n_samples: int, *, key: jax.Array):
    """GWIN's Loss(C(G(x, z)), y) on a batch x (B, ...) with labels y (B,): the cross-entropy of
    the dropout-off classifier (n_samples = 0), or -log p(y | x) of the MC-dropout predictive
    p = (1/k) sum_t softmax(f(x; W_t)) over k = n_samples dropout draws (masks from `key`) --
    the probabilities the classifier's certainty is computed from."""
    if n_samples == 0:
        out, _ = classifier.apply({"params": clf_params}, x, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

    def one(t):
        rngs = {"dropout": jax.random.fold_in(key, t)}
        logits, _ = classifier.apply({"params": clf_params}, x, train=True, rngs=rngs)
        return jax.nn.log_softmax(logits)

    logp = jax.vmap(one)(jnp.arange(n_samples))  # (k, B, C)
    logp = jax.nn.logsumexp(logp, axis=0) - jnp.log(n_samples)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


@struct.dataclass
class GanState:
    """step (), generator/critic params and their Adam states."""

    step: jax.Array
    g_params: object
    d_params: object
    g_opt: object
    d_opt: object


def _optimizer(opts: GanOptions) -> optax.GradientTransformation:
    return optax.adam(opts.lr, b1=opts.b1, b2=opts.b2)


def init_state(
    generator: Generator, critic: Critic, example: jax.Array, opts: GanOptions, *, key: jax.Array
) -> GanState:
    """Step 0 from one batch-shaped example (B, *event)."""
    kg, kd = jax.random.split(key)
    x = jnp.asarray(example, jnp.float32)
    z = jnp.zeros((x.shape[0], opts.noise_dim), jnp.float32)
    g = generator.init(kg, x, z)["params"]
    d = critic.init(kd, x, jnp.zeros((x.shape[0],), jnp.int32))["params"]
    opt = _optimizer(opts)
    return GanState(
        step=jnp.zeros((), jnp.int32), g_params=g, d_params=d, g_opt=opt.init(g), d_opt=opt.init(d)
    )


@functools.partial(
    jax.jit, static_argnames=("generator", "critic", "classifier", "opts"), donate_argnums=(0,)
)
def _train_step(
    state, gen_images, gen_labels, pool, clf_params, key, *, generator, critic, classifier, opts
):
    opt = _optimizer(opts)
    n, b = gen_images.shape[0], opts.batch_size
    k_step = jax.random.fold_in(key, state.step)

    def gen_batch(k):
        k_idx, k_z, k_aug = jax.random.split(k, 3)
        idx = jax.random.randint(k_idx, (b,), 0, n)
        z = jax.random.normal(k_z, (b, opts.noise_dim), jnp.float32)
        x = corrupt(gen_images[idx], opts.input_shift, opts.input_noise, key=k_aug)
        return x, gen_labels[idx], z

    def d_fn(d_params):
        return lambda x, y: critic.apply({"params": d_params}, x, y)

    def critic_iter(carry, i):
        d_params, d_opt = carry
        k_gen, k_real, k_eps = jax.random.split(jax.random.fold_in(k_step, i), 3)
        x, y, z = gen_batch(k_gen)
        fake = generator.apply({"params": state.g_params}, x, z)
        real = sample_real(pool, y, key=k_real)
        x_hat = interpolate(real, fake, key=k_eps)

        def loss_fn(p):
            d = d_fn(p)
            w = jnp.mean(d(real, y)) - jnp.mean(d(fake, y))  # Wasserstein estimate
            gp = gradient_penalty(d, x_hat, y)
            return -w + opts.lambda_gp * gp, (w, gp)

        (loss, (w, gp)), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
        updates, d_opt = opt.update(grads, d_opt, d_params)
        return (optax.apply_updates(d_params, updates), d_opt), (loss, w, gp)

    (d_params, d_opt), (d_loss, w, gp) = jax.lax.scan(
        critic_iter, (state.d_params, state.d_opt), jnp.arange(opts.n_critic)
    )
    x, y, z = gen_batch(jax.random.fold_in(k_step, opts.n_critic))

    def g_terms(g_params):
        fake = generator.apply({"params": g_params}, x, z)
        adv = -jnp.mean(d_fn(d_params)(fake, y))
        ce = transformation_penalty(classifier, clf_params, fake, y, opts.clf_samples, key=k_drop)
        move = jnp.sqrt(jnp.sum(jnp.square(fake - x).reshape(b, -1), axis=-1))
        return jnp.stack([adv, opts.lambda_loss * ce]), (ce, jnp.mean(move))

    k_drop = jax.random.fold_in(k_step, opts.n_critic + 1)
    # each term's gradient apart: their sum is the update, their norms are the diagnosis
    terms, vjp, (ce, move) = jax.vjp(g_terms, state.g_params, has_aux=True)
    g_adv, g_pen = (vjp(jnp.eye(2, dtype=terms.dtype)[i])[0] for i in range(2))
    grads = jax.tree_util.tree_map(jnp.add, g_adv, g_pen)
    g_loss = terms[0] + terms[1]

    def norm(tree):
        return jnp.sqrt(sum(jnp.sum(jnp.square(v)) for v in jax.tree_util.tree_leaves(tree)))

    updates, g_opt = opt.update(grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)
    new = GanState(step=state.step + 1, g_params=g_params, d_params=d_params, g_opt=g_opt,
                   d_opt=d_opt)  # fmt: skip
    metrics = {"d_loss": d_loss[-1], "wasserstein": w[-1], "gp": gp[-1], "g_loss": g_loss,
               "clf_loss": ce, "move": move, "grad_adv": norm(g_adv),
               "grad_penalty": norm(g_pen)}  # fmt: skip
    return new, metrics


def make_train_step(generator: Generator, critic: Critic, classifier: nn.Module, opts: GanOptions):
    """The jitted step (state, gen_images, gen_labels, pool, clf_params, key) -> (state, metrics):
    n_critic critic updates on L_D, then one generator update on L_G (module doc); state is
    donated. metrics: d_loss, wasserstein, gp (last critic update), g_loss, clf_loss (Loss),
    move (mean ||G(x, z) - x||_2 over the batch) and grad_adv / grad_penalty (the norms of the
    gradients of -E[D] and of lambda_Loss * Loss w.r.t. the generator's parameters: which term
    drives the generator). gen_images (N, *event) float in [0, 1] with labels (N,): the generator's inputs;
    `pool`: the critic's real examples (`critic_pool`); `classifier.apply({'params': clf_params},
    x, train=False)` -> (logits (B, C), features)."""
    return functools.partial(
        _train_step, generator=generator, critic=critic, classifier=classifier, opts=opts
    )


def train(
    *,
    ckpt_dir: str,
    generator: Generator,
    critic: Critic,
    classifier: nn.Module,
    clf_params,
    gen_images,
    gen_labels,
    pool: CriticPool,
    opts: GanOptions,
    key: jax.Array,
    progress: bool = True,
    on_step: Callable[[GanState], None] | None = None,
) -> tuple[GanState, list[dict]]:
    """Train (or resume from the newest intact orbax checkpoint in `ckpt_dir`) to opts.n_steps;
    returns (final state, logged metric rows). Checkpoints every opts.checkpoint_every steps and
    at the end. `on_step(state)` runs after each step (tests use it to simulate a kill)."""
    from tqdm.auto import tqdm

    from jaxrej.training.checkpoint import (
        checkpoint_manager,
        latest_step,
        restore_checkpoint,
        save_checkpoint,
    )

    gen_images = jnp.asarray(gen_images, jnp.float32)
    gen_labels = jnp.asarray(gen_labels, jnp.int32)
    if gen_labels.shape != gen_images.shape[:1]:
        raise ValueError(f"gen_labels: expected shape ({gen_images.shape[0]},), got {gen_labels.shape}")  # fmt: skip
    k_init, k_train = jax.random.split(key)
    state = init_state(generator, critic, gen_images[:1], opts, key=k_init)
    start = 0
    if latest_step(ckpt_dir) is not None:
        state, start = restore_checkpoint(ckpt_dir, state)
        if start > opts.n_steps:
            raise ValueError(
                f"gan.n_steps={opts.n_steps}: {ckpt_dir!r} already holds step {start}; "
                "a run cannot be shortened"
            )
    step_fn = make_train_step(generator, critic, classifier, opts)
    rows: list[dict] = []
    acc: dict = {}
    bar = tqdm(total=opts.n_steps, initial=start, desc="gwin", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)  # fmt: skip
    mngr = checkpoint_manager(ckpt_dir, max_to_keep=opts.max_to_keep)
    try:
        for step in range(start, opts.n_steps):
            state, m = step_fn(state, gen_images, gen_labels, pool, clf_params, k_train)
            if on_step is not None:
                on_step(state)
            acc = {k: acc.get(k, 0.0) + v for k, v in m.items()}
            s = step + 1
            if s % opts.log_every == 0 or s == opts.n_steps:
                k = s - (rows[-1]["step"] if rows else start)
                row = {"step": s, **{name: float(v) / k for name, v in acc.items()}}
                if not all(map(math.isfinite, row.values())):
                    raise ValueError(f"GWIN training diverged at step {s}: {row} (lower gan.lr?)")
                rows.append(row)
                acc = {}
                bar.set_postfix(W=f"{row['wasserstein']:.3f}", ce=f"{row['clf_loss']:.3f}")
            if s % opts.checkpoint_every == 0 or s == opts.n_steps:
                save_checkpoint(mngr, s, state)
            bar.update(1)
    finally:
        bar.close()
        mngr.close()
    return state, rows
