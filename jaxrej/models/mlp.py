"""Class-conditional residual MLP score network for vectors and small images.

Input x (B, *event) is flattened; emb = time MLP + label Dense (embeddings.py). Every block is
conditioned on (t, y), in one of two ways (`conditioning`):
  "add":  h <- h + Dense(silu(Dense(silu(LN(h))) + Dense(silu(emb))))
  "film": h <- h + Dense(silu(Dense(silu(LN(h) * (1 + a) + b))))),  (a, b) = Dense(silu(emb))
          (feature-wise linear modulation, Perez et al. 2018; zero-initialised, so a = b = 0 at init).
The output (B, *event) is the noise prediction eps_theta(x, t, y) (score = -eps / std(t), score.py),
or with `precondition` the network part F of the preconditioned prediction (score.py); the hidden
width below the data's dimension makes that part necessary (the identity eps ~ x_t of large t
does not pass a narrower layer).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrej.models.embeddings import TimeLabelEmbedding
from jaxrej.models.local import LocalRefine
from jaxrej.models.score import check_atoms

CONDITIONINGS = ("add", "film")


def check_conditioning(value: str) -> None:
    if value not in CONDITIONINGS:
        raise ValueError(f"conditioning: expected one of {CONDITIONINGS}, got {value!r}")


class ConditionalMLP(nn.Module):
    """eps_theta(x, t, y): (B, *event), (B,), (B,) int -> (B, *event)."""

    num_classes: int
    hidden: int = 512
    n_blocks: int = 3
    emb_dim: int = 128
    time_embedding: str = "fourier"
    fourier_scale: float = 16.0
    conditioning: str = "add"
    # jaxrej.models.score.make_score_fn: F of the preconditioned noise prediction (data mean/std)
    precondition: bool = False
    label_cutoff: float = 0.0  # embeddings.TimeLabelEmbedding: no label below this time (0: off)
    data_mean: float = 0.5
    data_std: float = 0.5
    # groups of (lo, hi, weight) bins: one more output channel per group, the group's gate
    # (models/score.py: make_score_fn); () off
    atoms: tuple = ()
    # channels of a local 3x3 refinement of the output (models/local.py; images only); 0 off
    local: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout / batch statistics
        check_conditioning(self.conditioning)
        event = x.shape[1:]
        d = math.prod(event)
        emb = TimeLabelEmbedding(
            self.emb_dim,
            self.num_classes,
            self.time_embedding,
            self.fourier_scale,
            self.label_cutoff,
            name="embed",
        )(t, y)
        emb = nn.silu(emb)
        h = nn.Dense(self.hidden, name="in")(x.reshape(x.shape[0], d))
        for i in range(self.n_blocks):
            z = nn.LayerNorm(name=f"block{i}_norm")(h)
            if self.conditioning == "film":
                ab = nn.Dense(2 * self.hidden, kernel_init=nn.initializers.zeros,
                              name=f"block{i}_film")(emb)  # fmt: skip
                a, b = jnp.split(ab, 2, axis=-1)
                z = z * (1.0 + a) + b
            z = nn.Dense(self.hidden, name=f"block{i}_dense0")(nn.silu(z))
            if self.conditioning == "add":
                z = z + nn.Dense(self.hidden, name=f"block{i}_emb")(emb)
            z = nn.Dense(self.hidden, name=f"block{i}_dense1")(nn.silu(z))
            h = h + z
        h = nn.silu(nn.LayerNorm(name="out_norm")(h))
        if self.atoms and not self.precondition:
            raise ValueError("atoms: needs precondition=True (models/score.py)")
        k = 1 + len(check_atoms(self.atoms))
        out = nn.Dense(k * d, kernel_init=nn.initializers.zeros, name="out")(h)
        out = out.reshape(x.shape[0], *event[:2], -1)  # channels: (C, k), k fastest
        if self.local:
            if len(event) != 3:
                raise ValueError(f"local: needs images (H, W, C), got event shape {event}")
            out = out + LocalRefine(self.local, name="local")(x, out, emb)
        shape = x.shape if not self.atoms else (*x.shape, k)
        return out.reshape(shape).astype(jnp.result_type(x))
