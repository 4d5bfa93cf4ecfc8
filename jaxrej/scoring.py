"""log p(x | y) for every class y: a pure, differentiable scorer and a host-scheduled cascade.

Scoring C classes means B * C probability-flow solves, but a decision (argmax, a reject threshold
on the predicted class, the marginal log p(x)) and an attack's loss need full accuracy only for
the classes near the top: a class `m` nats below the best changes log p(x) by at most exp(-m).

`class_log_likelihood_result` / `class_log_likelihoods` are pure JAX functions (jit, grad and vmap
compose with them), with static shapes. With `TopK` screens (the default: two stages) a cheap pass
over the candidate classes keeps each example's k best (plus `labels`, if given); the classes left
after the last stage get the accurate solve; the others keep the last cheap estimate, marked in
`ClassLikelihoods.refined`. Every entry is differentiated as the accurate solve (an unrefined
entry is re-solved accurately in the reverse pass), so the gradient of any loss over all classes
is the one `screen=None` gives; an entry whose cotangent is zero (a loss over the refined classes)
costs no reverse pass, and `stop_unrefined` holds the unrefined entries constant (an attack's
cheap gradient, by choice). `covered` is False for an example
where a stage dropped a class within its `margin` nats of that stage's best. With `screen=None`
every class gets the accurate solve. `mesh=` shards the batch over devices, screens included.

`cascade_class_log_likelihoods` chains `Screen` passes scheduled on the host: after each pass only
the classes within its margin of the best stay in reach, so the number of accurate solves adapts
to each example; its compiled shapes are power-of-two buckets (a bounded number of compilations).
It is the fastest way to score a data set, but it is not traceable.

Pairs are solved in chunks of `chunk_size`, sorted by how many evaluations the screen needed, so
that a vmapped solve -- which runs as many steps as its slowest member -- wastes little.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxrej.flow import FlowSolve, as_solve
from jaxrej.likelihood import check_batch, solve_pair, solve_pairs
from jaxrej.sde import SDE

AXIS = "batch"  # the mesh axis over which `mesh=` shards the examples


def _check_margin(owner: str, margin) -> float:
    ok = isinstance(margin, (int, float)) and not isinstance(margin, bool)
    if not (ok and math.isfinite(margin) and margin > 0):
        raise ValueError(f"{owner}.margin: expected a positive number of nats, got {margin!r}")
    return float(margin)


# The screens' default pass: one Rademacher probe per example (shared by its classes), Dopri5 at
# 1e-2. Its class gaps err by a few nats (benchmarks/hutchinson.py, benchmarks/likelihood_speed.py).
SCREEN_SOLVE = FlowSolve(divergence="rademacher", n_probes=1, rtol=1e-2, atol=1e-2)


@dataclasses.dataclass(frozen=True, init=False)
class TopK:
    """A static-shape screen stage: a cheap `solve` over the candidate classes keeps the k best of
    each example. margin: nats below the stage's best within which a dropped class is a rival
    (it makes `covered` False). spare (last stage only): the fraction of a batch's examples that may
    get one more accurate solve, for their closest rival within the margin of their best refined
    class -- a fixed budget (static shapes) spent where a close call needs it. Keyword options
    replace fields of `solve`."""

    k: int
    margin: float
    solve: FlowSolve
    spare: float

    def __init__(self, k: int = 3, margin: float = 10.0, solve: FlowSolve | None = None, *,
                 spare: float = 0.0, **options):  # fmt: skip
        if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
            raise ValueError(f"TopK.k: expected an int >= 1, got {k!r}")
        if not (
            isinstance(spare, (int, float)) and not isinstance(spare, bool) and 0 <= spare <= 1
        ):
            raise ValueError(f"TopK.spare: expected a fraction in [0, 1], got {spare!r}")
        object.__setattr__(self, "spare", float(spare))
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "margin", _check_margin("TopK", margin))
        object.__setattr__(self, "solve", as_solve(solve, options, default=SCREEN_SOLVE))


@dataclasses.dataclass(frozen=True, init=False)
class Screen:
    """One pass of the host cascade: solve the classes in reach with `solve`, keep those within
    `margin` nats of the pass's best. Keyword options replace fields of `solve`."""

    margin: float
    solve: FlowSolve

    def __init__(self, margin: float = 40.0, solve: FlowSolve | None = None, **options):
        object.__setattr__(self, "margin", _check_margin("Screen", margin))
        object.__setattr__(self, "solve", as_solve(solve, options, default=SCREEN_SOLVE))


