"""A Bayesian classifier by Monte-Carlo dropout (Gal & Ghahramani 2016), as GWIN uses it.

Dropout stays on at test time; T sampled networks (one dropout mask per sample, shared by every
example, so an example's result never depends on its batch neighbours) give the predictive

    p(y | x) ~= (1/T) sum_t softmax(f(x; W_t))_y,          W_t ~ q(W)  (dropout masks)

The prediction is argmax_y p(y | x) and the certainty is p(y_pred | x), the mean predicted
probability of the predicted class over the MC samples (Cosentino & Zhu 2019, Sec. 3.1). The
tau-rule "reject when certainty < tau" is `jaxrej.reject.decide(probs, tau)` on these probs.

Presets (`make_classifier`): "lenet5" (LeNet-5 for 28x28: conv6 5x5 SAME, pool, conv16 5x5 VALID,
pool, dense 120, 84) and "small" (8x8: conv32 3x3, pool, conv64 3x3, pool, dense 128); dropout
after every pooling block and every hidden dense layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxrej.classifiers import ClassifierState

__all__ = [
    "MCDropoutCNN",
    "MCPrediction",
    "PRESETS",
    "make_classifier",
    "init",
    "train",
    "logits",
    "mc_predict",
]

PRESETS = {
    "lenet5": {
        "channels": (6, 16),
        "kernel": 5,
        "padding": ("SAME", "VALID"),
        "dense": (120, 84),
    },
    "small": {"channels": (32, 64), "kernel": 3, "padding": ("SAME", "SAME"), "dense": (128,)},
}


class MCDropoutCNN(nn.Module):
    """x (B, H, W, Ch) in [0, 1] -> logits (B, C). [Conv -> ReLU -> 2x2 max-pool -> Dropout] per
    entry of `channels`, then [Dense -> ReLU -> Dropout] per entry of `dense`, then Dense(C).
    `train=True` samples dropout masks from the 'dropout' rng (training and MC inference)."""

    num_classes: int
    channels: Sequence[int] = (32, 64)
    kernel: int = 3
    padding: Sequence[str] = ("SAME", "SAME")
    dense: Sequence[int] = (128,)
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        h = x
        for ch, pad in zip(self.channels, self.padding, strict=True):
            h = nn.relu(nn.Conv(ch, (self.kernel, self.kernel), padding=pad)(h))
            h = nn.max_pool(h, (2, 2), strides=(2, 2))
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = h.reshape(h.shape[0], -1)
        for width in self.dense:
            h = nn.relu(nn.Dense(width)(h))
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return nn.Dense(self.num_classes)(h)


def make_classifier(name: str, num_classes: int, *, dropout: float = 0.5) -> MCDropoutCNN:
    """The preset `name` ("lenet5" | "small") as an MCDropoutCNN with dropout rate `dropout`."""
    if name not in PRESETS:
        raise ValueError(f"classifier.name: expected one of {sorted(PRESETS)}, got {name!r}")
    if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
        raise ValueError(f"classifier.dropout: expected a rate in [0, 1), got {dropout!r}")
    return MCDropoutCNN(num_classes=num_classes, dropout=float(dropout), **PRESETS[name])


def init(model: nn.Module, example: jax.Array, *, key: jax.Array) -> ClassifierState:
    """Initial `jaxrej.classifiers.ClassifierState` from one batch-shaped example (B, H, W, Ch)."""
    params = model.init(key, jnp.asarray(example, jnp.float32), train=False)["params"]
    return ClassifierState(params=params, batch_stats={}, losses=jnp.zeros((0,)))


@partial(jax.jit, static_argnames=("model", "epochs", "batch_size", "optimizer"))
def _train(model, state, images, labels, key, *, epochs, batch_size, optimizer):
    n = images.shape[0]
    steps = n // batch_size
    perm_key, drop_key = jax.random.split(key)

    def step(carry, inp):
        params, opt_state = carry
        idx, s = inp

        def loss_fn(p):
            out = model.apply(
                {"params": p},
                images[idx],
                train=True,
                rngs={"dropout": jax.random.fold_in(drop_key, s)},
            )
            return optax.softmax_cross_entropy_with_integer_labels(out, labels[idx]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def epoch(carry, e):
        perm = jax.random.permutation(jax.random.fold_in(perm_key, e), n)[: steps * batch_size]
        ids = e * steps + jnp.arange(steps)
        carry, losses = jax.lax.scan(step, carry, (perm.reshape(steps, batch_size), ids))
        return carry, jnp.mean(losses)

    (params, _), losses = jax.lax.scan(
        epoch, (state.params, optimizer.init(state.params)), jnp.arange(epochs)
    )
    return ClassifierState(params=params, batch_stats={}, losses=losses)


def train(
    model: nn.Module,
    state: ClassifierState,
    images: jax.Array,
    labels: jax.Array,
    *,
    key: jax.Array,
    epochs: int,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
) -> ClassifierState:
    """Minimise the softmax cross-entropy with dropout on (one jitted scan over all epochs).

    images (N, H, W, Ch) float in [0, 1], labels (N,) int; AdamW; a fresh permutation per epoch
    (fold_in(key, epoch)) and fresh dropout masks per step. `losses` holds each epoch's mean loss.
    """
    n = np.shape(images)[0]
    if np.shape(labels) != (n,):
        raise ValueError(f"labels: expected shape ({n},), got {np.shape(labels)}")
    if isinstance(batch_size, bool) or not (isinstance(batch_size, int) and 1 <= batch_size <= n):
        raise ValueError(f"batch_size: expected an int in [1, {n}], got {batch_size!r}")
    if isinstance(epochs, bool) or not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs: expected a positive int, got {epochs!r}")
    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)
    return _train(
        model,
        state,
        jnp.asarray(images, jnp.float32),
        jnp.asarray(labels, jnp.int32),
        key,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
    )


def logits(model: nn.Module, params, x: jax.Array) -> jax.Array:
    """Deterministic logits (B, C) (dropout off: the weight-scaling approximation)."""
    return model.apply({"params": params}, x, train=False)


@struct.dataclass
class MCPrediction:
    """probs (N, C): MC mean of softmax; pred (N,) int32 argmax; certainty (N,) = probs[pred]."""

    probs: jax.Array
    pred: jax.Array
    certainty: jax.Array


@partial(jax.jit, static_argnames=("model", "n_samples", "batch_size"))
def _mc_probs(model, params, images, key, *, n_samples, batch_size):
    n = images.shape[0]
    pad = (-n) % batch_size
    x = jnp.concatenate([images, jnp.zeros((pad, *images.shape[1:]), images.dtype)])

    def one_batch(xb):
        def sample(acc, t):
            rngs = {"dropout": jax.random.fold_in(key, t)}  # one network per t, for every row

            def one(xi):
                return model.apply({"params": params}, xi[None], train=True, rngs=rngs)[0]

            return acc + jax.nn.softmax(jax.vmap(one)(xb)), None

        acc, _ = jax.lax.scan(
            sample, jnp.zeros((batch_size, model.num_classes)), jnp.arange(n_samples)
        )
        return acc / n_samples

    probs = jax.lax.map(one_batch, x.reshape(-1, batch_size, *images.shape[1:]))
    return probs.reshape(-1, model.num_classes)[:n]


def mc_predict(
    model: MCDropoutCNN,
    params,
    images: jax.Array,
    *,
    key: jax.Array,
    n_samples: int = 50,
    batch_size: int = 256,
) -> MCPrediction:
    """MC-dropout predictive of `images` (N, H, W, Ch): T = `n_samples` dropout networks
    (masks from fold_in(key, t), shared by all rows), p = mean_t softmax(f(x; W_t)),
    pred = argmax p, certainty = max p. Padded fixed-size batches: one compilation for any N."""
    if isinstance(n_samples, bool) or not (isinstance(n_samples, int) and n_samples >= 1):
        raise ValueError(f"n_samples: expected a positive int, got {n_samples!r}")
    if np.ndim(images) != 4:
        raise ValueError(f"images: expected (N, H, W, Ch), got shape {np.shape(images)}")
    from jaxrej.reject import predict

    probs = _mc_probs(
        model,
        params,
        jnp.asarray(images, jnp.float32),
        key,
        n_samples=n_samples,
        batch_size=batch_size,
    )
    pred, _ = predict(probs)
    return MCPrediction(probs=probs, pred=pred, certainty=jnp.max(probs, axis=-1))
