"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks", Alg. 1), the step-size-free PGD at the core of AutoAttack.

    z_{k+1} = P( x_k + eta_k u(grad L(x_k)) )
    x_{k+1} = P( x_k + a (z_{k+1} - x_k) + (1 - a)(x_k - x_{k-1}) ),  a = 0.75 (1 at k = 0)
eta_0 = 2 eps. At checkpoints w_j (interval lengths 0.22 N, shrinking by 0.03 N per
checkpoint, at least 0.06 N -- the reference implementation's schedule) the step is halved and
the iterate restarts from the best point x_max when
  (1) the objective increased in at most 75% of the steps since the last checkpoint, or
  (2) the step was not halved at the last checkpoint and the best objective did not improve.
Returned per example: the best point that reaches the goal if any iterate did, else
the iterate with the highest objective (the reference code's x_best_adv / x_best).
u and P as in `jaxrej.attacks.pgd` (sign / L2-normalised; projection then range clip).
Losses: "ce" and "dlr" as in the paper, also "margin" and "reject". One jitted region.

APGD-T (`apgd_targeted`, AutoAttack's targeted APGD): one run per target class, the classes
ranked 2nd..(n+1)-th by the clean scores, on the targeted DLR loss (eq. 7) or the targeted
reject-aware loss; the goal stays "misclassified (and accepted)"; per example the best run.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrej.attacks import eot, stepper
from jaxrej.attacks.geometry import ascent_direction, project, run_start
from jaxrej.attacks.losses import check_loss, goal_reached
from jaxrej.attacks.options import check_common
from jaxrej.attacks.pgd import LOOPS, _num_classes
from jaxrej.attacks.result import (
    AttackResult,
    as_result,
    best_of_runs,
    better,
    keep_better,
    no_candidate,
    select,
)

__all__ = ["apgd", "apgd_targeted", "checkpoint_schedule", "top_targets"]

ALPHA = 0.75  # momentum
RHO = 0.75  # condition (1)


def checkpoint_schedule(steps: int) -> tuple[int, int, int]:
    """(first interval, decrement, minimum interval) in steps: 0.22 N, 0.03 N, 0.06 N (>= 1)."""
    return max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)


def _bcast(m, x):
    return m.reshape((-1,) + (1,) * (x.ndim - 1))


def top_targets(scores, y, n_targets):
    """(n_targets, B) int: per example the classes other than y ranked by score, best first
    (AutoAttack's APGD-T targets: the 2nd..(n+1)-th classes of a correctly classified input)."""
    s = jnp.where(jax.nn.one_hot(y, scores.shape[-1], dtype=bool), -jnp.inf, scores)
    s = jnp.where(jnp.isnan(s), -jnp.inf, s)
    return jnp.argsort(-s, axis=-1, stable=True)[:, :n_targets].T.astype(jnp.int32)


def _init_state(x0, lv, g, s, ok, eps, k0):
    """The APGD state after the first gradient evaluation at the start x0."""
    b = x0.shape[0]
    return dict(
        x=x0, x_old=x0, g=g, eta=jnp.full((b,), 2.0, x0.dtype) * eps, loss=lv,
        x_best=x0, g_best=g, loss_best=lv,
        adv=(x0, ok, lv, s),  # best candidate for the result
        n_incr=jnp.zeros((b,), jnp.int32), counter=jnp.int32(0), interval=jnp.int32(k0),
        loss_best_last=lv, reduced_last=jnp.zeros((b,), bool),
    )  # fmt: skip


def _propose(st, x, eps, i, *, norm, clip):
    """x_{k+1} of Alg. 1 (the momentum step) from the state at iteration i."""
    a = jnp.where(i == 0, 1.0, ALPHA).astype(x.dtype)
    xk = st["x"]
    z = project(xk + _bcast(st["eta"], xk) * ascent_direction(st["g"], norm), x, eps, norm, clip)
    return project(xk + a * (z - xk) + (1 - a) * (xk - st["x_old"]), x, eps, norm, clip)


def _update(st, x_new, lv, g, s, ok, *, dk, kmin):
    """The state after evaluating x_new: best points, step-size halving at checkpoints."""
    dtype = x_new.dtype
    cand = (x_new, ok, lv, s)
    adv = select(better(ok, lv, st["adv"][1], st["adv"][2]), cand, st["adv"])
    lv_f = jnp.where(jnp.isnan(lv), -jnp.inf, lv)
    incr = lv_f > st["loss"]
    imp = lv_f > st["loss_best"]
    x_best = select(imp, x_new, st["x_best"])
    g_best = select(imp, g, st["g_best"])
    loss_best = jnp.where(imp, lv_f, st["loss_best"])
    n_incr = st["n_incr"] + incr.astype(jnp.int32)
    counter = st["counter"] + 1
    at_check = counter == st["interval"]
    osc = n_incr.astype(dtype) <= RHO * st["interval"].astype(dtype)
    no_impr = ~st["reduced_last"] & (st["loss_best_last"] >= loss_best)
    reduce = at_check & (osc | no_impr)
    return dict(
        x=select(reduce, x_best, x_new), x_old=st["x"], g=select(reduce, g_best, g),
        eta=jnp.where(reduce, st["eta"] / 2, st["eta"]), loss=lv_f,
        x_best=x_best, g_best=g_best, loss_best=loss_best, adv=adv,
        n_incr=jnp.where(at_check, 0, n_incr),
        counter=jnp.where(at_check, 0, counter),
        interval=jnp.where(at_check, jnp.maximum(st["interval"] - dk, kmin), st["interval"]),
        loss_best_last=jnp.where(at_check, loss_best, st["loss_best_last"]),
        reduced_last=jnp.where(at_check, reduce, st["reduced_last"]),
    )  # fmt: skip


@functools.partial(
    jax.jit,
    static_argnames=("static_fn", "norm", "steps", "restarts", "loss", "clip", "targeted",
                     "n_eot", "stochastic", "rand_init", "n_targets"),
)  # fmt: skip
def _apgd(static_fn, leaves, x, y, key, eps, thresholds, *, norm, steps, restarts, loss, clip,
          targeted, n_eot, stochastic, rand_init=True, n_targets=0):  # fmt: skip
    fn = eot.join_scorer(static_fn, leaves)
    k0, dk, kmin = checkpoint_schedule(steps)
    k_runs, k_clean = key, jax.random.fold_in(key, 0x7FFFFFFF)  # runs: fold_in(key, r)
    if n_targets:  # APGD-T: targets from the clean scores, the goal stays "misclassified"
        s_clean = eot.scores_at(fn, x, k_clean, stochastic=stochastic, n_eot=n_eot)
        targets = top_targets(s_clean, y, n_targets)
    n_runs = restarts * max(n_targets, 1)
    none = no_candidate(x, jax.eval_shape(lambda z: eot.call(fn, z, key, stochastic), x).shape[-1])
    s_none = none[3]

    def goal(s):
        return goal_reached(s, y, targeted=targeted, thresholds=thresholds)

    def one_restart(r):
        x0, k_r = run_start(x, jax.random.fold_in(k_runs, r), eps, norm=norm, clip=clip,
                            rand_init=rand_init)  # fmt: skip
        kw = dict(stochastic=stochastic, n_eot=n_eot, loss=loss, targeted=targeted,
                  thresholds=thresholds,
                  target=targets[r % n_targets] if n_targets else None)  # fmt: skip

        def step(st, i):  # i = 0 evaluates the start: one trace of the gradient for all steps
            x_new = jnp.where(i == 0, x0, _propose(st, x, eps, i - 1, norm=norm, clip=clip))
            lv, g, s = eot.loss_and_grad(fn, x_new, y, jax.random.fold_in(k_r, i), **kw)
            first = _init_state(x0, lv, g, s, goal(s), eps, k0)
            nxt = _update(st, x_new, lv, g, s, goal(s), dk=dk, kmin=kmin)
            return jax.tree_util.tree_map(lambda u, v: jnp.where(i == 0, u, v), first, nxt), None

        b = x.shape[0]
        blank = jax.eval_shape(lambda: _init_state(x0, jnp.zeros(b, x.dtype), x0, s_none,
                                                   jnp.zeros(b, bool), eps, k0))  # fmt: skip
        st = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), blank)
        st, _ = jax.lax.scan(step, st, jnp.arange(steps))
        return st["adv"]

    best = best_of_runs(one_restart, n_runs, none)  # one trace serves every restart and target
    return as_result(best, x, y, norm=norm, targeted=targeted)