# The default screen (benchmarks/likelihood_speed.py): one Rademacher probe at 1e-2 over all classes
# keeps 4, then 16 probes at 1e-3 keep 1 -- the static-shape twin of the host cascade's passes --
# and an eighth of the batch may refine its closest rival.
DEFAULT_SCREEN = (
    TopK(k=4, margin=10.0),
    TopK(k=1, margin=5.0, n_probes=16, rtol=1e-3, atol=1e-3, spare=0.125),
)


class ClassLikelihoods(struct.PyTreeNode):
    """Per (example, class) results, each (B, C), and one flag per example.

    logp:    log p(x | y) in nats; NaN where the last solve of that pair failed.
    nfe:     vector-field evaluations spent on the pair over all passes.
    ok:      the last solve of that pair succeeded.
    refined: the pair got the accurate solve (False: it carries a screen's estimate; its
             gradient is still the accurate solve's).
    covered: (B,) no class left unrefined was within the screen's margin of its best.
    consistent: (B,) every pass agreed with the pass before it, on the classes both solved,
             within that earlier pass's margin. False: a screen misjudged the example by more
             than the margin its decisions assume, so which classes were refined -- and the
             estimates of those left unrefined -- are not to be trusted (measured: a stiff MNIST
             model whose 1-probe rtol 1e-2 screen sat 10,000 nats above the accurate solve);
             re-score such rows with screen=None.
    """

    logp: jax.Array
    nfe: jax.Array
    ok: jax.Array
    refined: jax.Array
    covered: jax.Array
    consistent: jax.Array


def _check_common(x, sde, num_classes, chunk_size):
    check_batch(x, None, sde)
    if not (
        isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 1
    ):
        raise ValueError(f"num_classes: expected an int >= 1, got {num_classes!r}")
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"chunk_size: expected None or an int >= 1, got {chunk_size!r}")


def _solve_sorted(score_fn, sde, solve, params, x, ex, cls, ids, key, difficulty, chunk_size):
    """solve_pairs on pairs (x[ex], cls) in chunks of `chunk_size` taken in order of `difficulty`
    (a vmapped solve runs as long as its slowest member); results in the pairs' order."""
    r = ex.shape[0]
    if chunk_size is None or chunk_size >= r:
        return solve_pairs(score_fn, sde, solve, params, x[ex], ids[ex], cls, key)
    order = jnp.arange(r) if difficulty is None else jnp.argsort(difficulty, stable=True)

    def pair(row):
        i = ex[row]
        return solve_pair(score_fn, sde, solve, params, key, x[i], ids[i], cls[row])

    out = jax.lax.map(pair, order, batch_size=chunk_size)
    inv = jnp.zeros_like(order).at[order].set(jnp.arange(r))
    return tuple(o[inv] for o in out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4))
def _screen_sorted(score_fn, sde, solve, accurate, chunk_size, params, x, ex, cls, ids, key,
                   accurate_key, difficulty):  # fmt: skip
    """`_solve_sorted` for a screen stage (`solve`, probes from `key`), differentiated as the
    `accurate` solve (probes from `accurate_key`): the reverse pass re-solves the pairs with it and
    backpropagates through that solve, only when some cotangent is nonzero. So a screened entry
    carries the screen's value and the gradient `screen=None` would give it; nothing is stored in
    the forward pass, and a loss that ignores the screened entries costs nothing more."""
    return _solve_sorted(score_fn, sde, solve, params, x, ex, cls, ids, key, difficulty,
                         chunk_size)  # fmt: skip


def _screen_sorted_fwd(score_fn, sde, solve, accurate, chunk_size, params, x, ex, cls, ids, key,
                       accurate_key, difficulty):  # fmt: skip
    want = tuple(any(p.perturbed for p in jax.tree_util.tree_leaves(a)) for a in (params, x))
    args = jax.tree_util.tree_map(lambda a: a.value, (params, x, ex, cls, ids, key, accurate_key,
                                                      difficulty))  # fmt: skip
    p, z, ex, cls, ids, key, _, difficulty = args
    out = _solve_sorted(score_fn, sde, solve, p, z, ex, cls, ids, key, difficulty, chunk_size)
    return out, (args, want)


