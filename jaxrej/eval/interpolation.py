"""log p(x) along straight lines between test images (the SBGC paper's Fig. 2).

For pairs (x0, x1) and a grid 0 = a_0 < ... < a_{A-1} = 1, score the points
x(a) = (1 - a) x0 + a x1 with any `log_px_fn: (B, *event) -> (B,)` and summarise the curves
a -> log p(x(a)) over pairs: mean, standard deviation, quantiles. The verdict `convex` says
whether the mean curve m is convex on the grid: every discrete second difference

    d_i = m_{i-1} - 2 m_i + m_{i+1}          (uniform grid; in general the three-point
                                              divided difference times h^2, h the mean step)

is >= -tol, with tol = rel_tol * (max m - min m) (default rel_tol 1e-3: a concave bump of
height H over A points has d_i ~ -8 H / (A - 1)^2, far below that unless the grid is very
fine), or the absolute `tol` given.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrej.data.batching import num_batches, padded_batches


@flax.struct.dataclass
class InterpolationCurves:
    alphas: np.ndarray  # (A,) interpolation weights a
    curves: np.ndarray  # (P, A) log p(x(a)) per pair
    mean: np.ndarray  # (A,)
    std: np.ndarray  # (A,) over pairs (ddof 0)
    quantiles: np.ndarray  # (Q, A) at quantile_levels
    second_differences: np.ndarray  # (A - 2,) of the mean curve (module doc)
    quantile_levels: tuple = flax.struct.field(pytree_node=False, default=(0.1, 0.5, 0.9))
    tol: float = flax.struct.field(pytree_node=False, default=0.0)
    convex: bool = flax.struct.field(pytree_node=False, default=False)

    def to_dict(self) -> dict:
        """JSON-ready summary (lists of floats)."""
        return {
            "alphas": self.alphas.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "quantile_levels": list(self.quantile_levels),
            "quantiles": self.quantiles.tolist(),
            "second_differences": self.second_differences.tolist(),
            "min_second_difference": float(np.min(self.second_differences, initial=np.inf)),
            "tol": self.tol,
            "convex": self.convex,
            "n_pairs": int(self.curves.shape[0]),
        }


def random_pairs(n: int, n_pairs: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (i0, i1), each (n_pairs,), of distinct images drawn from range(n)."""
    if n < 2:
        raise ValueError(f"n: expected at least 2 images to pair, got {n}")
    if n_pairs < 1:
        raise ValueError(f"n_pairs: expected a positive integer, got {n_pairs}")
    rng = np.random.default_rng(seed)
    i0 = rng.integers(0, n, n_pairs)
    i1 = (i0 + rng.integers(1, n, n_pairs)) % n  # never i0
    return i0, i1


def line_points(x0, x1, alphas):
    """(P, A, *event): (1 - a) x0 + a x1 for x0, x1 (P, *event) and alphas (A,)."""
    x0, x1, a = jnp.asarray(x0), jnp.asarray(x1), jnp.asarray(alphas, jnp.asarray(x0).dtype)
    a = a.reshape((1, -1) + (1,) * (x0.ndim - 1))
    return (1 - a) * x0[:, None] + a * x1[:, None]


def second_differences(values, alphas) -> np.ndarray:
    """(A - 2,) three-point second differences of values (A,) on the grid alphas (A,),
    h^2 * 2 [(v_{i+1} - v_i) / h_i - (v_i - v_{i-1}) / h_{i-1}] / (h_i + h_{i-1}), h the mean
    step: exactly v_{i-1} - 2 v_i + v_{i+1} on a uniform grid."""
    v, a = np.asarray(values, np.float64), np.asarray(alphas, np.float64)
    if len(v) < 3:
        return np.zeros(0)
    h = np.diff(a)
    slopes = np.diff(v) / h
    d2 = 2 * np.diff(slopes) / (h[1:] + h[:-1])
    return d2 * np.mean(h) ** 2


def is_convex(values, alphas, *, tol: float | None = None, rel_tol: float = 1e-3):
    """(convex, tol, second differences): convex iff every second difference >= -tol, tol
    defaulting to rel_tol * (max - min) of `values` (module doc)."""
    d2 = second_differences(values, alphas)
    v = np.asarray(values, np.float64)
    t = float(rel_tol * (v.max() - v.min())) if tol is None else float(tol)
    return bool(np.all(d2 >= -t)), t, d2


