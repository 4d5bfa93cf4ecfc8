"""The threat model's geometry: L-inf / L2 balls around x, steepest-ascent directions, projections.

All functions act per example on batches (B, *event); norms are over the event axes.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

NORMS = ("linf", "l2")

__all__ = ["NORMS", "check_norm", "lp_norm", "ascent_direction", "project", "random_start"]


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")


def _bcast(v, x):
    return jnp.reshape(v, (-1,) + (1,) * (x.ndim - 1))


def lp_norm(d: jax.Array, norm: str) -> jax.Array:
    """(B,) ||d_i||_inf or ||d_i||_2 over the event axes of d (B, *event)."""
    flat = d.reshape(d.shape[0], -1)
    if norm == "linf":
        return jnp.max(jnp.abs(flat), axis=1)
    return jnp.sqrt(jnp.sum(jnp.square(flat), axis=1))


def ascent_direction(g: jax.Array, norm: str) -> jax.Array:
    """The steepest-ascent unit step for gradient g: sign(g) (L-inf) or g / max(||g||_2, 1e-12)
    (L2), foolbox 3's `normalize` of LinfPGD / L2PGD."""
    if norm == "linf":
        return jnp.sign(g)
    return g / _bcast(jnp.maximum(lp_norm(g, "l2"), 1e-12), g)


def project(x: jax.Array, x0: jax.Array, eps, norm: str, clip) -> jax.Array:
    """Project x onto {x0 + d : ||d|| <= eps} (clip d for L-inf; d * min(1, eps / ||d||_2) for
    L2), then clip to the data range `clip` = (lo, hi) (None: no range); foolbox 3's order."""
    d = x - x0
    eps_b = _bcast(jnp.asarray(eps, x.dtype) * jnp.ones(x.shape[0], x.dtype), x)
    if norm == "linf":
        d = jnp.clip(d, -eps_b, eps_b)
    else:
        n = _bcast(jnp.maximum(lp_norm(d, "l2"), 1e-12), d)
        d = d * jnp.minimum(1.0, eps_b / n)
    out = x0 + d
    return out if clip is None else jnp.clip(out, clip[0], clip[1])


def random_start(x0: jax.Array, eps, norm: str, clip, *, key: jax.Array) -> jax.Array:
    """A uniform draw from the eps-ball around each x0 (cube for L-inf; for L2 a Gaussian
    direction with radius eps * u^(1/D)), clipped to the data range."""
    b = x0.shape[0]
    eps_b = jnp.asarray(eps, x0.dtype)
    k1, k2 = jax.random.split(key)
    if norm == "linf":
        d = jax.random.uniform(k1, x0.shape, x0.dtype, -1.0, 1.0) * eps_b
    else:
        dim = math.prod(x0.shape[1:])
        g = jax.random.normal(k1, x0.shape, x0.dtype)
        g = g / _bcast(jnp.maximum(lp_norm(g, "l2"), 1e-12), g)
        r = jax.random.uniform(k2, (b,), x0.dtype) ** (1.0 / dim) * eps_b
        d = g * _bcast(r, g)
    out = x0 + d
    return out if clip is None else jnp.clip(out, clip[0], clip[1])


@functools.partial(jax.jit, static_argnames=("norm", "clip", "rand_init"))
def run_start(x, key, eps, *, norm: str, clip, rand_init: bool):
    """(start, key for the run's steps) of one attack run from its key: a random start in the
    eps-ball when rand_init, else x itself (PGD's and APGD's, compiled and Python loops alike)."""
    k_start, k_r = jax.random.split(key)
    return (random_start(x, eps, norm, clip, key=k_start) if rand_init else x), k_r
