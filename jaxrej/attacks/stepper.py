"""One jitted gradient step shared by every gradient attack and loss (loop="python").

The expensive part of a gradient attack on a score-based classifier is compiling the gradient
through its scorer (an ODE solve per class): XLA compiles it once per jitted region, so a suite
of attacks run as one compiled region each (PGD-CE, APGD-CE, APGD-DLR, APGD-T, the reject-aware
APGD) compiles it once per attack. Here the scorer's forward and VJP are compiled ONCE per
(scorer, batch shape, n_eot) and the loss is picked at run time: `lax.switch` over the
objectives of `jaxrej.attacks.losses` acting on the scores (cheap branches), so every attack,
loss and budget eps reuses that one executable; the attacks' own updates are small jitted
functions called from a Python loop (which also keeps a convolution's gradient out of a
compiled loop, benchmarks/conv_in_loop).

    lv, g, s = loss_and_grad(class_score_fn, x, y, key, loss="dlr", target=t, ...)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrej.attacks import eot
from jaxrej.attacks.losses import LOSSES, attack_loss

__all__ = ["loss_and_grad", "branch_index"]

_MODES = ("untargeted", "targeted", "towards")  # towards: a target with the true labels


def branch_index(loss: str, *, targeted: bool, has_target: bool) -> int:
    """The switch index of (loss, mode)."""
    mode = 2 if has_target else int(bool(targeted))
    return LOSSES.index(loss) * len(_MODES) + mode


def _branches(num_classes):
    out = []
    for loss in LOSSES:
        for mode in _MODES:
            need = 3 if mode == "untargeted" else 4
            valid = not (loss == "dlr" and num_classes < need) and not (
                loss == "reject" and mode == "targeted"
            )

            def br(ops, loss=loss, mode=mode, valid=valid):
                s, y, t, th = ops
                if not valid:
                    return jnp.full(s.shape[:1], jnp.nan, s.dtype)
                if mode == "towards":
                    return attack_loss(s, y, loss=loss, thresholds=th, target=t)
                return attack_loss(s, y, loss=loss, targeted=mode == "targeted", thresholds=th)

            out.append(br)
    return out


@functools.partial(jax.jit, static_argnames=("static_fn", "stochastic", "n_eot"))
def _step(static_fn, leaves, x, y, key, thresholds, target, branch, *, stochastic, n_eot):
    fn = eot.join_scorer(static_fn, leaves)

    def one(k):
        s, vjp = jax.vjp(lambda z: eot.call(fn, z, k, stochastic), x)

        def total(s_):
            lv = jax.lax.switch(branch, _branches(s_.shape[-1]), (s_, y, target, thresholds))
            return jnp.sum(jnp.where(jnp.isfinite(lv), lv, 0.0)), lv

        (_, lv), gs = jax.value_and_grad(total, has_aux=True)(s)
        return lv, vjp(gs)[0], s

    if n_eot == 1:
        lv, g, s = one(jax.random.fold_in(key, 0))
    else:

        def body(acc, j):
            return jax.tree_util.tree_map(jnp.add, acc, one(jax.random.fold_in(key, j))), None

        zero = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),
                                      jax.eval_shape(one, key))  # fmt: skip
        (lv, g, s), _ = jax.lax.scan(body, zero, jnp.arange(n_eot))
        lv, g, s = lv / n_eot, g / n_eot, s / n_eot
    return lv, jnp.where(jnp.isfinite(g), g, 0.0), s


def loss_and_grad(class_score_fn, x, y, key, *, loss, targeted=False, thresholds=None,
                  target=None, stochastic=False, n_eot=1):  # fmt: skip
    """(objective (B,), grad_x (B, *event), scores (B, C)) at x -- `eot.loss_and_grad`'s
    numbers from one executable per (scorer, shapes, n_eot) that serves every loss."""
    static_fn, leaves = eot.split_scorer(class_score_fn)
    c = jax.eval_shape(lambda z: eot.call(class_score_fn, z, key, stochastic), x).shape[-1]
    return step_fn(static_fn, leaves, num_classes=c, stochastic=stochastic, n_eot=n_eot)(
        x, y, key, loss=loss, targeted=targeted, thresholds=thresholds, target=target
    )


def step_fn(static_fn, leaves, *, num_classes, stochastic, n_eot):
    """(x, y, key, *, loss, targeted, thresholds, target) -> (lv, g, s) bound to one scorer."""

    def call(x, y, key, *, loss, targeted, thresholds, target):
        c = num_classes
        th = jnp.zeros((c,), x.dtype) if thresholds is None else thresholds
        th = jnp.broadcast_to(jnp.asarray(th, x.dtype), (c,))
        t = y if target is None else target
        b = jnp.int32(branch_index(loss, targeted=targeted, has_target=target is not None))
        return _step(static_fn, leaves, x, y, key, th, t, b, stochastic=stochastic, n_eot=n_eot)

    return call
