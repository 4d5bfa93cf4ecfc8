"""Validation of the options every attack shares (ValueError naming the argument)."""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxrej.attacks.geometry import check_norm
from jaxrej.attacks.losses import check_loss
from jaxrej.checks import check_int


def _nonneg(name, v):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    if not (ok and math.isfinite(v) and v >= 0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")


def check_common(x, y, *, eps, norm, steps, restarts, loss, clip, targeted, thresholds, n_eot,
                 num_classes):  # fmt: skip
    """Shapes and options of an attack call; returns clip as a static tuple (or None)."""
    if jnp.ndim(x) < 2:
        raise ValueError(f"x: expected a batch (B, *event), got shape {jnp.shape(x)}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise ValueError(f"x: expected a float array, got {jnp.result_type(x)}")
    b = jnp.shape(x)[0]
    if jnp.shape(y) != (b,) or not jnp.issubdtype(jnp.result_type(y), jnp.integer):
        raise ValueError(f"y: expected an int array of shape ({b},), got {jnp.shape(y)}")
    _nonneg("eps", eps)
    check_norm(norm)
    check_int("steps", steps)
    check_int("restarts", restarts)
    check_int("n_eot", n_eot)
    check_loss(loss, num_classes, targeted=targeted, thresholds=thresholds)
    if clip is not None:
        if not (isinstance(clip, (tuple, list)) and len(clip) == 2 and clip[0] < clip[1]):
            raise ValueError(f"clip: expected (lo, hi) with lo < hi, or None, got {clip!r}")
        clip = (float(clip[0]), float(clip[1]))
    return clip