def _screen_sorted_bwd(score_fn, sde, solve, accurate, chunk_size, res, cts):
    (params, x, ex, cls, ids, _, key, difficulty), (want_p, want_x) = res
    ct = cts[0]
    if isinstance(ct, jax.custom_derivatives.SymbolicZero) or not (want_p or want_x):
        return (None,) * 8

    def logp(p, z):
        return _solve_sorted(score_fn, sde, accurate, p, z, ex, cls, ids, key, difficulty,
                             chunk_size)[0]  # fmt: skip

    def grads():
        if want_p and want_x:
            return jax.vjp(logp, params, x)[1](ct)
        if want_p:
            return jax.vjp(lambda p: logp(p, x), params)[1](ct) + (jnp.zeros_like(x),)
        return (jax.tree_util.tree_map(jnp.zeros_like, params),
                *jax.vjp(lambda z: logp(params, z), x)[1](ct))  # fmt: skip

    def zeros():
        return jax.tree_util.tree_map(jnp.zeros_like, (params, x))

    g_p, g_x = jax.lax.cond(jnp.any(ct != 0), grads, zeros)
    return (g_p if want_p else None, g_x if want_x else None) + (None,) * 6


_screen_sorted.defvjp(_screen_sorted_fwd, _screen_sorted_bwd, symbolic_zeros=True)


def _score_block(score_fn, sde, solve, screens, num_classes, chunk_size, params, x, ids, labels,
                 key):  # fmt: skip
    """ClassLikelihoods of a block of examples x (b, *event) with global indices ids (b,): each
    TopK stage of `screens` solves the candidate classes and keeps its k best (and `labels`); the
    candidates left get the accurate `solve`. Every entry is differentiated as `solve`."""
    b, c = x.shape[0], num_classes
    rows_b = jnp.arange(b)
    cand = jnp.broadcast_to(jnp.arange(c, dtype=jnp.int32), (b, c))  # (b, m) candidate classes
    logp = jnp.full((b, c), jnp.nan, x.dtype)
    nfe = jnp.zeros((b, c), jnp.int32)
    ok = jnp.zeros((b, c), bool)
    rival = jnp.zeros((b, c), bool)  # dropped by a stage within its margin of that stage's best
    consistent = jnp.ones((b,), bool)
    difficulty = None

    def agrees(lp, good, rows, cls, margin):  # (b,) the new pass within `margin` of the last one
        prev, prev_ok = logp[rows, cls], ok[rows, cls]
        jump = jnp.abs(jax.lax.stop_gradient(lp) - jax.lax.stop_gradient(prev)) > margin
        return ~jnp.any((jump & good & prev_ok).reshape(b, -1), axis=1)

    for j, stage in enumerate(screens):
        m = cand.shape[1]
        rows, cls = jnp.repeat(rows_b, m), cand.reshape(-1)
        # The entries a stage leaves behind get the accurate solve's gradient (reverse pass only).
        lp, n, good = _screen_sorted(score_fn, sde, stage.solve, solve, chunk_size, params, x,
                                     rows, cls, ids, jax.random.fold_in(key, 1 + j), key,
                                     difficulty)  # fmt: skip
        if j:
            consistent = consistent & agrees(lp, good, rows, cls, screens[j - 1].margin)
        logp, nfe, ok = (
            logp.at[rows, cls].set(lp),
            nfe.at[rows, cls].add(n),
            ok.at[rows, cls].set(good),
        )
        est, good = jax.lax.stop_gradient(lp).reshape(b, m), good.reshape(b, m)
        priority = jnp.where(good, est, jnp.inf)  # a failed screen is kept first
        if labels is not None:
            priority = jnp.where(cand == labels[:, None], jnp.inf, priority)
        _, pos = jax.lax.top_k(priority, min(stage.k, m))  # (b, k) positions in cand
        kept = jnp.zeros((b, m), bool).at[rows_b[:, None], pos].set(True)
        best = jnp.max(jnp.where(good, est, -jnp.inf), axis=1, keepdims=True)
        in_reach = (est >= best - stage.margin) | ~good
        rival = rival.at[rows, cls].set(rival[rows, cls] | (in_reach & ~kept).reshape(-1))
        cand = jnp.take_along_axis(cand, pos, axis=1)
        difficulty = nfe[jnp.repeat(rows_b, cand.shape[1]), cand.reshape(-1)]
    rows, cls = jnp.repeat(rows_b, cand.shape[1]), cand.reshape(-1)
    lp, n, good = _solve_sorted(score_fn, sde, solve, params, x, rows, cls, ids, key, difficulty,
                                chunk_size)  # fmt: skip
    if screens:
        consistent = consistent & agrees(lp, good, rows, cls, screens[-1].margin)
    logp, nfe, ok = logp.at[rows, cls].set(lp), nfe.at[rows, cls].add(n), ok.at[rows, cls].set(good)
    refined = jnp.zeros((b, c), bool).at[rows, cls].set(True)
    n_spare = math.ceil(screens[-1].spare * b) if screens else 0
    if n_spare:
        logp, nfe, ok, refined = _spend_spare(
            score_fn, sde, solve, params, x, ids, key, screens[-1].margin, n_spare, logp, nfe, ok,
            refined, rival,
        )  # fmt: skip
    return ClassLikelihoods(logp=logp, nfe=nfe, ok=ok, refined=refined,
                            covered=~jnp.any(rival & ~refined, axis=1),
                            consistent=consistent)  # fmt: skip


