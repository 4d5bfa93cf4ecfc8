"""Data-parallel class scoring over every device with `jax.sharding` (one process or many).

The B examples are split over a one-axis `Mesh` (axis name "batch") with a `NamedSharding`;
each device solves the probability-flow ODE for its block of examples and every class under
`jax.shard_map`, so each device runs its own vmapped solve (its own lockstep while-loop) and
no communication happens until the (B, C) results are gathered. The batch is padded to a
multiple of the device count by repeating the last example; padded rows are dropped.

Probes are drawn exactly as `jaxrej.class_log_likelihoods` draws them (from `key`, the pass
index 0 and the example's global index, shared by its classes), so the sharded result equals
the unsharded one up to float rounding, whatever the device count.

Multi-host: call `jax.distributed.initialize()` in every process first; `jax.devices()` then
lists the devices of all hosts and the default mesh spans them. Every process passes the same
full `x` (each one places only its own shards); every process gets the full (B, C) result.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrej.class_likelihoods import ClassLikelihoods, solve_pairs
from jaxrej.likelihood import DEFAULT_SOLVER, DEFAULT_TOL, check_solve
from jaxrej.sde import SDE

AXIS = "batch"


def batch_mesh(devices=None) -> Mesh:
    """A one-axis Mesh named "batch" over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices: expected at least one device")
    return Mesh(np.asarray(devices), (AXIS,))


def _check_mesh(mesh) -> int:
    if not isinstance(mesh, Mesh):
        raise ValueError(f"mesh: expected a jax.sharding.Mesh, got {type(mesh).__name__}")
    if AXIS not in mesh.axis_names:
        raise ValueError(f"mesh: expected an axis named {AXIS!r}, got axes {mesh.axis_names}")
    return int(mesh.shape[AXIS])


@functools.lru_cache(maxsize=64)
def _sharded_solver(score_fn, sde, mesh, num_classes, divergence, n_probes, solver, adjoint,
                    n_steps, max_steps):  # fmt: skip
    """A jitted shard_map'ed function (params, x, idx, key, rtol, atol, eps) -> (logp, nfe, ok)."""

    def local(params, x, idx, key, rtol, atol, eps):
        # x: (b_local, *event), idx: (b_local,) global example indices; every class of each.
        b = x.shape[0]
        out = solve_pairs(
            score_fn,
            params,
            sde,
            jnp.repeat(x, num_classes, axis=0),
            jnp.repeat(idx, num_classes),
            jnp.tile(jnp.arange(num_classes, dtype=jnp.int32), b),
            jax.random.fold_in(key, 0),  # the first (and only) pass, as unsharded
            rtol,
            atol,
            eps,
            divergence=divergence,
            n_probes=n_probes,
            solver=solver,
            adjoint=adjoint,
            n_steps=n_steps,
            max_steps=max_steps,
        )
        return tuple(o.reshape(b, num_classes) for o in out)

    mapped = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(), P(AXIS), P(AXIS), P(), P(), P(), P()),
        out_specs=(P(AXIS), P(AXIS), P(AXIS)),
        check_vma=False,
    )
    return jax.jit(mapped)


def _place(a: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array every process holds in full (works multi-host)."""
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def _gather(a: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)


def sharded_class_log_likelihood_result(
    score_fn: Callable,
    params,
    sde: SDE,
    x: jax.Array,
    *,
    num_classes: int,
    key: jax.Array,
    mesh: Mesh | None = None,
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
    """`jaxrej.class_log_likelihood_result` (no screen) with the batch sharded over `mesh`.

    x: (B, *event) float, the same full array in every process. mesh: a Mesh with an axis
    "batch" (default `batch_mesh()`: every device). Returns ClassLikelihoods of (B, C) numpy-
    backed arrays (logp nats, nfe, ok, refined all True); options as in `jaxrej.log_likelihood`.
    """
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise ValueError(f"num_classes: expected an int >= 1, got {num_classes!r}")
    check_solve(x, None, sde, divergence=divergence, solver=solver, adjoint=adjoint, n_probes=n_probes,
                n_steps=n_steps, max_steps=max_steps, rtol=rtol, atol=atol, eps=eps)  # fmt: skip
    mesh = batch_mesh() if mesh is None else mesh
    n_dev = _check_mesh(mesh)

    x_host = np.asarray(x)
    b = x_host.shape[0]
    padded = math.ceil(b / n_dev) * n_dev
    if padded > b:
        x_host = np.concatenate([x_host, np.repeat(x_host[-1:], padded - b, axis=0)])
    idx = np.arange(padded, dtype=np.int32)
    idx[b:] = b - 1  # padded rows repeat the last example, probes included
    batch = NamedSharding(mesh, P(AXIS))
    fn = _sharded_solver(score_fn, sde, mesh, num_classes, divergence, n_probes, solver, adjoint,
                         n_steps, max_steps)  # fmt: skip
    logp, nfe, ok = fn(
        params,
        _place(x_host, batch),
        _place(idx, batch),
        key,
        jnp.asarray(rtol, x_host.dtype),
        jnp.asarray(atol, x_host.dtype),
        jnp.asarray(eps, x_host.dtype),
    )
    logp, nfe, ok = (_gather(a)[:b] for a in (logp, nfe, ok))
    return ClassLikelihoods(
        logp=jnp.asarray(logp),
        nfe=jnp.asarray(nfe),
        ok=jnp.asarray(ok),
        refined=jnp.ones(ok.shape, bool),
    )


def sharded_class_log_likelihoods(
    score_fn: Callable,
    params,
    sde: SDE,
    x: jax.Array,
    *,
    num_classes: int,
    key: jax.Array,
    mesh: Mesh | None = None,
    **options,
) -> jax.Array:
    """log p(x | y) for every class, (B, *event) -> (B, C) nats, data-parallel over `mesh`.

    Equals `jaxrej.class_log_likelihoods(score_fn, params, sde, x, num_classes=..., key=...,
    **options)` up to float rounding; NaN where a solve failed. No `screen=` / `chunk_size=`.
    """
    for name in ("screen", "chunk_size"):
        if options.get(name) is not None:
            raise ValueError(f"{name}: not supported by the sharded scorer (got {options[name]!r})")
        options.pop(name, None)
    return sharded_class_log_likelihood_result(
        score_fn, params, sde, x, num_classes=num_classes, key=key, mesh=mesh, **options
    ).logp
