"""Attack objectives on class scores (B, C) -> (B,), each to be MAXIMISED by the attacker.

Class scores are any per-class scores where the prediction is the argmax (logits, log-softmax,
log p(x | y) of a generative classifier, SDIM-logit scores, ...). With y the true class
(untargeted) or the target class (targeted), s_(1) >= s_(2) >= ... the sorted scores:

* "ce":     untargeted CE(s, y) = logsumexp(s) - s_y; targeted -CE(s, t).
* "margin": Carlini & Wagner (2017) margin, untargeted max_{c != y} s_c - s_y;
            targeted s_t - max_{c != t} s_c.
* "dlr":    Croce & Hein (2020, eq. 6) difference of logits ratio, untargeted
            -(s_y - max_{c != y} s_c) / (s_(1) - s_(3)); targeted (eq. 7)
            -(s_y - s_t) / (s_(1) - (s_(3) + s_(4)) / 2).  Invariant to shifting and scaling s.
* "reject": the reject-aware adaptive loss (untargeted; needs per-class `thresholds` t_c from
            `jaxrej.reject.fit_class_thresholds`). The attacker wants some class c != y to be
            predicted AND accepted (`jaxrej.reject.decide`: s_c = max_j s_j and s_c >= t_c), so
            L = max_{c != y} min(s_c - max_{j != c} s_j, s_c - t_c); L > 0 iff fooled-and-accepted.

With `target` t (B,) and y the TRUE class (AutoAttack's APGD-T; `targeted=False`: the goal stays
"misclassified", the objective pulls towards t): "ce" -CE(s, t); "margin" s_t - max_{c != t} s_c;
"dlr" (eq. 7 with the true class) -(s_y - s_t) / (s_(1) - (s_(3) + s_(4)) / 2); "reject"
min(s_t - max_{j != t} s_j, s_t - t_t) (> 0 iff t is predicted and accepted).

`margin(s, y)` is the classification margin reported by every attack: s_y - max_{c != y} s_c
(untargeted: > 0 while correctly classified) or max_{c != t} s_c - s_t (targeted: > 0 while the
target is not predicted). Non-finite scores (a failed likelihood solve) count as -inf.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSSES = ("ce", "margin", "dlr", "reject")

__all__ = ["LOSSES", "margin", "attack_loss", "goal_reached", "check_loss"]


def _finite(s):
    return jnp.where(jnp.isfinite(s), s, -jnp.inf)


def _best_other(s, y):
    mask = jax.nn.one_hot(y, s.shape[-1], dtype=bool)
    return jnp.max(jnp.where(mask, -jnp.inf, s), axis=-1)


def _own(s, y):
    return jnp.take_along_axis(s, y[:, None], axis=-1)[:, 0]


def margin(scores: jax.Array, y: jax.Array, *, targeted: bool = False) -> jax.Array:
    """(B,) classification margin (module doc); attack success (no reject) iff margin < 0."""
    s = _finite(scores)
    m = _own(s, y) - _best_other(s, y)
    return -m if targeted else m


def check_loss(loss: str, num_classes: int, *, targeted: bool, thresholds,
               target: bool = False) -> None:  # fmt: skip
    """ValueError for a loss name / class count / thresholds combination that is not defined
    (target: a target class is given with the true label, APGD-T)."""
    if loss not in LOSSES:
        raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
    need = 4 if (targeted or target) else 3
    if loss == "dlr" and num_classes < need:
        raise ValueError(f"loss: 'dlr' needs at least {need} classes, got {num_classes}")
    if target and targeted:
        raise ValueError("targeted: a `target` comes with the true labels y; targeted=False")
    if loss == "reject":
        if targeted:
            raise ValueError(
                "loss: 'reject' is untargeted (any accepted wrong class); targeted=False"
            )
        if thresholds is None:
            raise ValueError("thresholds: loss 'reject' needs per-class thresholds (C,)")
    if thresholds is not None and jnp.shape(thresholds) not in ((num_classes,), ()):
        raise ValueError(
            f"thresholds: expected shape ({num_classes},) or (), got {jnp.shape(thresholds)}"
        )


def attack_loss(scores: jax.Array, y: jax.Array, *, loss: str, targeted: bool = False,
                thresholds: jax.Array | None = None,
                target: jax.Array | None = None) -> jax.Array:  # fmt: skip
    """(B,) objective `loss` (module doc) of class scores (B, C) for labels/targets y (B,);
    with `target` (B,): y are the true labels and the objective pulls towards the target."""
    c = scores.shape[-1]
    if target is not None:
        return _towards(scores, y, target, loss=loss, thresholds=thresholds)
    if loss == "ce":
        ce = jax.nn.logsumexp(scores, axis=-1) - _own(scores, y)
        return -ce if targeted else ce
    if loss == "margin":
        return -margin(scores, y, targeted=targeted)
    if loss == "dlr":
        srt = jnp.sort(scores, axis=-1)[:, ::-1]
        if targeted:
            den = srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + 1e-12
            # y is the target t here; the paper's s_y is the true class, unknown to this
            # function, so the targeted DLR uses the best non-target class in its place
            return -(_best_other(scores, y) - _own(scores, y)) / den
        return -(_own(scores, y) - _best_other(scores, y)) / (srt[:, 0] - srt[:, 2] + 1e-12)
    if loss == "reject":
        t = jnp.broadcast_to(jnp.asarray(thresholds, scores.dtype), (c,))
        eye = jnp.eye(c, dtype=bool)
        # for each class c: max_{j != c} s_j  (B, C)
        rival = jnp.max(jnp.where(eye[None], -jnp.inf, scores[:, None, :]), axis=-1)
        per = jnp.minimum(scores - rival, scores - t[None])
        per = jnp.where(jax.nn.one_hot(y, c, dtype=bool), -jnp.inf, per)
        return jnp.max(per, axis=-1)
    raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")


def _towards(scores, y, t, *, loss, thresholds):
    """The targeted objectives with the true class y known (module doc)."""
    c = scores.shape[-1]
    if loss == "ce":
        return -(jax.nn.logsumexp(scores, axis=-1) - _own(scores, t))
    if loss == "margin":
        return margin(scores, t, targeted=True)
    if loss == "dlr":
        srt = jnp.sort(scores, axis=-1)[:, ::-1]
        den = srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + 1e-12
        return -(_own(scores, y) - _own(scores, t)) / den
    if loss == "reject":
        th = jnp.broadcast_to(jnp.asarray(thresholds, scores.dtype), (c,))
        s = _finite(scores)
        st = _own(s, t)
        return jnp.minimum(st - _best_other(s, t), st - th[t])
    raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")


def goal_reached(scores: jax.Array, y: jax.Array, *, targeted: bool = False,
                 thresholds: jax.Array | None = None) -> jax.Array:  # fmt: skip
    """(B,) bool: the attack's goal at these scores. Without thresholds: misclassified
    (untargeted) or the target predicted (targeted). With thresholds: additionally the predicted
    class is accepted (s_pred >= t_pred; `jaxrej.reject.decide`); non-finite rows never count."""
    s = _finite(scores)
    pred = jnp.argmax(s, axis=-1)
    ok = pred == y if targeted else pred != y
    ok = ok & jnp.all(jnp.isfinite(scores), axis=-1)
    if thresholds is not None:
        t = jnp.broadcast_to(jnp.asarray(thresholds, s.dtype), (s.shape[-1],))
        ok = ok & (_own(s, pred) >= t[pred])
    return ok