def _spend_spare(score_fn, sde, solve, params, x, ids, key, margin, n_spare, logp, nfe, ok, refined,
                 rival):  # fmt: skip
    """One more accurate solve for each of the `n_spare` examples whose closest unrefined rival is
    nearest (within `margin` nats) to their best refined value; other picks are solved (static
    shapes) but not used."""
    b = x.shape[0]
    best = jnp.max(jnp.where(refined & ok, logp, -jnp.inf), axis=1)
    est = jnp.where(rival & ~refined, jax.lax.stop_gradient(logp), -jnp.inf)
    cls = jnp.argmax(est, axis=1).astype(jnp.int32)
    gap = best - est[jnp.arange(b), cls]
    _, ex = jax.lax.top_k(jnp.where(gap <= margin, -gap, -jnp.inf), n_spare)
    use = gap[ex] <= margin
    lp, n, good = _solve_sorted(score_fn, sde, solve, params, x, ex, cls[ex], ids, key, None, None)
    at = (ex, cls[ex])
    return (
        logp.at[at].set(jnp.where(use, lp, logp[at])),
        nfe.at[at].add(jnp.where(use, n, 0)),
        ok.at[at].set(jnp.where(use, good, ok[at])),
        refined.at[at].set(refined[at] | use),
    )


def screen_stages(screen) -> tuple[TopK, ...]:
    """The screen argument as a tuple of TopK stages (None: no stage); ValueError otherwise."""
    stages = () if screen is None else (screen,) if isinstance(screen, TopK) else screen
    if (
        isinstance(stages, str)
        or not isinstance(stages, Sequence)
        or not all(isinstance(s, TopK) for s in stages)
    ):
        raise ValueError(
            f"screen: expected a jaxrej.TopK, a sequence of them or None, got {screen!r}"
        )
    return tuple(stages)


def _check_mesh(mesh) -> int:
    if not isinstance(mesh, Mesh):
        raise ValueError(f"mesh: expected a jax.sharding.Mesh, got {type(mesh).__name__}")
    if AXIS not in mesh.axis_names:
        raise ValueError(f"mesh: expected an axis named {AXIS!r}, got axes {mesh.axis_names}")
    return int(mesh.shape[AXIS])


