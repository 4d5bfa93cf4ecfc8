"""Square attack (Andriushchenko et al. 2020, "Square Attack: a query-efficient black-box
adversarial attack via random search"), L-inf (Alg. 1 with the sampler of Alg. 2) and L2
(Alg. 3), gradient-free: only class scores are queried, so no gradient masking can stop it.

Random search on the attack objective L (`jaxrej.attacks.losses`, maximised; the margin loss by
default, "reject" attacks a classifier with a reject option). Per example and iteration i:

    side s_i = round(sqrt(p_i H W)) (L-inf: 1 <= s <= min(H, W); L2: odd, >= 3), with
    p_i = p_init / 2^k halved at the paper's iteration marks (i / N in 10, 50, 200, 500, 1000,
    2000, 4000, 6000, 8000 of 10000; `p_schedule`);
    L-inf: delta_new = delta with one s x s window set to eps * (+-1 per channel) (Alg. 2);
    L2:    the window w1 gets a pseudo-Gaussian bump (two opposite rectangles of weights
           1 / (k + 1)^2) of random sign per channel added to its normalised old content, a
           second window w2 is emptied, the mass of both is redistributed so that ||delta|| = eps
           (Alg. 3 / the reference code);
    x_new = clip(x + delta_new, data range);  accept x_new iff it reaches the goal or raises L
    (`jaxrej.attacks.result.better`), per example; an example that reached its goal is frozen.
Starts: L-inf vertical stripes x + eps * (+-1 per column and channel); L2 a grid of
pseudo-Gaussian bumps of random signs scaled to ||delta||_2 = eps. An example whose clean input
already reaches the goal is returned at x (the reference attacks only the others).

Images are channels-last: event (H, W, C) or (H, W). Every random draw of example j comes from
`fold_in(key, j)`, so an example's result never depends on its batch neighbours (for a scorer
that scores each row on its own). `queries` counts score evaluations per example (the start and
the clean input count as two). The loop is one `lax.fori_loop` (loop="compiled"); loop="python"
runs one jitted iteration per Python step instead (same numbers) -- only a forward pass is
inside the loop, which XLA:CPU runs at the same speed inside a compiled loop even for
convolutions (benchmarks/conv_in_loop, benchmarks/square_loop).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxrej.attacks import eot
from jaxrej.attacks.geometry import lp_norm
from jaxrej.attacks.losses import attack_loss, goal_reached, margin
from jaxrej.attacks.options import check_common
from jaxrej.attacks.pgd import _num_classes
from jaxrej.attacks.result import AttackResult, better, select

__all__ = ["square", "p_schedule", "window_sizes", "LOOPS"]

LOOPS = ("compiled", "python")
_MARKS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, i: int, n_iters: int) -> float:
    """The paper's fraction of pixels changed at iteration i of n_iters (reference p_selection):
    p_init halved at each mark the rescaled iteration int(i / n_iters * 10000) has passed."""
    it = int(i / n_iters * 10000)
    return p_init / 2 ** sum(it > m for m in _MARKS)


def window_sizes(p_init: float, n_iters: int, h: int, w: int, norm: str) -> np.ndarray:
    """(n_iters,) int: the square's side per iteration (module doc)."""
    out = np.empty(n_iters, np.int32)
    for i in range(n_iters):
        s = int(round(math.sqrt(p_schedule(p_init, i, n_iters) * h * w)))
        if norm == "linf":
            s = max(s, 1)
        else:
            s = max(s, 3)
            s += 1 - s % 2  # odd
        out[i] = min(s, h, w)
    return out


def _rect_bump(n: int, m: int) -> np.ndarray:
    """Reference `pseudo_gaussian_pert_rectangles`: nested rectangles of weight 1 / (k + 1)^2
    around the centre, unit L2 norm."""
    d = np.zeros((n, m))
    if n == 0 or m == 0:
        return d
    xc, yc = n // 2 + 1, m // 2 + 1
    c0, c1 = xc - 1, yc - 1
    for k in range(max(xc, yc)):
        d[max(c0, 0) : min(c0 + 2 * k + 1, n), max(c1, 0) : min(c1 + 2 * k + 1, m)] += (
            1.0 / (k + 1) ** 2
        )
        c0 -= 1
        c1 -= 1
    return d / np.sqrt(np.sum(d**2))


