"""Derivatives of log p(x | y) with respect to the input x, through the probability-flow ODE.

`log_likelihood_and_grad` gives the log-likelihood and its input gradient in one call;
`FlowSolve.adjoint` picks how the solve is differentiated: "checkpoint" (discretise-then-optimise,
the exact gradient of the computed number), "backsolve" (the continuous adjoint of Chen et al.
2018, as the SBGC paper uses: memory independent of the number of steps) or "direct" (needed for
forward-over-reverse second derivatives). `hvp` is a forward-over-reverse Hessian-vector product
of any scalar function of one array.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxrej.flow import FlowSolve, as_solve
from jaxrej.likelihood import LikelihoodResult, log_likelihood
from jaxrej.sde import SDE


def hvp(f: Callable[[jax.Array], jax.Array], x: jax.Array, v: jax.Array) -> jax.Array:
    """H(x) v for scalar f, by forward-over-reverse: d/dr grad f(x + r v) at r = 0; shaped like x.

    Through a likelihood solve, build f with `adjoint="direct"` (the checkpoint and backsolve
    adjoints do not support forward-mode differentiation of their reverse pass).
    """
    if jnp.shape(v) != jnp.shape(x):
        raise ValueError(f"v: expected shape {jnp.shape(x)} like x, got {jnp.shape(v)}")
    return jax.jvp(jax.grad(f), (x,), (v,))[1]


def log_likelihood_and_grad(
    score_fn: Callable,
    params,
    sde: SDE,
    x: jax.Array,
    y: jax.Array,
    *,
    key: jax.Array,
    solve: FlowSolve | None = None,
    num_classes: int | None = None,
    probes: jax.Array | None = None,
    **options,
) -> tuple[LikelihoodResult, jax.Array]:
    """(LikelihoodResult (B,), d logp / dx (B, *event)) in one differentiated solve.

    Examples are independent, so the gradient of the batch sum is the per-example gradient.
    Where a solve failed (`ok` False) the gradient is NaN, never a silent zero.
    Options are those of `jaxrej.log_likelihood` (a FlowSolve and/or its fields as keywords).
    """
    solve = as_solve(solve, options)
    return _value_and_grad(score_fn, params, sde, x, y, key, probes, solve=solve,
                           num_classes=num_classes)  # fmt: skip


@functools.partial(jax.jit, static_argnames=("score_fn", "sde", "solve", "num_classes"))
def _value_and_grad(score_fn, params, sde, x, y, key, probes, *, solve, num_classes):
    def total(x_):
        res = log_likelihood(score_fn, params, sde, x_, y, key=key, solve=solve,
                             num_classes=num_classes, probes=probes)  # fmt: skip
        return jnp.sum(jnp.where(res.ok, res.logp, 0.0)), res

    (_, res), g = jax.value_and_grad(total, has_aux=True)(x)
    mask = res.ok.reshape((-1,) + (1,) * (x.ndim - 1))
    return res, jnp.where(mask, g, jnp.nan)