_jit_propose = jax.jit(_propose, static_argnames=("norm", "clip"))
_jit_update = jax.jit(_update, static_argnames=("dk", "kmin"))


@functools.partial(jax.jit, static_argnames=("targeted", "k0"))
def _first(x0, lv, g, s, y, eps, thresholds, *, targeted, k0):
    return _init_state(x0, lv, g, s, goal_reached(s, y, targeted=targeted,
                                                  thresholds=thresholds), eps, k0)  # fmt: skip


@functools.partial(jax.jit, static_argnames=("targeted",))
def _goal(s, y, thresholds, *, targeted):
    return goal_reached(s, y, targeted=targeted, thresholds=thresholds)


_keep = jax.jit(keep_better)


def _apgd_python(step, x, y, key, eps, thresholds, none, *, norm, steps, restarts, loss, clip,
                 targeted, rand_init, n_targets):  # fmt: skip
    """`_apgd` as a Python loop over the shared gradient step (`jaxrej.attacks.stepper`)."""
    k0, dk, kmin = checkpoint_schedule(steps)
    kw = dict(loss=loss, targeted=targeted, thresholds=thresholds)
    if n_targets:
        s_clean = step(x, y, jax.random.fold_in(key, 0x7FFFFFFF), **kw, target=None)[2]
        targets = top_targets(s_clean, y, n_targets)
    best = none
    for r in range(restarts * max(n_targets, 1)):
        t = targets[r % n_targets] if n_targets else None
        x0, k_r = run_start(x, jax.random.fold_in(key, r), eps, norm=norm, clip=clip,
                            rand_init=rand_init)  # fmt: skip
        lv, g, s = step(x0, y, jax.random.fold_in(k_r, 0), **kw, target=t)
        st = _first(x0, lv, g, s, y, eps, thresholds, targeted=targeted, k0=k0)
        for i in range(steps - 1):
            x_new = _jit_propose(st, x, eps, jnp.int32(i), norm=norm, clip=clip)
            lv, g, s = step(x_new, y, jax.random.fold_in(k_r, i + 1), **kw, target=t)
            ok = _goal(s, y, thresholds, targeted=targeted)
            st = _jit_update(st, x_new, lv, g, s, ok, dk=dk, kmin=kmin)
        best = _keep(st["adv"], best, jnp.asarray(r == 0))
    return as_result(best, x, y, norm=norm, targeted=targeted)