def batch_mesh(devices=None) -> Mesh:
    """A one-axis Mesh named "batch" over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices: expected at least one device")
    return Mesh(np.asarray(devices), (AXIS,))


@functools.partial(
    jax.jit,
    static_argnames=(
        "score_fn",
        "sde",
        "solve",
        "screen",
        "num_classes",
        "chunk_size",
        "mesh",
    ),  # fmt: skip
)
def _score(score_fn, params, sde, x, labels, key, *, solve, screen, num_classes, chunk_size, mesh,
           ids=None):  # fmt: skip
    block = functools.partial(_score_block, score_fn, sde, solve, screen, num_classes, chunk_size)
    b = x.shape[0]
    ids = jnp.arange(b) if ids is None else ids
    if mesh is None:
        return block(params, x, ids, labels, key)
    n_dev = int(mesh.shape[AXIS])
    pad = -b % n_dev  # padded rows repeat the last example (its probes too) and are dropped

    def padded(a):
        return None if a is None else jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)])

    specs = (P(), P(AXIS), P(AXIS), None if labels is None else P(AXIS), P())
    out = jax.shard_map(block, mesh=mesh, in_specs=specs, out_specs=P(AXIS), check_vma=False)(
        params, padded(x), padded(ids), padded(labels), key
    )
    return jax.tree_util.tree_map(lambda a: a[:b], out)


def class_log_likelihood_result(
    score_fn: Callable,
    params,
    sde: SDE,
    x: jax.Array,
    *,
    num_classes: int,
    key: jax.Array,
    solve: FlowSolve | None = None,
    screen: TopK | Sequence[TopK] | None = DEFAULT_SCREEN,
    labels: jax.Array | None = None,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
    ids: jax.Array | None = None,
    **options,
) -> ClassLikelihoods:
    """log p(x | y) for every class, with per-pair NFE, flags and refinement marks, each (B, C).

    x: (B, *event). solve: the accurate solve (`jaxrej.FlowSolve`; keyword `options` replace its
    fields). screen: a `TopK`, a sequence of them applied in turn (each solves the classes the
    previous kept), or None (every class gets the accurate solve). The default, DEFAULT_SCREEN,
    keeps 4 classes by a 1-probe Rademacher pass at 1e-2, then 1 by a 16-probe pass at 1e-3.
    labels: (B,) int, a class per example that every stage keeps and the accurate solve refines
    (e.g. the true label in an attack's loss: pass TopK(k=2) to refine it and its best rival). chunk_size: pairs per vmapped
    solve (default: all at once). mesh: a Mesh with an axis "batch" (`batch_mesh()`) over which the
    examples are sharded; the result equals the unsharded one up to float rounding.
    Example i's Hutchinson probes depend on (key, i) alone, shared by its classes: the refined
    entries equal `jaxrej.log_likelihood(..., key=key)` of the same example and class. ids: (B,)
    integers that replace i there (default: the position in the batch), e.g. a row's index in its
    set or a hash of its pixels (`jaxrej.scorers.sbgc.row_ids`), so that its probes do not depend
    on the batch it was scored in.
    Pure: jit, grad and vmap compose with it. Every entry is differentiated through `solve`
    (`solve.adjoint`) with the probes of `screen=None`: an unrefined entry keeps the screen's value
    and is re-solved accurately in the reverse pass, so the gradient of any loss over the classes
    equals the unscreened one. An entry whose cotangent is zero costs no reverse pass: a loss over
    the refined classes (an attack's margin with `labels`) pays for those alone;
    `stop_unrefined(result)` makes that choice explicit for any loss.
    """
    solve = as_solve(solve, options)
    _check_common(x, sde, num_classes, chunk_size)
    screens = screen_stages(screen)
    if labels is not None:
        check_batch(x, labels, sde, y_name="labels")
        if not screens:
            labels = None  # every class is refined anyway
    if mesh is not None:
        _check_mesh(mesh)
    if ids is not None and jnp.shape(ids) != x.shape[:1]:
        raise ValueError(
            f"ids: expected shape {x.shape[:1]} (one per example), got {jnp.shape(ids)}"
        )
    return _score(score_fn, params, sde, x, labels, key, solve=solve, screen=screens,
                  num_classes=num_classes, chunk_size=chunk_size, mesh=mesh, ids=ids)  # fmt: skip


def class_log_likelihoods(score_fn: Callable, params, sde: SDE, x: jax.Array, *, num_classes: int,
                          key: jax.Array, **options) -> jax.Array:  # fmt: skip
    """log p(x | y) for every class: (B, *event) -> (B, C) nats; NaN where a solve failed.

    Options as in `class_log_likelihood_result`. With a screen (the default) the classes outside
    each example's top k carry the screen's estimate; every class is differentiated as the
    accurate solve, so the gradient of any loss over all classes is the unscreened one.
    """
    return class_log_likelihood_result(
        score_fn, params, sde, x, num_classes=num_classes, key=key, **options
    ).logp


def stop_unrefined(res: ClassLikelihoods) -> jax.Array:
    """res.logp (B, C) with the unrefined entries held constant. A loss through it is
    differentiated through the refined classes alone, and the screens' reverse passes are skipped:
    an attack's cheap gradient (e.g. a cross-entropy over `TopK(k=2)` with `labels=`), NOT the
    gradient of the loss over all classes."""
    return jnp.where(res.refined, res.logp, jax.lax.stop_gradient(res.logp))


# ------------------------------------------------------------------ host-scheduled cascade


@functools.partial(jax.jit, static_argnames=("score_fn", "sde", "solve"))
def _solve_pairs_jit(score_fn, params, sde, xs, ids, cls, key, *, solve):
    return solve_pairs(score_fn, sde, solve, params, xs, ids, cls, key)


def bucket(r: int, chunk_size: int) -> int:
    """The compiled chunk shape for r pairs: the next power of two, at most `chunk_size`."""
    return min(chunk_size, 1 << max(0, math.ceil(math.log2(max(r, 1)))))


def _run_pass(score_fn, params, sde, x, pairs, difficulty, key, solve, chunk_size):
    """Solve `pairs` (R, 2) in difficulty-sorted chunks of a power-of-two size (padded)."""
    order = np.argsort(difficulty, kind="stable")
    pairs = pairs[order]
    r = len(pairs)
    size = bucket(r, chunk_size)
    out = [[], [], []]
    for start in range(0, r, size):
        part = pairs[start : start + size]
        keep = len(part)
        if keep < size:
            part = np.concatenate([part, np.repeat(part[-1:], size - keep, 0)])
        ids = jnp.asarray(part[:, 0])
        res = _solve_pairs_jit(score_fn, params, sde, x[ids], ids,
                               jnp.asarray(part[:, 1], jnp.int32), key, solve=solve)  # fmt: skip
        for acc, a in zip(out, res, strict=True):
            acc.append(np.asarray(a)[:keep])
    inv = np.empty_like(order)
    inv[order] = np.arange(r)
    return tuple(np.concatenate(acc)[inv] for acc in out)


def cascade_class_log_likelihoods(
    score_fn: Callable,
    params,
    sde: SDE,
    x: jax.Array,
    *,
    num_classes: int,
    key: jax.Array,
    screens: Screen | Sequence[Screen],
    solve: FlowSolve | None = None,
    chunk_size: int = 1024,
    **options,
) -> ClassLikelihoods:
    """ClassLikelihoods from `screens` applied in order on the host, then the accurate `solve` for
    the classes still in reach; a failed screen keeps its class in reach. Not traceable (it picks
    shapes from values); for jit/grad use `class_log_likelihood_result`.

    chunk_size: the largest number of pairs per compiled solve; a pass of R pairs runs in chunks of
    `bucket(R, chunk_size)` (a power of two), so each solve setting compiles at most
    log2(chunk_size) + 1 times, whatever the data. Probes as in `class_log_likelihood_result`.
    """
    solve = as_solve(solve, options)
    _check_common(x, sde, num_classes, chunk_size)
    screens = [screens] if isinstance(screens, Screen) else list(screens)
    for s in screens:
        if not isinstance(s, Screen):
            raise ValueError(f"screens: expected Screens, got {type(s).__name__}")
    b, c = x.shape[0], num_classes
    passes = [(s.solve, jax.random.fold_in(key, 1 + p)) for p, s in enumerate(screens)]
    passes.append((solve, key))  # the accurate pass: the probes of class_log_likelihood_result
    logp = np.full((b, c), np.nan, np.float64)
    nfe = np.zeros((b, c), np.int64)
    ok = np.zeros((b, c), bool)
    active = np.ones((b, c), bool)
    consistent = np.ones((b,), bool)
    for p, (pass_solve, pass_key) in enumerate(passes):
        lp, n, k = _run_pass(score_fn, params, sde, x, np.argwhere(active), nfe[active], pass_key,
                             pass_solve, chunk_size)  # fmt: skip
        if p:  # ClassLikelihoods.consistent: within the previous pass's margin
            jump = np.zeros((b, c), bool)
            jump[active] = (np.abs(np.asarray(lp, np.float64) - logp[active])
                            > screens[p - 1].margin) & np.asarray(k) & ok[active]  # fmt: skip
            consistent &= ~jump.any(axis=1)
        logp[active], ok[active] = lp, k
        nfe[active] += n
        if p == len(screens):
            break
        best = np.max(np.where(active & ok, logp, -np.inf), axis=1, keepdims=True)
        active = active & ((logp >= best - screens[p].margin) | ~ok)
    return ClassLikelihoods(
        logp=jnp.asarray(logp, x.dtype),
        nfe=jnp.asarray(nfe),
        ok=jnp.asarray(ok),
        refined=jnp.asarray(active),
        covered=jnp.ones((b,), bool),
        consistent=jnp.asarray(consistent),
    )


def compilations() -> dict[str, int]:
    """How many programs this process has compiled so far: {"scorer": the pure class scorer's,
    "cascade": the cascade's chunk solves'} (one per distinct static setting and shape)."""
    return {"scorer": _score._cache_size(), "cascade": _solve_pairs_jit._cache_size()}
