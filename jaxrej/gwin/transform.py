"""GWIN inference on top of ANY scorer: transform the rejected inputs once, re-classify them.

    pred_final_i = pred_i                                  if input i is accepted
                 = argmax_c s_c(G(x_i, z_i))               if input i is rejected   (GWIN, Sec. 3)

The scorer enters only through its class scores (N, C) (higher = more likely: MC-dropout
probabilities, SDIM-logit or score-based class log-likelihoods, ...), its reject decisions (N,)
from `jaxrej.reject`, and `class_score_fn`, which scores a batch of transformed inputs. The noise
of example i is z_i ~ N(0, I) from fold_in(key, i): a transformation depends only on the
example, its index and the key, never on which other rows were rejected or on the batching.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxrej.reject import predict

__all__ = ["Reclassified", "generator_transform", "transform_and_reclassify"]


@struct.dataclass
class Reclassified:
    """pred (N,) final decisions; pred_before (N,); pred_after (N,) the prediction on the
    transformed input (-1 where the input was accepted, so not transformed); rejected (N,) bool;
    x_transformed (N, *event): G(x_i, z_i) where rejected, x_i elsewhere."""

    pred: jax.Array
    pred_before: jax.Array
    pred_after: jax.Array
    rejected: jax.Array
    x_transformed: jax.Array


@functools.partial(jax.jit, static_argnames=("generator", "noise_dim"))
def _generate(generator, g_params, x, keys, *, noise_dim):
    z = jax.vmap(lambda k: jax.random.normal(k, (noise_dim,), jnp.float32))(keys)
    return generator.apply({"params": g_params}, x, z)


def generator_transform(generator, g_params, noise_dim: int) -> Callable:
    """transform_fn(x (B, *event), keys (B,)) -> G(x, z) with z_i ~ N(0, I_noise_dim) from keys_i.
    One compilation per (generator, noise_dim, shapes): the parameters are an argument, so a new
    g_params (e.g. during training) does not compile again."""
    return lambda x, keys: _generate(generator, g_params, x, keys, noise_dim=noise_dim)


def transform_and_reclassify(
    class_score_fn: Callable,
    transform_fn: Callable,
    x,
    class_scores,
    rejected,
    *,
    key: jax.Array,
    batch_size: int = 256,
) -> Reclassified:
    """Transform the rejected rows of x (N, *event) once and re-classify them.

    class_scores (N, C): the scorer's scores of x (pred_before = their argmax, `reject.predict`);
    rejected (N,) bool: its reject decisions; transform_fn(x (B, *event), keys (B,)) -> (B, *event)
    (e.g. `generator_transform`); class_score_fn(x (B, *event)) -> (B, C) class scores of the same
    scorer. Only rejected rows are transformed, in padded batches of `batch_size` (one compilation).
    """
    x = np.asarray(x)
    scores = jnp.asarray(class_scores)
    rejected = np.asarray(rejected)
    n = x.shape[0]
    if scores.ndim != 2 or scores.shape[0] != n:
        raise ValueError(f"class_scores: expected shape ({n}, C), got {scores.shape}")
    if rejected.shape != (n,) or rejected.dtype != np.bool_:
        raise ValueError(f"rejected: expected a bool array of shape ({n},), got {rejected.dtype} {rejected.shape}")  # fmt: skip
    if isinstance(batch_size, bool) or not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    pred_before = np.asarray(predict(scores)[0])
    pred_after = np.full(n, -1, np.int32)
    x_t = x.astype(np.float32, copy=True)
    rows = np.flatnonzero(rejected)
    for lo in range(0, rows.size, batch_size):
        idx = rows[lo : lo + batch_size]
        pad = np.concatenate([idx, np.full(batch_size - idx.size, idx[0])])
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(pad))
        xb = np.asarray(transform_fn(jnp.asarray(x[pad], jnp.float32), keys))
        s = jnp.asarray(class_score_fn(jnp.asarray(xb)))
        if s.shape != (batch_size, scores.shape[1]):
            raise ValueError(
                f"class_score_fn: expected ({batch_size}, {scores.shape[1]}) scores, got {s.shape}"
            )
        pred_after[idx] = np.asarray(predict(s)[0])[: idx.size]
        x_t[idx] = xb[: idx.size]
    pred = np.where(rejected, pred_after, pred_before).astype(np.int32)
    return Reclassified(
        pred=jnp.asarray(pred),
        pred_before=jnp.asarray(pred_before),
        pred_after=jnp.asarray(pred_after),
        rejected=jnp.asarray(rejected),
        x_transformed=jnp.asarray(x_t),
    )
