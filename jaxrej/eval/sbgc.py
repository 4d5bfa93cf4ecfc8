"""The score-based generative classifier as a scorer of pixel images, like every other scorer.

Every scorer of an evaluation sees the same images: floats in [0, 1] with grid values
k / (L - 1) for L pixel levels (`data.preprocessing.to_unit_interval`, the heads' input), so
corruptions and attacks act on one pixel space. The score model was trained on dequantized
levels (k + u) / L, u ~ U[0, 1); a pixel image x maps to the model's input by the affine map

    m(x) = (x (L - 1) + u) / L,        u = 1/2 (bin centre; `data.preprocessing.center`),

which sends a grid image to its bin centres, is defined for any x in [0, 1] (corrupted,
interpolated or attacked images) and is differentiable. The class scores are log p(m(x) | y)
in nats from `jaxrej.class_log_likelihoods` (the change of variables adds the constant
D log L to every class and every image, which no decision depends on).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxrej.flow import FlowSolve
from jaxrej.scoring import DEFAULT_SCREEN, class_log_likelihoods


def model_input(x: jax.Array, n_levels: int) -> jax.Array:
    """Pixel images x in [0, 1] (any shape) -> the score model's input (x (L - 1) + 1/2) / L."""
    return (x * (n_levels - 1) + 0.5) / n_levels


def class_score_fn(
    score_fn: Callable,
    params,
    sde,
    *,
    n_levels: int,
    num_classes: int,
    key: jax.Array,
    solve: FlowSolve | None = None,
    screen=DEFAULT_SCREEN,
    labels: jax.Array | None = None,
) -> Callable[[jax.Array], jax.Array]:
    """x (B, *event) in [0, 1] -> class log-likelihoods (B, C): pure and differentiable
    (`class_log_likelihoods` with the default screen; `labels` keep a class refined, e.g. the
    true class under attack). A row whose solve failed is NaN."""

    def scores(x: jax.Array) -> jax.Array:
        return class_log_likelihoods(
            score_fn, params, sde, model_input(x, n_levels), num_classes=num_classes, key=key,
            solve=solve, screen=screen, labels=labels,
        )  # fmt: skip

    return scores


def log_px_fn(class_scores: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """x (B, *event) -> log p(x) (B,) = logsumexp_y log p(x | y) - log C (uniform class prior)."""

    def log_px(x):
        s = class_scores(x)
        return jax.nn.logsumexp(s, axis=-1) - jnp.log(s.shape[-1])

    return log_px
