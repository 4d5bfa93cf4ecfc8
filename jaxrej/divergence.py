"""Divergence (Jacobian trace) of a vector field f: R^event -> R^event at one point.

Both estimators return the value f(x) with the trace, since one forward-mode pass gives both.

exact_trace:      tr(df/dx) from one forward pass and D vector-Jacobian products with the basis
                  vectors, batched into one call (for small D, e.g. 8x8 images); reverse mode
                  was the faster of the two on the digits score (benchmarks/README.md,
                  "Reverse-mode vs forward-mode trace").
hutchinson_trace: (1/K) sum_k e_k^T (df/dx) e_k with K probes e_k, E[e e^T] = I
                  (Hutchinson 1989; FFJORD, Grathwohl et al. 2019). Unbiased.
hutchpp_trace:    Hutch++ (Meyer et al. 2021): the trace of J on Q = orth(J S) exactly, Hutchinson on
                  the rest; unbiased, lower variance when J's spectrum is dominated by a few
                  directions. Costs 2m + K products (m sketch vectors, K probes).
sample_probes:    Rademacher (+-1) or standard Gaussian probes, drawn once per solve.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

PROBES = ("rademacher", "gaussian")


def exact_trace(f: Callable, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(f(x), tr(df/dx)) for one example x of any event shape; costs D reverse-mode products."""
    d = x.size
    basis = jnp.eye(d, dtype=x.dtype).reshape((d, *x.shape))
    fx, pullback = jax.vjp(f, x)
    (rows,) = jax.vmap(pullback)(basis)  # row i = e_i^T df/dx
    return fx, jnp.trace(rows.reshape(d, d))


def hutchinson_trace(f: Callable, x: jax.Array, probes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(f(x), mean_k probes[k] . (df/dx) probes[k]); probes: (K, *x.shape)."""
    if probes.shape[1:] != x.shape:
        raise ValueError(
            f"probes: expected shape (K, {', '.join(map(str, x.shape))}), got {probes.shape}"
        )
    fx, jv = jax.vmap(lambda e: jax.jvp(f, (x,), (e,)), out_axes=(None, 0))(probes)
    axes = tuple(range(1, probes.ndim))
    return fx, jnp.mean(jnp.sum(jv * probes, axis=axes))


def hutchpp_trace(
    f: Callable, x: jax.Array, sketch: jax.Array, probes: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(f(x), Hutch++ estimate of tr(df/dx)); sketch: (m, *x.shape), probes: (K, *x.shape).

    With J = df/dx, Q = orth(J S) (D, m): tr(Q^T J Q) + mean_k g_k^T J g_k, g_k = (I - Q Q^T) probes[k].
    For any fixed Q the second term has mean tr((I - QQ^T) J), so the sum is unbiased.
    """
    for name, a in (("sketch", sketch), ("probes", probes)):
        if a.shape[1:] != x.shape:
            raise ValueError(
                f"{name}: expected shape (n, {', '.join(map(str, x.shape))}), got {a.shape}"
            )
    d, m = x.size, sketch.shape[0]
    if m > d:
        raise ValueError(f"sketch: expected at most D = {d} vectors, got {m}")

    def jvps(vs):  # (n, D) -> (f(x), (n, D) rows J v)
        fx, jv = jax.vmap(lambda v: jax.jvp(f, (x,), (v.reshape(x.shape),)), out_axes=(None, 0))(vs)
        return fx, jv.reshape(vs.shape[0], d)

    _, js = jvps(sketch.reshape(m, d))
    q, _ = jnp.linalg.qr(js.T)  # (D, m), orthonormal columns
    g = probes.reshape(probes.shape[0], d)
    g = g - (g @ q) @ q.T
    fx, jqg = jvps(jnp.concatenate([q.T, g]))
    low_rank = jnp.sum(jqg[:m] * q.T)
    rest = jnp.mean(jnp.sum(jqg[m:] * g, axis=1))
    return fx, low_rank + rest


def sample_probes(
    key: jax.Array, shape, n_probes: int, kind: str = "rademacher", dtype=jnp.float32
):
    """(n_probes, *shape) probes with E[e e^T] = I: kind 'rademacher' (+-1) or 'gaussian'."""
    if kind not in PROBES:
        raise ValueError(f"divergence: expected one of {PROBES}, got {kind!r}")
    if not (isinstance(n_probes, int) and n_probes >= 1):
        raise ValueError(f"n_probes: expected an int >= 1, got {n_probes!r}")
    shape = (n_probes, *tuple(shape))
    if kind == "rademacher":
        return jax.random.rademacher(key, shape, dtype=dtype)
    return jax.random.normal(key, shape, dtype=dtype)