def interpolation_curves(
    log_px_fn,
    x0,
    x1,
    *,
    n_points: int = 11,
    alphas=None,
    batch_size: int | None = None,
    quantile_levels=(0.1, 0.5, 0.9),
    tol: float | None = None,
    rel_tol: float = 1e-3,
    progress: bool = False,
) -> InterpolationCurves:
    """Score the lines between x0[p] and x1[p] (each (P, *event)) at `alphas` (default
    linspace(0, 1, n_points)) with log_px_fn ((B, *event) -> (B,)), in batches of `batch_size`
    points (default all; the last batch is padded so one compilation serves every batch), and
    summarise over pairs (module doc). Non-finite scores raise ValueError."""
    x0, x1 = np.asarray(x0), np.asarray(x1)
    if x0.shape != x1.shape or x0.ndim < 2 or len(x0) < 1:
        raise ValueError(f"x0, x1: expected equal shapes (P, *event), got {x0.shape}, {x1.shape}")
    a = np.linspace(0.0, 1.0, n_points) if alphas is None else np.asarray(alphas, np.float64)
    if a.ndim != 1 or len(a) < 2 or np.any(np.diff(a) <= 0):
        raise ValueError(f"alphas: expected an increasing 1-d grid of >= 2 points, got {a}")
    p, event = x0.shape[0], x0.shape[1:]
    pts = np.asarray(line_points(x0, x1, a)).reshape((p * len(a),) + event)
    n = len(pts)
    bs = n if batch_size is None else int(batch_size)
    if bs < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    parts = []
    batches = padded_batches(pts, batch_size=bs)  # one compiled shape
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=num_batches(n, bs), desc="interpolation", unit="batch")
    for (chunk,), mask in batches:
        out = np.asarray(jax.device_get(log_px_fn(jnp.asarray(chunk))), np.float64)
        if out.shape != (bs,):
            raise ValueError(f"log_px_fn: expected scores of shape ({bs},), got {out.shape}")
        parts.append(out[mask])
    scores = np.concatenate(parts)
    if not np.all(np.isfinite(scores)):
        bad = int(np.sum(~np.isfinite(scores)))
        raise ValueError(f"log_px_fn: {bad} of {n} interpolation points scored non-finite")
    curves = scores.reshape(p, len(a))
    mean = curves.mean(axis=0)
    convex, t, d2 = is_convex(mean, a, tol=tol, rel_tol=rel_tol)
    return InterpolationCurves(
        alphas=a,
        curves=curves,
        mean=mean,
        std=curves.std(axis=0),
        quantiles=np.quantile(curves, np.asarray(quantile_levels), axis=0),
        second_differences=d2,
        quantile_levels=tuple(float(q) for q in quantile_levels),
        tol=t,
        convex=convex,
    )


def plot(curves: InterpolationCurves, path: str, *, title: str | None = None,
         ylabel: str = "log p(x)") -> str:  # fmt: skip
    """PNG at `path` (written atomically): the mean curve against a, a +-1 std band, the outer
    quantile band, a few individual pairs, and the convexity verdict. Returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxrej.io import save_png

    a, m, s = curves.alphas, curves.mean, curves.std
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for c in curves.curves[:8]:
        ax.plot(a, c, color="0.75", lw=0.7, zorder=1)
    q = curves.quantiles
    ql = curves.quantile_levels
    ax.fill_between(a, q[0], q[-1], alpha=0.15, color="C0",
                    label=f"quantiles {ql[0]:g}-{ql[-1]:g}")  # fmt: skip
    ax.fill_between(a, m - s, m + s, alpha=0.3, color="C0", label="mean +- std")
    ax.plot(a, m, color="C0", lw=2, label=f"mean over {curves.curves.shape[0]} pairs")
    verdict = "convex" if curves.convex else "not convex"
    ax.set(xlabel="a in (1 - a) x0 + a x1", ylabel=ylabel,
           title=title or f"log-density along interpolations ({verdict}, tol {curves.tol:.3g})")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_png(fig, path)
