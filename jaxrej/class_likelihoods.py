"""log p(x | y) for every class y, optionally through a cascade of cheap screening passes.

Scoring C classes means B * C probability-flow solves. A decision (argmax, a reject threshold on
the predicted class, the marginal log p(x)) needs full accuracy only for the classes near the top:
a class `margin` nats below the best contributes at most exp(-margin) to p(x) and cannot win.
A `Screen` is a cheap pass (Hutchinson probes, loose tolerances) over the classes still in reach;
after it, only classes within `margin` nats of that pass's best stay in reach. Several screens
can be chained, then the classes still in reach get the requested solve. Classes screened out
keep their (less accurate) screening estimate and are marked in `ClassLikelihoods.refined`.
A Hutchinson screen's probes are shared by an example's classes, so the class gaps that the margin
tests err much less than the log-likelihoods themselves: on the digits model 1.3 nats RMS with 16
probes (benchmarks/hutchinson.py), which lets a 16-probe screen at 1e-3 keep only the classes within
10 nats (the cascade of benchmarks/likelihood_speed.py).

Pairs (example, class) are solved in chunks sorted by how hard the previous pass found them, so
that a vmapped solve -- which runs as many steps as its slowest member -- wastes little.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxrej.divergence import sample_probes
from jaxrej.likelihood import (
    DEFAULT_SOLVER,
    DEFAULT_TOL,
    STATIC_OPTIONS,
    _check_options,
    _solve_one,
    check_solve,
)
from jaxrej.sde import SDE


class Screen(struct.PyTreeNode):
    """One screening pass: solve the classes in reach cheaply, keep those within `margin` nats.

    margin: nats below the pass's best class beyond which a class is dropped (> 0).
    divergence, n_probes, rtol, atol, solver: the pass's solve options.
    """

    margin: float = struct.field(pytree_node=False, default=40.0)
    divergence: str = struct.field(pytree_node=False, default="rademacher")
    n_probes: int = struct.field(pytree_node=False, default=1)
    rtol: float = struct.field(pytree_node=False, default=1e-2)
    atol: float = struct.field(pytree_node=False, default=1e-2)
    solver: str = struct.field(pytree_node=False, default="dopri5")

    def __post_init__(self):
        if not (
            isinstance(self.margin, (int, float)) and self.margin > 0 and math.isfinite(self.margin)
        ):
            raise ValueError(
                f"Screen.margin: expected a positive number of nats, got {self.margin!r}"
            )
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"Screen.{name}: expected a positive number, got {v!r}")


class ClassLikelihoods(struct.PyTreeNode):
    """Per (example, class) results, each (B, C).

    logp:    log p(x | y) in nats; NaN where the last solve of that pair failed.
    nfe:     vector-field evaluations spent on the pair over all passes.
    ok:      the last solve of that pair succeeded.
    refined: the pair got the requested solve (False: it carries a screening estimate).
    """

    logp: jax.Array
    nfe: jax.Array
    ok: jax.Array
    refined: jax.Array


@functools.partial(
    jax.jit,
    static_argnames=STATIC_OPTIONS,
)
def _solve_pairs(
    score_fn,
    params,
    sde,
    x,
    ex,
    cls,
    key,
    rtol,
    atol,
    eps,
    *,
    divergence,
    n_probes,
    solver,
    adjoint,
    n_steps,
    max_steps,
):
    """Solve pairs (x[ex[i]], cls[i]); probes depend on (key, example), shared across classes."""
    return solve_pairs(score_fn, params, sde, x[ex], ex, cls, key, rtol, atol, eps,
                       divergence=divergence, n_probes=n_probes, solver=solver, adjoint=adjoint,
                       n_steps=n_steps, max_steps=max_steps)  # fmt: skip


def solve_pairs(score_fn, params, sde, xs, ids, cls, key, rtol, atol, eps, *, divergence,
                n_probes, solver, adjoint, n_steps, max_steps):  # fmt: skip
    """(logp, nfe, ok), each (R,), of the pairs (xs[r], cls[r]): the un-jitted body that the
    local and the sharded scorers share. The probes of pair r depend on (key, ids[r]) alone, so
    the classes of one example share them (ids: (R,) example indices; xs: (R, *event))."""
    if divergence == "exact":
        probes = None
    else:
        probes = jax.vmap(
            lambda i: sample_probes(
                jax.random.fold_in(key, i), xs.shape[1:], n_probes, divergence, xs.dtype
            )
        )(ids)
    solve = functools.partial(
        _solve_one,
        score_fn,
        params,
        sde,
        rtol=rtol,
        atol=atol,
        eps=eps,
        solver=solver,
        adjoint=adjoint,
        n_steps=n_steps,
        max_steps=max_steps,
    )
    return jax.vmap(solve)(xs, cls, probes)


def _run_pass(score_fn, params, sde, x, pairs, difficulty, key, opts, chunk_size):
    """Solve `pairs` (R, 2) in difficulty-sorted chunks of `chunk_size` (the last one padded)."""
    order = np.argsort(difficulty, kind="stable")
    pairs = pairs[order]
    r = len(pairs)
    n_chunks = max(1, math.ceil(r / chunk_size))
    size = math.ceil(r / n_chunks)  # balanced chunks: at most one shape per (r, chunk_size)
    out_logp, out_nfe, out_ok = [], [], []
    for c in range(n_chunks):
        part = pairs[c * size : (c + 1) * size]
        pad = size - len(part)
        if pad:
            part = np.concatenate([part, np.repeat(part[-1:], pad, 0)])
        logp, nfe, ok = _solve_pairs(
            score_fn,
            params,
            sde,
            x,
            jnp.asarray(part[:, 0]),
            jnp.asarray(part[:, 1], jnp.int32),
            key,
            **opts,
        )
        keep = size - pad
        out_logp.append(np.asarray(logp)[:keep])
        out_nfe.append(np.asarray(nfe)[:keep])
        out_ok.append(np.asarray(ok)[:keep])
    inv = np.empty_like(order)
    inv[order] = np.arange(r)
    return (
        np.concatenate(out_logp)[inv],
        np.concatenate(out_nfe)[inv],
        np.concatenate(out_ok)[inv],
    )


def class_log_likelihood_result(
    score_fn: Callable,
    params,
    sde: SDE,
    x: jax.Array,
    *,
    num_classes: int,
    key: jax.Array,
    screen: Screen | Sequence[Screen] | None = None,
    chunk_size: int | None = None,
    divergence: str = "rademacher",
    n_probes: int = 1,
    rtol: float = DEFAULT_TOL,
    atol: float = DEFAULT_TOL,
    eps: float = 1e-5,
    solver: str = DEFAULT_SOLVER,
    adjoint: str = "checkpoint",
    n_steps: int | None = None,
    max_steps: int = 4096,
) -> ClassLikelihoods:
    """log p(x | y) for all classes with per-pair NFE, flags and refinement marks, each (B, C).

    x: (B, *event). screen: None (every class gets the requested solve), a `Screen`, or a sequence
    of them applied in order. chunk_size: pairs per compiled solve (default: all pairs of a pass in
    one call; smaller chunks sorted by difficulty waste fewer lockstep steps). Other options as in
    `jaxrej.log_likelihood`. Each example gets its own probes (from `key` and its index), shared
    by its classes.
    """
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise ValueError(f"num_classes: expected an int >= 1, got {num_classes!r}")
    check_solve(x, None, sde, divergence=divergence, solver=solver, adjoint=adjoint, n_probes=n_probes,
                n_steps=n_steps, max_steps=max_steps, rtol=rtol, atol=atol, eps=eps)  # fmt: skip
    screens = [] if screen is None else [screen] if isinstance(screen, Screen) else list(screen)
    for s in screens:
        if not isinstance(s, Screen):
            raise ValueError(
                f"screen: expected a Screen or a sequence of them, got {type(s).__name__}"
            )
        _check_options(s.divergence, s.solver, "checkpoint", s.n_probes, None, max_steps)
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"chunk_size: expected None or an int >= 1, got {chunk_size!r}")

    b, c = x.shape[0], num_classes
    final = dict(
        divergence=divergence,
        n_probes=n_probes,
        solver=solver,
        adjoint=adjoint,
        n_steps=n_steps,
        rtol=rtol,
        atol=atol,
    )
    passes = [
        dict(divergence=s.divergence, n_probes=s.n_probes, solver=s.solver, adjoint="checkpoint", n_steps=None,
             rtol=s.rtol, atol=s.atol)
        for s in screens
    ] + [final]  # fmt: skip
    logp = np.full((b, c), np.nan, np.float64)
    nfe = np.zeros((b, c), np.int64)
    ok = np.zeros((b, c), bool)
    refined = np.zeros((b, c), bool)
    active = np.ones((b, c), bool)
    for p, opts in enumerate(passes):
        pairs = np.argwhere(active)
        difficulty = nfe[active]
        opts = dict(opts, eps=eps, max_steps=max_steps)
        lp, n, k = _run_pass(
            score_fn,
            params,
            sde,
            x,
            pairs,
            difficulty,
            jax.random.fold_in(key, p),
            opts,
            chunk_size or len(pairs),
        )
        logp[active], ok[active] = lp, k
        nfe[active] += n
        if p == len(passes) - 1:
            refined = active
            break
        # Keep classes within the margin of the best of this pass; a failed screen stays in reach.
        best = np.max(np.where(active & ok, logp, -np.inf), axis=1, keepdims=True)
        active = active & ((logp >= best - screens[p].margin) | ~ok)
    dtype = x.dtype
    return ClassLikelihoods(
        logp=jnp.asarray(logp, dtype),
        nfe=jnp.asarray(nfe),
        ok=jnp.asarray(ok),
        refined=jnp.asarray(refined),
    )


def class_log_likelihoods(score_fn: Callable, params, sde: SDE, x: jax.Array, *, num_classes: int, key: jax.Array,
                          **options) -> jax.Array:  # fmt: skip
    """log p(x | y) for every class: (B, *event) -> (B, C) nats; NaN where a solve failed.

    Options as in `class_log_likelihood_result` (screen=, chunk_size=) and `jaxrej.log_likelihood`.
    With a screen, classes screened out carry their screening estimate (see the module docstring).
    """
    return class_log_likelihood_result(
        score_fn, params, sde, x, num_classes=num_classes, key=key, **options
    ).logp
