"""Projected gradient descent (Madry et al. 2018) and its special cases FGSM and BIM.

One iteration rule (foolbox 3's `LinfPGD` / `L2PGD` step, in ascent form):
    x_{k+1} = clip_range( P_{B(x, eps)}( x_k + alpha * u(grad_x L(f(x_k), y)) ) ),
u = sign (L-inf) or g / ||g||_2 (L2), P the projection onto the eps-ball, L an objective of
`jaxrej.attacks.losses` (maximised). x_0 = x (FGSM, BIM, `random_start=False`) or a uniform
draw from the ball. FGSM (Goodfellow et al. 2015) is one step of size eps; BIM (Kurakin et al.
2017) iterates from x. Restarts draw new starts; per example the best candidate wins (goal
reached first, then the highest objective); with `keep_best` every iterate is a candidate.

The whole attack -- restarts, steps, EOT draws and the selection -- is ONE jitted region
(`lax.scan`s); options are static, eps / step size / thresholds traced, so a sweep over eps
compiles once. loop="python" runs the same iteration as a Python loop around the shared
gradient step of `jaxrej.attacks.stepper` (compiled once per scorer for every attack, loss and
eps) and small jitted updates: the same numbers, for scorers whose gradient is costly to
compile or has convolutions (benchmarks/attack_cost, benchmarks/conv_in_loop).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrej.attacks import eot, stepper
from jaxrej.attacks.geometry import ascent_direction, project, run_start
from jaxrej.attacks.losses import goal_reached
from jaxrej.attacks.options import check_common
from jaxrej.attacks.result import (
    AttackResult,
    as_result,
    best_of_runs,
    better,
    keep_better,
    no_candidate,
    select,
)

__all__ = ["pgd", "fgsm", "bim", "LOOPS"]

LOOPS = ("compiled", "python")


@functools.partial(
    jax.jit,
    static_argnames=("static_fn", "norm", "steps", "restarts", "loss", "clip", "targeted",
                     "rand_init", "n_eot", "stochastic", "keep_best"),
)  # fmt: skip
def _pgd(static_fn, leaves, x, y, key, eps, step_size, thresholds, *, norm, steps, restarts, loss,
         clip, targeted, rand_init, n_eot, stochastic, keep_best):  # fmt: skip
    fn = eot.join_scorer(static_fn, leaves)
    kw = dict(stochastic=stochastic, n_eot=n_eot, loss=loss, targeted=targeted,
              thresholds=thresholds)  # fmt: skip

    def goal(s):
        return goal_reached(s, y, targeted=targeted, thresholds=thresholds)

    s_shape = jax.eval_shape(lambda z: eot.call(fn, z, key, stochastic), x).shape
    none = no_candidate(x, s_shape[-1])

    def one_restart(r):
        x_k, k_r = run_start(x, jax.random.fold_in(key, r), eps, norm=norm, clip=clip,
                             rand_init=rand_init)  # fmt: skip

        def step(carry, i):  # i = steps evaluates the last iterate (its gradient is unused):
            x_k, best = carry  # one trace of the gradient serves every evaluation
            lv, g, s = eot.loss_and_grad(fn, x_k, y, jax.random.fold_in(k_r, i), **kw)
            take = better(goal(s), lv, best[1], best[2])
            take = take if keep_best else take & (i == steps)
            best = select(take, (x_k, goal(s), lv, s), best)
            x_next = project(x_k + step_size * ascent_direction(g, norm), x, eps, norm, clip)
            return (x_next, best), None

        (_, best), _ = jax.lax.scan(step, (x_k, none), jnp.arange(steps + 1))
        return best

    best = best_of_runs(one_restart, restarts, none)  # one trace of a run serves every restart
    return as_result(best, x, y, norm=norm, targeted=targeted)


@functools.partial(jax.jit, static_argnames=("norm", "clip", "targeted", "keep_best"))
def _pgd_update(x, x_k, lv, g, s, best, y, eps, step_size, thresholds, *, norm, clip, targeted,
                keep_best):  # fmt: skip
    if keep_best:
        cand = (x_k, goal_reached(s, y, targeted=targeted, thresholds=thresholds), lv, s)
        best = select(better(cand[1], lv, best[1], best[2]), cand, best)
    return project(x_k + step_size * ascent_direction(g, norm), x, eps, norm, clip), best


@functools.partial(jax.jit, static_argnames=("targeted",))
def _pgd_last(x_last, lv, s, run_best, best, y, thresholds, first, *, targeted):
    last = (x_last, goal_reached(s, y, targeted=targeted, thresholds=thresholds), lv, s)
    run_best = select(better(last[1], lv, run_best[1], run_best[2]), last, run_best)
    return keep_better(run_best, best, first)


def _pgd_python(step, x, y, key, eps, step_size, thresholds, none, *, norm, steps, restarts,
                loss, clip, targeted, rand_init, keep_best):  # fmt: skip
    """`_pgd`'s iteration as a Python loop over the shared gradient step (module doc)."""
    kw = dict(loss=loss, targeted=targeted, thresholds=thresholds, target=None)
    best = none
    for r in range(restarts):
        x_k, k_r = run_start(x, jax.random.fold_in(key, r), eps, norm=norm, clip=clip,
                             rand_init=rand_init)  # fmt: skip
        run_best = none
        for i in range(steps):
            lv, g, s = step(x_k, y, jax.random.fold_in(k_r, i), **kw)
            x_k, run_best = _pgd_update(x, x_k, lv, g, s, run_best, y, eps, step_size,
                                        thresholds, norm=norm, clip=clip, targeted=targeted,
                                        keep_best=keep_best)  # fmt: skip
        lv, _, s = step(x_k, y, jax.random.fold_in(k_r, steps), **kw)
        best = _pgd_last(x_k, lv, s, run_best, best, y, thresholds, jnp.asarray(r == 0),
                         targeted=targeted)  # fmt: skip
    return as_result(best, x, y, norm=norm, targeted=targeted)


