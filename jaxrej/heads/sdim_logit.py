"""SDIM-logit: a generative classifier on top of a frozen discriminative classifier's logits.

Xiao et al. 2020, "Reject Illegal Inputs with Generative Classifiers Derived from Any
Discriminative Classifier" (SDIM = supervised deep InfoMax). Given base logits x (C,):
  encoder     r = W2 relu(BN(W1 x)),  r in R^d (d = C by default)
  class model p(r | y) = N(r; mu_y, diag sigma_y^2), log sigma_y clamped below at log(0.02)
  class score s_y(x) = (1/d) log N(r; mu_y, sigma_y^2)        (normalised per dimension)
  critic      T(x, r) = <phi(x), psi(r)> (two small MLPs); positive pairs (x_i, r_i), the
              in-batch negatives (x_i, r_j), j != i
  J_MI  = E_neg[softplus(-T) + T - log 2] - E_pos[log 2 - softplus(-T)]   (Jensen-Shannon,
          Fenchel dual: Hjelm et al. 2019, eq. 4; negated to a loss)
  J_NLL = -E[s_y(x)]
  J_LM  = E[max(0, m - s_y(x) + max_{c != y} s_c(x))]                     (likelihood margin)
  loss  = alpha J_MI + beta J_NLL + gamma J_LM, defaults alpha=0.6, beta=0.2, gamma=0.2, m=10,
          Adam 1e-3 (the paper's code).
Prediction is argmax_y s_y(x); rejection uses `jaxrej.reject.fit_class_thresholds` on s.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

__all__ = [
    "SDIMLogit",
    "SDIMLogitHead",
    "gaussian_class_scores",
    "jsd_mi_loss",
    "margin_loss",
    "fit",
    "class_scores",
    "predict",
]

LOG_SIGMA_MIN = math.log(0.02)


def gaussian_class_scores(
    r: jax.Array, means: jax.Array, log_sigmas: jax.Array, log_sigma_min: float = LOG_SIGMA_MIN
) -> jax.Array:
    """(1/d) log N(r; mu_c, diag exp(2 log sigma_c)) for r (N, d), means/log_sigmas (C, d) -> (N, C)."""
    ls = jnp.maximum(log_sigmas, log_sigma_min)
    z = (r[:, None, :] - means[None]) * jnp.exp(-ls)[None]
    return jnp.mean(-0.5 * jnp.square(z) - ls[None] - 0.5 * math.log(2 * math.pi), axis=-1)


def jsd_mi_loss(t: jax.Array) -> jax.Array:
    """-(JSD MI lower bound) from a (B, B) critic matrix t[i, j] = T(x_i, r_j); diagonal = positives."""
    b = t.shape[0]
    eye = jnp.eye(b, dtype=bool)
    e_pos = jnp.mean(math.log(2.0) - jax.nn.softplus(-jnp.diagonal(t)))
    neg = jax.nn.softplus(-t) + t - math.log(2.0)
    e_neg = jnp.sum(jnp.where(eye, 0.0, neg)) / (b * (b - 1))
    return e_neg - e_pos


def margin_loss(scores: jax.Array, labels: jax.Array, margin: float) -> jax.Array:
    """mean_i max(0, margin - s_{y_i} + max_{c != y_i} s_c), scores (N, C)."""
    own = jnp.take_along_axis(scores, labels[:, None], axis=1)[:, 0]
    others = jnp.where(jax.nn.one_hot(labels, scores.shape[1], dtype=bool), -jnp.inf, scores)
    return jnp.mean(jax.nn.relu(margin - own + jnp.max(others, axis=1)))


class SDIMLogit(nn.Module):
    """Encoder, critic and Gaussian class embedding. __call__(x (B, C), train) -> (r, scores, t)."""

    num_classes: int
    rep_size: int
    hidden: int = 64
    mi_units: int = 64

    def setup(self):
        self.enc1 = nn.Dense(self.hidden)
        self.bn = nn.BatchNorm(momentum=0.9)
        self.enc2 = nn.Dense(self.rep_size)
        self.phi = [nn.Dense(self.mi_units), nn.Dense(self.mi_units)]
        self.psi = [nn.Dense(self.mi_units), nn.Dense(self.mi_units)]
        self.means = self.param(
            "class_means", nn.initializers.normal(1.0), (self.num_classes, self.rep_size)
        )
        self.log_sigmas = self.param(
            "class_log_sigmas", nn.initializers.zeros, (self.num_classes, self.rep_size)
        )

    def encode(self, x, train: bool = False):
        h = self.enc1(x)
        h = nn.relu(self.bn(h, use_running_average=not train))
        return self.enc2(h)

    def scores(self, r):
        return gaussian_class_scores(r, self.means, self.log_sigmas)

    def __call__(self, x, train: bool = False):
        r = self.encode(x, train)
        a = self.phi[1](nn.relu(self.phi[0](x)))
        b = self.psi[1](nn.relu(self.psi[0](r)))
        return r, self.scores(r), a @ b.T


@struct.dataclass
class SDIMLogitHead:
    """Trained head: params, batch_stats, losses (epochs, 4) = (total, J_MI, J_NLL, J_LM)."""

    params: Any
    batch_stats: Any
    losses: jax.Array
    num_classes: int = struct.field(pytree_node=False, default=10)
    rep_size: int = struct.field(pytree_node=False, default=10)
    hidden: int = struct.field(pytree_node=False, default=64)
    mi_units: int = struct.field(pytree_node=False, default=64)

    @property
    def module(self) -> SDIMLogit:
        return SDIMLogit(self.num_classes, self.rep_size, self.hidden, self.mi_units)


@partial(jax.jit, static_argnames=("module", "batch_size", "optimizer"))
def _epoch(module, carry, x, y, key, e, weights, margin, *, batch_size, optimizer):
    """One epoch over a fresh permutation from fold_in(key, e): carry (params, batch_stats,
    opt_state) -> (carry, mean (total, J_MI, J_NLL, J_LM))."""
    alpha, beta, gamma = weights
    n = x.shape[0]
    steps = n // batch_size

    def loss_fn(p, bs, xb, yb):
        (_, s, t), new = module.apply(
            {"params": p, "batch_stats": bs}, xb, train=True, mutable=["batch_stats"]
        )
        j_mi = jsd_mi_loss(t)
        j_nll = -jnp.mean(jnp.take_along_axis(s, yb[:, None], axis=1))
        j_lm = margin_loss(s, yb, margin)
        total = alpha * j_mi + beta * j_nll + gamma * j_lm
        return total, (new["batch_stats"], jnp.stack([total, j_mi, j_nll, j_lm]))

    def step(carry, idx):
        p, bs, os = carry
        (_, (bs, parts)), g = jax.value_and_grad(loss_fn, has_aux=True)(p, bs, x[idx], y[idx])
        updates, os = optimizer.update(g, os, p)
        return (optax.apply_updates(p, updates), bs, os), parts

    perm = jax.random.permutation(jax.random.fold_in(key, e), n)[: steps * batch_size]
    carry, parts = jax.lax.scan(step, carry, perm.reshape(steps, batch_size))
    return carry, jnp.mean(parts, axis=0)


def fit(
    logits: jax.Array,
    labels: jax.Array,
    *,
    key: jax.Array,
    epochs: int = 50,
    batch_size: int = 100,
    learning_rate: float = 1e-3,
    alpha: float = 0.6,
    beta: float = 0.2,
    gamma: float = 0.2,
    margin: float = 10.0,
    rep_size: int | None = None,
    hidden: int = 64,
    mi_units: int = 64,
    progress: bool = False,
) -> SDIMLogitHead:
    """Train SDIM-logit on frozen base logits (N, C) with labels (N,); one compiled epoch
    (a `lax.scan` over its steps) serves every epoch. progress: a tqdm bar over epochs (stderr)."""
    shape = np.shape(logits)
    if len(shape) != 2 or shape[1] < 2:
        raise ValueError(f"logits: expected a (N, C) array with C >= 2, got shape {shape}")
    if not np.all(np.isfinite(np.asarray(logits))):
        raise ValueError("logits: expected finite values, found NaN or inf")
    n, c = shape
    y = np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= c:
        raise ValueError(f"labels: expected ints in [0, {c}) of shape ({n},)")
    if not (isinstance(batch_size, int) and 2 <= batch_size <= n):
        raise ValueError(
            f"batch_size: expected an int in [2, {n}] (in-batch negatives), got {batch_size!r}"
        )
    head = SDIMLogitHead(
        params=None,
        batch_stats=None,
        losses=jnp.zeros((0, 4)),
        num_classes=c,
        rep_size=rep_size or c,
        hidden=hidden,
        mi_units=mi_units,
    )
    module = head.module
    k_init, k_train = jax.random.split(key)
    x = jnp.asarray(logits, jnp.float32)
    variables = module.init(k_init, x[:2], train=False)
    optimizer = optax.adam(learning_rate)
    carry = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))
    y, weights = jnp.asarray(y, jnp.int32), jnp.asarray([alpha, beta, gamma], jnp.float32)
    epochs_iter = range(int(epochs))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = epochs_iter = tqdm(epochs_iter, desc="sdim-logit", unit="epoch", dynamic_ncols=True)
    losses = []
    for e in epochs_iter:
        carry, parts = _epoch(
            module, carry, x, y, k_train, jnp.asarray(e, jnp.int32), weights, jnp.float32(margin),
            batch_size=batch_size, optimizer=optimizer,
        )  # fmt: skip
        losses.append(parts)
        if bar is not None:
            bar.set_postfix(loss=f"{float(parts[0]):.4f}")
    if bar is not None:
        bar.close()
    params, batch_stats, _ = carry
    losses = jnp.stack(losses) if losses else jnp.zeros((0, 4))
    return head.replace(params=params, batch_stats=batch_stats, losses=losses)


@jax.jit
def class_scores(head: SDIMLogitHead, logits: jax.Array) -> jax.Array:
    """Class scores s_c(x) = (1/d) log p(r(x) | c), (N, C), encoder in eval mode."""
    variables = {"params": head.params, "batch_stats": head.batch_stats}
    m = head.module
    return m.apply(
        variables, jnp.asarray(logits, jnp.float32), method=lambda mod, x: mod.scores(mod.encode(x))
    )


@jax.jit
def predict(head: SDIMLogitHead, logits: jax.Array) -> jax.Array:
    """argmax_c s_c(x), (N,) int32."""
    return jnp.argmax(class_scores(head, logits), axis=-1).astype(jnp.int32)