def _bump(s: int) -> np.ndarray:
    """Reference `meta_pseudo_gaussian_pert`: (s, s), upper half +bump, lower half -bump, unit
    norm (the random transpose is drawn by the caller)."""
    d = np.zeros((s, s))
    d[: s // 2] = _rect_bump(s // 2, s)
    d[s // 2 :] = -_rect_bump(s - s // 2, s)
    return d / np.sqrt(np.sum(d**2))


def _bank(sizes: np.ndarray, h: int, w: int):
    """(bank (K, 2, H, W) float32: the bump of each distinct side at the top-left corner, as is
    and transposed; index (n_iters,) int32 into the bank)."""
    uniq = sorted(set(int(s) for s in sizes))
    bank = np.zeros((len(uniq), 2, h, w), np.float32)
    for k, s in enumerate(uniq):
        b = _bump(s)
        bank[k, 0, :s, :s] = b
        bank[k, 1, :s, :s] = b.T
    index = np.asarray([uniq.index(int(s)) for s in sizes], np.int32)
    return bank, index


def _l2_init_blocks(h: int, w: int) -> np.ndarray:
    """(n_blocks, 2, H, W): the reference L2 start's grid of bumps of side h // 5 (>= 1), each
    as is and transposed; the start is sum_b sign_(b, c) * block_b, scaled to norm eps."""
    s = max(h // 5, 1)
    sp = (h - s * 5) // 2 if h >= 5 else 0
    blocks = []
    b = _bump(s)
    ch = sp
    for _ in range(h // s):
        cw = sp
        for _ in range(w // s):
            if ch < h and cw < w:
                blk = np.zeros((2, h, w), np.float32)
                hh, ww = min(s, h - ch), min(s, w - cw)
                blk[0, ch : ch + hh, cw : cw + ww] = b[:hh, :ww]
                blk[1, ch : ch + hh, cw : cw + ww] = b.T[:hh, :ww]
                blocks.append(blk)
            cw += s
        ch += s
    return np.stack(blocks)


def _window(h, w, ch, cw, s):
    """(H, W) bool: the s x s window at (ch, cw) (all traced)."""
    r = jnp.arange(h)[:, None]
    c = jnp.arange(w)[None, :]
    return (r >= ch) & (r < ch + s) & (c >= cw) & (c < cw + s)


def _corner(uh, uw, h, w, s):
    """A uniform top-left corner of an s x s window from two U(0, 1) numbers."""
    ch = jnp.minimum(jnp.floor(uh * (h - s + 1)).astype(jnp.int32), h - s)
    cw = jnp.minimum(jnp.floor(uw * (w - s + 1)).astype(jnp.int32), w - s)
    return ch, cw


def _signs(u, dtype):
    return jnp.where(u < 0.5, -1.0, 1.0).astype(dtype)


def _place(patch, ch, cw):
    """(H, W): patch (H, W, zero beyond its s x s corner) moved to the corner (ch, cw)."""
    h, w = patch.shape
    r = jnp.arange(h) - ch
    c = jnp.arange(w) - cw
    out = patch[jnp.clip(r, 0, h - 1)][:, jnp.clip(c, 0, w - 1)]
    return jnp.where((r >= 0)[:, None] & (c >= 0)[None, :], out, 0.0)


def _linf_init(x, eps, k):
    """One example (H, W, C): vertical stripes eps * (+-1) per column and channel."""
    sign = _signs(jax.random.uniform(k, (1,) + x.shape[1:]), x.dtype)
    return x + eps * sign


def _l2_init(x, eps, k, blocks):
    nb = blocks.shape[0]
    u = jax.random.uniform(k, (nb, 1 + x.shape[-1]))
    t = (u[:, 0] < 0.5).astype(jnp.int32)
    sign = _signs(u[:, 1:], x.dtype)
    pick = blocks[jnp.arange(nb), t]  # (nb, H, W)
    d = jnp.einsum("bhw,bc->hwc", pick, sign)
    return x + d * eps / jnp.maximum(jnp.sqrt(jnp.sum(d * d)), 1e-12)


def _linf_proposal(x, xb, eps, s, k, clip):
    """One example: x_best with one s x s window set to x + eps * (+-1 per channel); where that
    changes nothing in the window (clipped), the opposite signs (the reference resamples)."""
    h, w, c = x.shape
    u = jax.random.uniform(k, (2 + c,))  # one draw: corner, signs
    ch, cw = _corner(u[0], u[1], h, w, s)
    m = _window(h, w, ch, cw, s)[..., None]
    sign = _signs(u[2:], x.dtype)

    def make(sg):
        new = jnp.where(m, x + eps * sg, xb)
        return new if clip is None else jnp.clip(new, clip[0], clip[1])

    new = make(sign)
    same = jnp.all(jnp.where(m, jnp.abs(new - xb) < 1e-7, True))
    return jnp.where(same, make(-sign), new)


def _l2_proposal(x, xb, eps, s, bump_index, k, bank, clip):
    """One example: Alg. 3 (reference `square_attack_l2` iteration), channels-last."""
    h, w, c = x.shape
    u = jax.random.uniform(k, (5 + c,))  # one draw: two corners, transpose, signs
    ch, cw = _corner(u[0], u[1], h, w, s)
    ch2, cw2 = _corner(u[2], u[3], h, w, s)
    m1 = _window(h, w, ch, cw, s)[..., None].astype(x.dtype)
    m2 = _window(h, w, ch2, cw2, s)[..., None].astype(x.dtype)
    delta = xb - x
    norm_w1 = jnp.sqrt(jnp.sum(jnp.square(delta * m1), axis=(0, 1)))  # (C,)
    norm_img = jnp.sqrt(jnp.sum(jnp.square(delta)))
    norm_w12 = jnp.sqrt(jnp.sum(jnp.square(delta * jnp.maximum(m1, m2)), axis=(0, 1)))
    t = (u[4] < 0.5).astype(jnp.int32)
    bump = _place(bank[bump_index, t], ch, cw).astype(x.dtype)  # (H, W)
    sign = _signs(u[5:], x.dtype)
    new = bump[..., None] * sign + delta * m1 / (1e-10 + norm_w1)
    room = jnp.maximum(eps**2 - norm_img**2, 0.0) / c + norm_w12**2  # (C,)
    new = new / jnp.maximum(jnp.sqrt(jnp.sum(new * new, axis=(0, 1))), 1e-12) * jnp.sqrt(room)
    d = jnp.where(m1 > 0, new, delta * (1.0 - m2))
    d = d * eps / jnp.maximum(jnp.sqrt(jnp.sum(d * d)), 1e-12)
    out = x + d
    return out if clip is None else jnp.clip(out, clip[0], clip[1])


def _parts(static_fn, leaves, x, y, key, eps, thresholds, sizes, index, bank, blocks, *, norm,
           loss, clip, targeted, n_eot, stochastic, squeeze):  # fmt: skip
    """(init, step, finish) closures of one attack on images x (B, H, W, C); squeeze: the
    scorer takes (B, H, W)."""
    inner = eot.join_scorer(static_fn, leaves)

    def fn(z, *k):
        return inner(z[..., 0] if squeeze else z, *k)

    b = x.shape[0]
    k_ex, score_key = jax.random.split(key)
    ex_keys = jax.vmap(lambda j: jax.random.fold_in(k_ex, j))(jnp.arange(b))

    def evaluate(z, i):
        s = eot.scores_at(fn, z, jax.random.fold_in(score_key, i), stochastic=stochastic,
                          n_eot=n_eot)  # fmt: skip
        lv = attack_loss(s, y, loss=loss, targeted=targeted, thresholds=thresholds)
        ok = goal_reached(s, y, targeted=targeted, thresholds=thresholds)
        return z, ok, lv, s

    def init():
        ks = jax.vmap(lambda k: jax.random.fold_in(k, 0))(ex_keys)
        if norm == "linf":
            x0 = jax.vmap(_linf_init, in_axes=(0, None, 0))(x, eps, ks)
        else:
            x0 = jax.vmap(_l2_init, in_axes=(0, None, 0, None))(x, eps, ks, blocks)
        x0 = x0 if clip is None else jnp.clip(x0, clip[0], clip[1])
        clean = evaluate(x, 0)
        start = evaluate(x0, 1)
        return select(clean[1], clean, start)  # the clean input only where it is the goal

    def step(i, best):
        ks = jax.vmap(lambda k: jax.random.fold_in(k, i + 1))(ex_keys)
        xb = best[0]
        if norm == "linf":
            prop = jax.vmap(_linf_proposal, in_axes=(0, 0, None, None, 0, None))(
                x, xb, eps, sizes[i], ks, clip)  # fmt: skip
        else:
            prop = jax.vmap(_l2_proposal, in_axes=(0, 0, None, None, None, 0, None, None))(
                x, xb, eps, sizes[i], index[i], ks, bank, clip)  # fmt: skip
        cand = evaluate(prop, i + 2)
        take = ~best[1] & better(cand[1], cand[2], best[1], best[2])
        return select(take, cand, best)

    def finish(best):
        x_adv, ok, lv, s = best
        return AttackResult(x_adv=x_adv, success=ok, margin=margin(s, y, targeted=targeted),
                            norm=lp_norm(x_adv - x, norm), scores=s, loss=lv)  # fmt: skip

    return init, step, finish


_STATIC = ("static_fn", "norm", "loss", "clip", "targeted", "n_eot", "stochastic", "squeeze")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _square(static_fn, leaves, x, y, key, eps, thresholds, sizes, index, bank, blocks, **kw):
    init, step, finish = _parts(static_fn, leaves, x, y, key, eps, thresholds, sizes, index, bank,
                                blocks, **kw)  # fmt: skip
    return finish(jax.lax.fori_loop(0, sizes.shape[0], step, init()))


@functools.partial(jax.jit, static_argnames=_STATIC)
def _square_init(static_fn, leaves, x, y, key, eps, thresholds, sizes, index, bank, blocks, **kw):
    return _parts(static_fn, leaves, x, y, key, eps, thresholds, sizes, index, bank, blocks,
                  **kw)[0]()  # fmt: skip


@functools.partial(jax.jit, static_argnames=_STATIC)
def _square_step(static_fn, leaves, x, y, key, eps, thresholds, sizes, index, bank, blocks, i,
                 best, **kw):  # fmt: skip
    _, step, finish = _parts(static_fn, leaves, x, y, key, eps, thresholds, sizes, index, bank,
                             blocks, **kw)  # fmt: skip
    return step(i, best)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _square_finish(static_fn, leaves, x, y, key, eps, thresholds, sizes, index, bank, blocks,
                   best, **kw):  # fmt: skip
    return _parts(static_fn, leaves, x, y, key, eps, thresholds, sizes, index, bank, blocks,
                  **kw)[2](best)  # fmt: skip


def square(class_score_fn, x, y, *, key, eps, norm="linf", queries=1000, p_init=0.8,
           loss="margin", clip=(0.0, 1.0), targeted=False, thresholds=None, n_eot=1,
           stochastic=False, loop="compiled") -> AttackResult:  # fmt: skip
    """Square attack (module doc) on `class_score_fn: (B, *event) -> (B, C)`.

    x (B, H, W, C) or (B, H, W) images in the data range `clip`; y (B,) true labels (targets
    with targeted=True); eps: the radius in `norm` ("linf" | "l2"); queries: score evaluations
    per example (>= 3); p_init: the starting fraction of pixels per square (AutoAttack's 0.8;
    the paper uses 0.05 - 0.3 on ImageNet); loss: "margin" (default) | "ce" | "dlr" | "reject"
    (needs `thresholds` (C,); success then means fooled AND accepted); stochastic / n_eot: a
    scorer called as f(x, key), its scores averaged over n_eot fresh draws per query;
    loop: "compiled" (one fori_loop) or "python" (one jitted iteration per step).
    Returns an AttackResult (x_adv inside the eps-ball and the data range).
    """
    c = _num_classes(class_score_fn, x, key, stochastic)
    clip = check_common(x, y, eps=eps, norm=norm, steps=1, restarts=1, loss=loss, clip=clip,
                        targeted=targeted, thresholds=thresholds, n_eot=n_eot,
                        num_classes=c)  # fmt: skip
    if not (isinstance(queries, int) and not isinstance(queries, bool) and queries >= 3):
        raise ValueError(f"queries: expected an int >= 3, got {queries!r}")
    if not (isinstance(p_init, (int, float)) and 0.0 < p_init <= 1.0):
        raise ValueError(f"p_init: expected a number in (0, 1], got {p_init!r}")
    if loop not in LOOPS:
        raise ValueError(f"loop: expected one of {LOOPS}, got {loop!r}")
    x = jnp.asarray(x)
    event = x.shape[1:]
    if len(event) not in (2, 3):
        raise ValueError(f"x: Square needs images (B, H, W) or (B, H, W, C), got shape {x.shape}")
    xi = x[..., None] if len(event) == 2 else x
    h, w = xi.shape[1:3]
    if norm == "l2" and min(h, w) < 3:
        raise ValueError(f"x: the L2 Square attack needs images of side >= 3, got {h} x {w}")
    n_iters = queries - 2
    sizes = window_sizes(p_init, n_iters, h, w, norm)
    bank, index = _bank(sizes, h, w)
    blocks = _l2_init_blocks(h, w)
    static_fn, leaves = eot.split_scorer(class_score_fn)
    th = None if thresholds is None else jnp.asarray(thresholds, x.dtype)
    args = (static_fn, leaves, xi, jnp.asarray(y, jnp.int32), key, jnp.asarray(eps, x.dtype), th,
            jnp.asarray(sizes), jnp.asarray(index), jnp.asarray(bank, x.dtype),
            jnp.asarray(blocks, x.dtype))  # fmt: skip
    kw = dict(norm=norm, loss=loss, clip=clip, targeted=bool(targeted), n_eot=n_eot,
              stochastic=bool(stochastic), squeeze=len(event) == 2)  # fmt: skip
    if loop == "compiled":
        res = _square(*args, **kw)
    else:
        best = _square_init(*args, **kw)
        for i in range(n_iters):
            best = _square_step(*args, jnp.int32(i), best, **kw)
        res = _square_finish(*args, best, **kw)
    if len(event) == 2:
        res = res.replace(x_adv=res.x_adv[..., 0])
    return res
