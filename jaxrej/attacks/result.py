"""The result every attack returns, and the helpers that pick the best of several candidates.

A candidate is the tuple (x (B, *event), success (B,), loss (B,), scores (B, C))."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jaxrej.attacks.geometry import lp_norm
from jaxrej.attacks.losses import margin

__all__ = ["AttackResult", "better", "no_candidate", "keep_better", "best_of_runs", "as_result"]


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


def no_candidate(x, num_classes):
    """The candidate that loses to every other at x: goal not reached, objective -inf."""
    b = x.shape[0]
    return (x, jnp.zeros(b, bool), jnp.full(b, -jnp.inf, x.dtype),
            jnp.zeros((b, num_classes), x.dtype))  # fmt: skip


def keep_better(cand, best, first):
    """Per example: cand where it beats best, or everywhere when `first` (the first run replaces
    the no-candidate, so a NaN objective still returns an input of the run), else best."""
    return select(better(cand[1], cand[2], best[1], best[2]) | first, cand, best)


def best_of_runs(one_run, n_runs: int, none):
    """The per-example best candidate of one_run(r) for r = 0 .. n_runs - 1, traced once: a
    lax.scan over the runs (one_run(0) alone when n_runs == 1). none: `no_candidate`'s."""
    if n_runs == 1:
        return one_run(0)

    def over_runs(best, r):
        return keep_better(one_run(r), best, r == 0), None

    return jax.lax.scan(over_runs, none, jnp.arange(n_runs))[0]


def as_result(best, x, y, *, norm: str, targeted: bool) -> AttackResult:
    """The AttackResult of the best candidate from clean inputs x (B, *event) and labels y."""
    x_adv, success, lv, s = best
    return AttackResult(x_adv=x_adv, success=success, margin=margin(s, y, targeted=targeted),
                        norm=lp_norm(x_adv - x, norm), scores=s, loss=lv)  # fmt: skip
