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
from flax import struct

__all__ = [
    "MCDropoutCNN",
    "MCPrediction",
    "PRESETS",
    "make_classifier",
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
    """x (B, H, W, Ch) in [0, 1] -> (logits (B, C), features (B, F)), as every classifier of
    `jaxrej.classifiers`. [Conv -> ReLU -> 2x2 max-pool -> Dropout] per entry of `channels`,
    then [Dense -> ReLU -> Dropout] per entry of `dense` (the features), then Dense(C).
    `train=True` samples dropout masks from the 'dropout' rng (training and MC inference)."""

    num_classes: int
    channels: Sequence[int] = (32, 64)
    kernel: int = 3
    padding: Sequence[str] = ("SAME", "SAME")
    dense: Sequence[int] = (128,)
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        h = x
        for ch, pad in zip(self.channels, self.padding, strict=True):
            h = nn.relu(nn.Conv(ch, (self.kernel, self.kernel), padding=pad)(h))
            h = nn.max_pool(h, (2, 2), strides=(2, 2))
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = h.reshape(h.shape[0], -1)
        for width in self.dense:
            h = nn.relu(nn.Dense(width)(h))
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return nn.Dense(self.num_classes)(h), h


def make_classifier(name: str, num_classes: int, *, dropout: float = 0.5) -> MCDropoutCNN:
    """The preset `name` ("lenet5" | "small") as an MCDropoutCNN with dropout rate `dropout`."""
    if name not in PRESETS:
        raise ValueError(f"classifier.name: expected one of {sorted(PRESETS)}, got {name!r}")
    if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
        raise ValueError(f"classifier.dropout: expected a rate in [0, 1), got {dropout!r}")
    return MCDropoutCNN(num_classes=num_classes, dropout=float(dropout), **PRESETS[name])


def logits(model: nn.Module, params, x: jax.Array) -> jax.Array:
    """Deterministic logits (B, C) (dropout off: the weight-scaling approximation)."""
    return model.apply({"params": params}, x, train=False)[0]


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
                logits, _ = model.apply({"params": params}, xi[None], train=True, rngs=rngs)
                return logits[0]

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
