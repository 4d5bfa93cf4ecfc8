"""The scorer: class scores (B, C) of pixel images, thresholds fitted on validation rows, a
decision, and an attack view.

    sc = Scorer(name="msp", fn=head_fn, num_classes=10, batch_size=256, settings="...")
    sc = sc.fit_thresholds(val_x, val_y)             # {"p1", "p2", "tpr99"}: jaxrej.reject
    pred, accepted = sc.decide(x)                    # (N,), (N,) with the first rule ("p1")
    view = sc.for_attack(labels=y)                   # what an attack differentiates

Pixel space: images in [0, 1] (N, H, W, C), as the discriminative classifiers see them; every
scorer and every attack's eps-ball lives there. `fn` is the JUDGE: label-blind, the function of
the clean table (a pytree of arrays with `__call__`, or a plain function), called `fn(x)`, or
`fn(x, key)` with the scorer's fixed `key` when `stochastic` (Hutchinson probes, ELBO draws):
the same probes for every call, so a judge is a deterministic function of its input. The attack
view (`for_attack`) may be cheaper and may see the label (a screen that keeps it, fresh probes
per step); every adversarial input it finds is re-judged by `fn` and the thresholds
(`jaxrej.eval.adversarial`), never by the view.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrej import reject

__all__ = ["AttackView", "Scorer", "PERCENTILES", "ACCEPT_CORRECT"]

PERCENTILES = (1.0, 2.0)  # per-class percentile rules (SDIM-logit's k = 1, 2)
ACCEPT_CORRECT = (0.99,)  # one threshold accepting 99% of the correct validation rows


class AttackView(NamedTuple):
    """What an attack differentiates: fn(x) or fn(x, key) when stochastic -> (B, C); n_eot: draws
    per gradient (`jaxrej.attacks.eot`); label_aware: fn was built with the true labels."""

    fn: Any
    stochastic: bool = False
    n_eot: int = 1
    label_aware: bool = False


def _is_pytree_scorer(fn) -> bool:
    leaves = jax.tree_util.tree_leaves(fn)
    return bool(leaves) and all(isinstance(v, (jax.Array, np.ndarray)) for v in leaves)


@jax.jit
def _apply(fn, x):
    return fn(x)


@jax.jit
def _apply_key(fn, x, key):
    return fn(x, key)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Scorer:
    """A scorer of the layer (module doc).

    name: its table name; fn: the judge (B, *event) -> (B, C); num_classes: C; batch_size: rows
    per compiled call (a padded last batch keeps one shape); settings: a string naming the model
    and its options (the score cache's fingerprint); stochastic / key: fn takes this fixed key;
    view: labels (B,) or None -> AttackView (default: the judge itself, label-blind);
    thresholds: {rule key: (C,)} once fitted; jit: compile fn (False for host functions)."""

    name: str
    fn: Callable
    num_classes: int
    batch_size: int
    settings: str
    stochastic: bool = False
    key: Any = None
    view: Callable | None = None
    thresholds: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    jit: bool = True

    def __post_init__(self):
        if self.stochastic and self.key is None:
            raise ValueError(f"key: scorer {self.name!r} is stochastic and needs a fixed key")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size: expected an int >= 1, got {self.batch_size!r}")

    @functools.cached_property
    def _batch_fn(self) -> Callable:
        fn, key = self.fn, self.key
        if not self.jit:
            return (lambda x: fn(x, key)) if self.stochastic else fn
        if _is_pytree_scorer(fn):
            return (
                (lambda x: _apply_key(fn, x, key)) if self.stochastic else (lambda x: _apply(fn, x))
            )
        jf = jax.jit(fn)
        return (lambda x: jf(x, key)) if self.stochastic else jf

    def score_batch(self, x) -> np.ndarray:
        """Class scores (B, C) float64 numpy of one batch (B, *event) (any B; the cache and
        `class_scores` pass `batch_size` rows)."""
        return np.asarray(self._batch_fn(jnp.asarray(x, jnp.float32)), np.float64)

    def class_scores(self, x) -> np.ndarray:
        """Class scores (N, C) of pixel images (N, *event), in padded batches of batch_size."""
        from jaxrej.data.batching import padded_batches

        x = np.asarray(x, np.float32)
        if x.shape[0] == 0:
            return np.zeros((0, self.num_classes))
        parts = [self.score_batch(xb)[mask]
                 for (xb,), mask in padded_batches(x, batch_size=self.batch_size)]  # fmt: skip
        return np.concatenate(parts)

    def fit_thresholds(self, val_x=None, val_y=None, *, val_scores=None,
                       percentiles=PERCENTILES, accept_correct=ACCEPT_CORRECT) -> Scorer:  # fmt: skip
        """A copy with thresholds {"p1", "p2", "tpr99"} fitted on VALIDATION rows only
        (`jaxrej.reject.fit_thresholds`): val_x (N, *event) scored here, or their class scores
        `val_scores` (N, C) already computed (the clean table's cache); val_y (N,)."""
        if val_y is None:
            raise ValueError("val_y: the validation labels are required")
        if val_scores is None:
            if val_x is None:
                raise ValueError("val_x / val_scores: give the validation images or their scores")
            val_scores = self.class_scores(val_x)
        th = reject.fit_thresholds(val_scores, np.asarray(val_y), percentiles=percentiles,
                                   accept_correct=accept_correct)  # fmt: skip
        return dataclasses.replace(self, thresholds=th)

    def decide_scores(self, scores, *, rule: str | None = None):
        """(pred (N,), accepted (N,)) numpy from class scores (N, C) with thresholds[rule] (the
        first fitted rule by default); a row with a non-finite score is never accepted."""
        if not self.thresholds:
            raise ValueError(f"scorer {self.name!r}: fit_thresholds first")
        rule = rule or next(iter(self.thresholds))
        pred, rej = reject.decide(jnp.asarray(scores), jnp.asarray(self.thresholds[rule]))
        return np.asarray(pred), ~np.asarray(rej)

    def decide(self, x, *, rule: str | None = None):
        """(pred (N,), accepted (N,)) of pixel images (N, *event) (`decide_scores`)."""
        return self.decide_scores(self.class_scores(x), rule=rule)

    def for_attack(self, labels=None) -> AttackView:
        """The attack view for a batch with true labels (B,) (module doc); the judge itself
        (label-blind) unless the scorer has a cheaper view."""
        if self.view is None:
            return AttackView(self.fn, stochastic=self.stochastic)
        return self.view(None if labels is None else jnp.asarray(labels, jnp.int32))