def pgd(class_score_fn, x, y, *, key, eps, norm="linf", steps=40, step_size=None, restarts=1,
        loss="ce", clip=(0.0, 1.0), targeted=False, random_start=True, keep_best=True,
        thresholds=None, n_eot=1, stochastic=False, loop="compiled") -> AttackResult:  # fmt: skip
    """PGD on `class_score_fn: (B, *event) -> (B, C)` (module doc); x (B, *event), y (B,) true
    labels, or target classes with targeted=True.

    eps: the ball's radius in `norm` ("linf" | "l2"); step_size: absolute step alpha (default
    2.5 eps / steps); restarts: random starts (the first is x itself when random_start=False);
    loss: "ce" | "margin" | "dlr" | "reject" (`jaxrej.attacks.losses`); clip: the data range
    (lo, hi) or None; keep_best: return the best iterate rather than the last (False: foolbox's
    PGD, the last iterate); thresholds: per-class reject thresholds (C,) -- success then also
    requires acceptance, and loss="reject" uses them; stochastic: call class_score_fn(x, key);
    n_eot: gradient draws averaged per step (`jaxrej.attacks.eot`); loop: "compiled" (one
    jitted region) or "python" (the shared gradient step of `jaxrej.attacks.stepper`).
    Returns an AttackResult.
    """
    c = _num_classes(class_score_fn, x, key, stochastic)
    clip = check_common(x, y, eps=eps, norm=norm, steps=steps, restarts=restarts, loss=loss,
                        clip=clip, targeted=targeted, thresholds=thresholds, n_eot=n_eot,
                        num_classes=c)  # fmt: skip
    if step_size is None:
        step_size = 2.5 * eps / steps
    if not (isinstance(step_size, (int, float)) and step_size >= 0):
        raise ValueError(f"step_size: expected a number >= 0 or None, got {step_size!r}")
    if loop not in LOOPS:
        raise ValueError(f"loop: expected one of {LOOPS}, got {loop!r}")
    static_fn, leaves = eot.split_scorer(class_score_fn)
    x = jnp.asarray(x)
    th = None if thresholds is None else jnp.asarray(thresholds, x.dtype)
    if loop == "python":
        step = stepper.step_fn(static_fn, leaves, num_classes=c, stochastic=bool(stochastic),
                               n_eot=n_eot)  # fmt: skip
        return _pgd_python(step, x, jnp.asarray(y, jnp.int32), key, jnp.asarray(eps, x.dtype),
                           jnp.asarray(step_size, x.dtype), th, no_candidate(x, c), norm=norm,
                           steps=steps, restarts=restarts, loss=loss, clip=clip,
                           targeted=bool(targeted), rand_init=bool(random_start),
                           keep_best=bool(keep_best))  # fmt: skip
    return _pgd(static_fn, leaves, x, jnp.asarray(y, jnp.int32), key,
                jnp.asarray(eps, x.dtype), jnp.asarray(step_size, x.dtype), th, norm=norm,
                steps=steps, restarts=restarts, loss=loss, clip=clip, targeted=bool(targeted),
                rand_init=bool(random_start), n_eot=n_eot, stochastic=bool(stochastic),
                keep_best=bool(keep_best))  # fmt: skip


def fgsm(class_score_fn, x, y, *, key, eps, norm="linf", **kw) -> AttackResult:
    """Fast gradient (sign) method: one step of size eps from x (Goodfellow et al. 2015)."""
    return pgd(class_score_fn, x, y, key=key, eps=eps, norm=norm, steps=1, step_size=eps,
               random_start=False, **kw)  # fmt: skip


def bim(class_score_fn, x, y, *, key, eps, norm="linf", steps=10, step_size=None,
        **kw) -> AttackResult:  # fmt: skip
    """Basic iterative method (Kurakin et al. 2017): PGD from x without a random start; default
    step 1.25 eps / steps (the paper's alpha = 1/255 over min(eps + 4, 1.25 eps) steps)."""
    if step_size is None:
        step_size = 1.25 * eps / steps
    return pgd(class_score_fn, x, y, key=key, eps=eps, norm=norm, steps=steps,
               step_size=step_size, random_start=False, **kw)  # fmt: skip


def _num_classes(fn, x, key, stochastic):
    """C from the scorer's output shape (abstract evaluation, no FLOPs)."""
    x = jnp.asarray(x)
    try:
        out = jax.eval_shape(lambda z: eot.call(fn, z, key, stochastic), x)
    except TypeError as e:
        raise ValueError(
            f"class_score_fn: calling it as {'f(x, key)' if stochastic else 'f(x)'} failed "
            f"({e}); pass stochastic=True for a scorer that takes a key"
        ) from e
    if len(out.shape) != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"class_score_fn: expected scores of shape ({x.shape[0]}, C), got {out.shape}"
        )
    return out.shape[1]
