"""Scorer calling convention and the (EOT-averaged) attack gradient.

A deterministic scorer is `class_score_fn(x) -> (B, C)`. A stochastic scorer (e.g. class
log-likelihoods with Hutchinson probes) is called as `class_score_fn(x, key) -> (B, C)` and is
flagged with `stochastic=True` at the attack; each gradient evaluation then averages
`n_eot` draws with keys `fold_in(step_key, j)` (expectation over transformation, Athalye et al.
2018): g = (1/n) sum_j grad_x L(f(x; key_j)), whose variance falls as 1/n for independent draws.

A scorer is either a plain (hashable) function, jit-static, or a pytree whose leaves are arrays
(e.g. a `flax.struct` dataclass with `__call__`, as the scorers of `jaxrej.scorers` are): its
leaves are traced, so new parameters of the same shapes do not recompile an attack.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrej.attacks.losses import attack_loss

__all__ = ["split_scorer", "join_scorer", "loss_and_grad"]


def split_scorer(fn):
    """(static part, dynamic leaves) of a scorer: a pytree of arrays travels as leaves."""
    if not callable(fn):
        raise ValueError(f"class_score_fn: expected a callable, got {type(fn).__name__}")
    leaves, treedef = jax.tree_util.tree_flatten(fn)
    if leaves and all(isinstance(v, (jax.Array, np.ndarray)) for v in leaves):
        return treedef, leaves
    return fn, None


def join_scorer(static, leaves):
    return static if leaves is None else jax.tree_util.tree_unflatten(static, leaves)


def call(fn, x, key, stochastic):
    return fn(x, key) if stochastic else fn(x)


def loss_and_grad(fn, x, y, key, *, stochastic, n_eot, loss, targeted, thresholds, target=None):
    """(objective (B,), grad (B, *event), scores (B, C)) at x, each averaged over n_eot draws
    (target: the target classes of APGD-T, `jaxrej.attacks.losses`). Non-finite gradient
    entries (a failed solve) are set to 0."""

    def one(k):
        def total(z):
            s = call(fn, z, k, stochastic)
            lv = attack_loss(s, y, loss=loss, targeted=targeted, thresholds=thresholds,
                             target=target)  # fmt: skip
            return jnp.sum(jnp.where(jnp.isfinite(lv), lv, 0.0)), (lv, s)

        (_, (lv, s)), g = jax.value_and_grad(total, has_aux=True)(x)
        return lv, g, s

    if n_eot == 1:
        lv, g, s = one(jax.random.fold_in(key, 0))
    else:

        def body(acc, j):
            out = one(jax.random.fold_in(key, j))
            return jax.tree_util.tree_map(jnp.add, acc, out), None

        zero = jax.eval_shape(one, key)
        zero = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), zero)
        (lv, g, s), _ = jax.lax.scan(body, zero, jnp.arange(n_eot))
        lv, g, s = lv / n_eot, g / n_eot, s / n_eot
    return lv, jnp.where(jnp.isfinite(g), g, 0.0), s


def scores_at(fn, x, key, *, stochastic, n_eot):
    """Class scores (B, C) at x, the mean of n_eot draws for a stochastic scorer."""
    if not stochastic or n_eot == 1:
        return call(fn, x, jax.random.fold_in(key, 0), stochastic)

    def body(acc, j):
        return acc + call(fn, x, jax.random.fold_in(key, j), True), None

    first = call(fn, x, jax.random.fold_in(key, 0), True)
    total, _ = jax.lax.scan(body, first, jnp.arange(1, n_eot))
    return total / n_eot