def _run(class_score_fn, x, y, key, eps, thresholds, c, *, loop, stochastic, n_eot, **kw):
    if loop not in LOOPS:
        raise ValueError(f"loop: expected one of {LOOPS}, got {loop!r}")
    static_fn, leaves = eot.split_scorer(class_score_fn)
    x = jnp.asarray(x)
    th = None if thresholds is None else jnp.asarray(thresholds, x.dtype)
    y, eps = jnp.asarray(y, jnp.int32), jnp.asarray(eps, x.dtype)
    if loop == "python":
        step = stepper.step_fn(static_fn, leaves, num_classes=c, stochastic=stochastic,
                               n_eot=n_eot)  # fmt: skip
        return _apgd_python(step, x, y, key, eps, th, no_candidate(x, c), **kw)
    return _apgd(static_fn, leaves, x, y, key, eps, th, n_eot=n_eot, stochastic=stochastic,
                 **kw)  # fmt: skip


def apgd(class_score_fn, x, y, *, key, eps, norm="linf", steps=100, restarts=1, loss="ce",
         clip=(0.0, 1.0), targeted=False, thresholds=None, n_eot=1, stochastic=False,
         random_start=True, loop="compiled") -> AttackResult:  # fmt: skip
    """APGD (module doc) on `class_score_fn: (B, *event) -> (B, C)`; options as in
    `jaxrej.attacks.pgd` (no step size: it adapts). steps counts gradient evaluations;
    random_start=False starts every restart at x itself; loop: "compiled" (one jitted region)
    or "python" (the shared gradient step of `jaxrej.attacks.stepper`, same numbers)."""
    c = _num_classes(class_score_fn, x, key, stochastic)
    clip = check_common(x, y, eps=eps, norm=norm, steps=steps, restarts=restarts, loss=loss,
                        clip=clip, targeted=targeted, thresholds=thresholds, n_eot=n_eot,
                        num_classes=c)  # fmt: skip
    return _run(class_score_fn, x, y, key, eps, thresholds, c, loop=loop,
                stochastic=bool(stochastic), n_eot=n_eot, norm=norm, steps=steps,
                restarts=restarts, loss=loss, clip=clip, targeted=bool(targeted),
                rand_init=bool(random_start), n_targets=0)  # fmt: skip


def apgd_targeted(class_score_fn, x, y, *, key, eps, norm="linf", steps=100, n_targets=3,
                  restarts=1, loss="dlr", clip=(0.0, 1.0), thresholds=None, n_eot=1,
                  stochastic=False, random_start=True, loop="compiled") -> AttackResult:  # fmt: skip
    """APGD-T (Croce & Hein 2020, AutoAttack): one APGD run of `restarts` restarts towards each
    of the n_targets classes ranked 2nd..(n_targets+1)-th by the clean scores (the best
    classes other than y), the targeted DLR loss (eq. 7) by default; per example the best run.

    y (B,) are the TRUE labels: success means misclassified (with `thresholds`: misclassified
    and accepted -- loss="reject" then pulls towards "target predicted and accepted"), and the
    margin is the untargeted one. loss: "dlr" (C >= 4) | "ce" | "margin" | "reject".
    One compiled region (the runs are one scan), or loop="python" as in `apgd`."""
    c = _num_classes(class_score_fn, x, key, stochastic)
    clip = check_common(x, y, eps=eps, norm=norm, steps=steps, restarts=restarts, loss="ce",
                        clip=clip, targeted=False, thresholds=thresholds, n_eot=n_eot,
                        num_classes=c)  # fmt: skip
    check_loss(loss, c, targeted=False, thresholds=thresholds, target=True)
    if not (isinstance(n_targets, int) and not isinstance(n_targets, bool)
            and 1 <= n_targets <= c - 1):  # fmt: skip
        raise ValueError(f"n_targets: expected an int in [1, {c - 1}], got {n_targets!r}")
    return _run(class_score_fn, x, y, key, eps, thresholds, c, loop=loop,
                stochastic=bool(stochastic), n_eot=n_eot, norm=norm, steps=steps,
                restarts=restarts, loss=loss, clip=clip, targeted=False,
                rand_init=bool(random_start), n_targets=n_targets)  # fmt: skip
