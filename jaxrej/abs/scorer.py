"""Pixels -> ABS class scores, the scorer `jaxrej evaluate`, `jaxrej score` and the attacks use.

    scorer, step = load_scorer("runs/mnist_abs")   # the run's config.json and newest checkpoint
    scores = scorer(x)                         # x (B, H, W, ch) in [0, 1] -> (B, C) bounds, nats

Pixel space is the discriminative classifiers' x = k / (L - 1) and the model's own input, so an
attack's eps-ball is the same for every scorer. The score is differentiable in x through the
unrolled latent optimisation (`latent.class_bounds`); the attack view is the scorer itself (it
does not use the label).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxrej.abs.latent import LatentBank, LatentOptions, class_bounds, latent_bank
from jaxrej.abs.model import ABSModel

BANK_SEED_OFFSET = 7  # the bank's key: key(seed + BANK_SEED_OFFSET)


class ABSScorer(struct.PyTreeNode):
    """Pixels (B, *event) in [0, 1] -> class bounds (B, C). labels: accepted and ignored (the
    scorer is label-blind); key: ignored (the latent search is deterministic); straight_through:
    a binary model's threshold differentiated as the identity (the attack view,
    `latent.binarize`; the same scores)."""

    params: Any
    bank: LatentBank
    labels: Any = None
    model: ABSModel = struct.field(pytree_node=False, default=None)
    options: LatentOptions = struct.field(pytree_node=False, default=LatentOptions())
    straight_through: bool = struct.field(pytree_node=False, default=False)

    def __call__(self, x, key=None):
        return self.result(x).score

    def result(self, x):
        """The full `latent.BoundResult` (scores, log joints, latents) of x."""
        return class_bounds(self.model, self.params, self.bank, x, options=self.options,
                            straight_through=self.straight_through)  # fmt: skip


def build_scorer(model: ABSModel, params, *, bank_size: int, seed: int,
                 options: LatentOptions) -> ABSScorer:  # fmt: skip
    bank = latent_bank(model, params, n=bank_size, key=jax.random.key(seed + BANK_SEED_OFFSET))
    return ABSScorer(params=params, bank=bank, model=model, options=options)


def load_scorer(workdir: str, *, step: int | None = None, options=None,
                run=None) -> tuple[ABSScorer, int]:  # fmt: skip
    """(ABSScorer, checkpoint step) of a trained run (`jaxrej train` with model.name = 'abs'):
    its model, params of checkpoint `step` (None: the newest intact one), the latent search and
    bank of `options` (`jaxrej.config.ABSEval`; None: the run's own). run: the run's
    `jaxrej.config.RunSpec` (None: `load_run(workdir)`). `jaxrej score` and `jaxrej evaluate`
    both load a run's scorer here."""
    from jaxrej.abs.model import init_params
    from jaxrej.abs.training import ABSTrainState, optimizer
    from jaxrej.config import load_run
    from jaxrej.training.checkpoint import CHECKPOINT_DIR, restore_checkpoint

    run = load_run(workdir) if run is None else run
    model = run.net
    params = init_params(model, key=jax.random.key(0))
    tx = optimizer(run.training)
    target = ABSTrainState(step=jnp.asarray(0, jnp.int32), params=params, opt_state=tx.init(params))
    state, step = restore_checkpoint(os.path.join(workdir, CHECKPOINT_DIR), target, step=step)
    ev = run.eval if options is None else options
    sc = build_scorer(model, state.params, bank_size=ev.bank_size, seed=run.seed,
                      options=ev.latent)  # fmt: skip
    return sc, step
