"""The result every attack returns, and the helpers that pick the best of several candidates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

__all__ = ["AttackResult", "better"]


class AttackResult(struct.PyTreeNode):
    """Per example (leading axis B):

    x_adv:   (B, *event) the adversarial input (inside the eps-ball and the data range).
    success: (B,) bool, the attack's goal holds at x_adv: misclassified (untargeted), the target
             predicted (targeted), and with `thresholds` also accepted by the reject rule.
    margin:  (B,) the classification margin at x_adv (`jaxrej.attacks.losses.margin`; < 0 means
             misclassified / target reached), in the units of the class scores.
    norm:    (B,) ||x_adv - x|| in the attack's norm.
    scores:  (B, C) the class scores at x_adv (mean over the EOT draws for a stochastic scorer).
    loss:    (B,) the attack objective at x_adv (higher = stronger).
    """

    x_adv: jax.Array
    success: jax.Array
    margin: jax.Array
    norm: jax.Array
    scores: jax.Array
    loss: jax.Array


def better(success_a, loss_a, success_b, loss_b):
    """(B,) bool: candidate a beats b -- it reaches the goal and b does not, or both agree on
    the goal and a has the higher objective (NaN objectives never win)."""
    la = jnp.where(jnp.isnan(loss_a), -jnp.inf, loss_a)
    lb = jnp.where(jnp.isnan(loss_b), -jnp.inf, loss_b)
    return (success_a & ~success_b) | ((success_a == success_b) & (la > lb))


def select(mask, a, b):
    """Per example: a where mask else b, for every leaf of two same-shaped pytrees."""

    def pick(u, v):
        return jnp.where(mask.reshape((-1,) + (1,) * (u.ndim - 1)), u, v)

    return jax.tree_util.tree_map(pick, a, b)
