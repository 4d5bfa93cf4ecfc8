"""The score model's classifiers as scorers: log p(x | y) by the probability-flow ODE ("sbgc")
and the denoising lower bound ("elbo", `jaxrej.class_elbos`), of pixel images.

    sc = sbgc_scorer("runs/digits", batch_size=36)   # judge: the run's eval settings
    sc.for_attack(labels=y)                         # the cheaper, label-keeping attack view
    res = run_judge(load_trained("runs/digits"), RunEval(...), "ode").result(x)   # (B, C) each

The JUDGE (`run_judge`) is the one scorer of a trained run: `jaxrej score` saves its
`result` (jaxrej.eval.run_scores) and `jaxrej evaluate`'s clean table calls it (`sbgc_scorer`,
`elbo_scorer`), so both score a run identically. It honours the run's eval settings: the solve
(divergence, n_probes, rtol, atol, eps), screen and chunk_size of the ODE, the elbo_* settings of
the ELBO, and eval.dequantize for the input: pixel space x in [0, 1] maps to the model's
((L - 1) x + c) / L (`jaxrej.data.preprocessing.pixels_to_model_input`), c = 1/2 (the bin
centres) or c = u ~ U[0, 1)^D (uniform dequantisation, the default: the model was trained on
such inputs, and its mean log-likelihood is then the bound on the discrete log-likelihood that
bits/dim report). Keys: key(seed + 1), split into the dequantisation key and the probe (or draw)
key, and each row's draws -- its noise u, Hutchinson probes and (t, z) draws -- come from
fold_in(key, id) with id a hash of the row's pixels (`jaxrej.data.preprocessing.row_ids`).
So a row's score is a function of that row alone: not of its position, batch size or batch
neighbours (a killed evaluation resumes at another batch boundary, `jaxrej score` and the
evaluation use different batch sizes, an attack re-judges a batch of adversarial rows), at
the cost of one hash of D pixels per row. A row index would need every caller to carry
indices, and an adversarial row has none. (With the default TopK screens, which rows get a
batch's spare accurate solves depends on the batch: a refined entry is the same in any batch,
an unrefined one carries the screen's estimate; `eval.screen = "none"` refines every entry.)

The ATTACK VIEW (`ViewOptions`) is differentiated, so its draws must not change as the attack
moves x: positional ids (fixed probes for a row across steps; `fresh`: a new key per step) and
bin-centre inputs (the mean of the dequantisation noise; an eps-ball shrinks by (L - 1) / L
there). The ODE's view: a cheaper solve (1 Rademacher probe, rtol = atol = 1e-3, max_steps 64)
and TopK(k=2) screens that keep the batch's labels (the true class and its best rival are
refined; the rest held constant, `jaxrej.scoring.stop_unrefined`). The ELBO's view: fewer
(t, z) draws.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
from flax import struct

from jaxrej.scorers.base import AttackView, Scorer

__all__ = ["SBGCScorer", "ELBOScorer", "ViewOptions", "run_judge", "sbgc_scorer", "elbo_scorer"]


class SBGCScorer(struct.PyTreeNode):
    """Pixels (B, *event) in [0, 1] -> log p(x' | y) (B, C) through the ODE
    (`jaxrej.class_log_likelihood_result`; `result` gives its ClassLikelihoods). Called as f(x)
    it uses `key`; as f(x, key) the given key (fresh probes). labels (B,) or None: the class
    every screen stage keeps; with labels the unrefined classes are constants
    (`jaxrej.scoring.stop_unrefined`). options: solve options and the screen, as keyword pairs
    (static). dequantize: "center" or "uniform" (module doc); row_keys: each row's draws from a
    hash of its pixels (the judge) instead of its position in the batch (the view)."""

    params: Any
    key: jax.Array
    labels: jax.Array | None = None
    score_fn: Any = struct.field(pytree_node=False, default=None)
    sde: Any = struct.field(pytree_node=False, default=None)
    num_classes: int = struct.field(pytree_node=False, default=10)
    n_levels: int = struct.field(pytree_node=False, default=17)
    options: tuple = struct.field(pytree_node=False, default=())
    dequantize: str = struct.field(pytree_node=False, default="center")
    row_keys: bool = struct.field(pytree_node=False, default=False)

    def model_input(self, x, key=None):
        """The model's input of pixels x (module doc); key: the scorer's (uniform mode)."""
        return _model_input(self, x, self.key if key is None else key)[0]

    def result(self, x, key=None):
        """ClassLikelihoods (each (B, C); covered, consistent (B,)) of pixels x (B, *event)."""
        import jaxrej

        xm, key, ids = _model_input(self, x, self.key if key is None else key)
        return jaxrej.class_log_likelihood_result(
            self.score_fn, self.params, self.sde, xm, num_classes=self.num_classes, key=key,
            labels=self.labels, ids=ids, **dict(self.options),
        )  # fmt: skip

    def __call__(self, x, key=None):
        import jaxrej

        res = self.result(x, key)
        return res.logp if self.labels is None else jaxrej.scoring.stop_unrefined(res)


def _model_input(sc, x, key):
    """(model input, the probe / draw key, ids (B,)) of pixels x for a scorer `sc` with fields
    n_levels, dequantize and row_keys (module doc); uniform dequantisation splits the key into
    the noise's and the probes'."""
    import jax.numpy as jnp

    from jaxrej.data.preprocessing import pixels_to_model_input, row_ids

    ids = row_ids(x) if sc.row_keys else jnp.arange(x.shape[0])
    if sc.dequantize == "uniform":
        dq_key, key = jax.random.split(key)
        return pixels_to_model_input(x, sc.n_levels, mode="uniform", key=dq_key, ids=ids), key, ids
    return pixels_to_model_input(x, sc.n_levels, mode=sc.dequantize), key, ids


class ELBOScorer(struct.PyTreeNode):
    """Pixels (B, *event) in [0, 1] -> the denoising bound on log p(x' | y) (B, C)
    (`jaxrej.class_elbos`, n_times (t, z) draws per example shared by its classes; `result`:
    as a ClassLikelihoods, every entry refined, nfe the score evaluations). f(x) uses `key`,
    f(x, key) the given key. dequantize, row_keys: as SBGCScorer's."""

    params: Any
    key: jax.Array
    score_fn: Any = struct.field(pytree_node=False, default=None)
    sde: Any = struct.field(pytree_node=False, default=None)
    num_classes: int = struct.field(pytree_node=False, default=10)
    n_levels: int = struct.field(pytree_node=False, default=17)
    n_times: int = struct.field(pytree_node=False, default=64)
    time_sampling: str = struct.field(pytree_node=False, default="stratified")
    eps: float = struct.field(pytree_node=False, default=1e-5)
    chunk_size: int | None = struct.field(pytree_node=False, default=None)
    label_cutoff: float = struct.field(pytree_node=False, default=0.0)
    label_max: float = struct.field(pytree_node=False, default=0.0)
    dequantize: str = struct.field(pytree_node=False, default="center")
    row_keys: bool = struct.field(pytree_node=False, default=False)

    def __call__(self, x, key=None):
        from jaxrej.elbo import class_elbos

        xm, key, ids = _model_input(self, x, self.key if key is None else key)
        return class_elbos(self.score_fn, self.params, self.sde, xm, num_classes=self.num_classes,
                           key=key, n_times=self.n_times, time_sampling=self.time_sampling,
                           eps=self.eps, chunk_size=self.chunk_size,
                           label_cutoff=self.label_cutoff, label_max=self.label_max,
                           ids=ids)  # fmt: skip

    def result(self, x, key=None):
        """ClassLikelihoods of pixels x: the bounds, nfe = the score evaluations per pair (the
        draws below the cutoff and above label_max, shared, are counted on class 0)."""
        import jax.numpy as jnp

        from jaxrej.scoring import ClassLikelihoods

        lp = self(x, key)
        nfe = jnp.full(lp.shape, self.n_times, jnp.int32)
        if self.label_cutoff > 0:
            nfe = nfe.at[:, 0].add(self.n_times)
        if self.label_max:
            nfe = nfe.at[:, 0].add(self.n_times * self.num_classes)
        rows = jnp.ones(lp.shape[:1], bool)
        return ClassLikelihoods(logp=lp, nfe=nfe, ok=jnp.isfinite(lp),
                                refined=jnp.ones(lp.shape, bool), covered=rows, consistent=rows)  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViewOptions:
    """The attack view of a score-model scorer (module doc). ODE: n_probes, rtol, atol,
    max_steps of the differentiated solve (or `solver` with n_steps fixed steps, the screen's
    pass then with half as many), k classes refined by the TopK screen (the label always among
    them); ELBO: n_times draws. fresh: new probes / draws at every attack step (the attack calls
    f(x, key)); else the judge's fixed key."""

    n_probes: int = 1
    rtol: float = 1e-3
    atol: float = 1e-3
    max_steps: int = 64
    solver: str = "dopri5"
    n_steps: int | None = None
    k: int = 2
    n_times: int = 8
    fresh: bool = False

    def __post_init__(self):
        for f in ("n_probes", "max_steps", "k", "n_times"):
            v = getattr(self, f)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"view.{f}: expected an int >= 1, got {v!r}")


def _settings(run_dir, tm, **kw) -> str:
    return json.dumps({"run": os.path.abspath(run_dir), "step": tm.step, **kw}, sort_keys=True,
                      default=repr)  # fmt: skip


def run_judge(tm, run_eval, scorer: str = "ode", *, solve=None) -> SBGCScorer | ELBOScorer:
    """The judge of a trained run (module doc): `tm` a `jaxrej.training.workdir.TrainedModel`,
    run_eval its eval options (`jaxrej.config.RunEval`, overrides applied), scorer "ode" (an
    SBGCScorer: the solve -- or `solve`, a FlowSolve --, screen and chunk_size of run_eval) or
    "elbo" (an ELBOScorer: the elbo_* settings, split at the net's label_cutoff); inputs
    dequantised by run_eval.dequantize, per-row keys from key(seed + 1) (tm.run's seed)."""
    e, d = run_eval, tm.run.data
    key = jax.random.key(tm.run.seed + 1)
    base = dict(params=tm.params, key=key, score_fn=tm.score_fn, sde=tm.sde,
                num_classes=d.num_classes, n_levels=d.n_levels,
                dequantize=e.dequantize, row_keys=True)  # fmt: skip
    if scorer == "elbo":
        return ELBOScorer(n_times=e.elbo_n_times, time_sampling=e.elbo_time_sampling,
                          eps=float(e.eps), chunk_size=e.elbo_chunk_size or None,
                          label_cutoff=float(tm.label_cutoff), label_max=float(e.elbo_label_max),
                          **base)  # fmt: skip
    if scorer != "ode":
        raise ValueError(f"scorer: expected 'ode' or 'elbo', got {scorer!r}")
    options = (("solve", e.solve if solve is None else solve),
               ("chunk_size", e.chunk_size or None))  # fmt: skip
    options += (("screen", None),) if e.screen == "none" else ()
    return SBGCScorer(options=options, **base)


def sbgc_scorer(run_dir: str, *, batch_size: int, view: ViewOptions = ViewOptions(),
                solve=None, name: str = "sbgc", trained=None, run_eval=None) -> Scorer:  # fmt: skip
    """The ODE classifier of a trained run (`jaxrej train`) as a Scorer: the judge `run_judge`
    with the run's eval settings (run_eval: other `RunEval` options; solve: another FlowSolve),
    the attack view of `view` (module doc). trained: the run's `load_trained` result, if
    already loaded."""
    from jaxrej.flow import FlowSolve
    from jaxrej.scoring import TopK
    from jaxrej.training.workdir import load_trained

    tm = trained or load_trained(run_dir)
    e = run_eval or tm.run.eval
    judge = run_judge(tm, e, "ode", solve=solve)
    base = dict(params=tm.params, score_fn=tm.score_fn, sde=tm.sde, key=judge.key,
                num_classes=judge.num_classes, n_levels=judge.n_levels)  # fmt: skip
    cheap = FlowSolve(divergence="rademacher", n_probes=view.n_probes, rtol=view.rtol,
                      atol=view.atol, eps=e.eps, max_steps=view.max_steps, solver=view.solver,
                      n_steps=view.n_steps)  # fmt: skip
    fixed = {} if view.n_steps is None else {"solver": view.solver,
                                             "n_steps": max(view.n_steps // 2, 1)}  # fmt: skip
    view_opts = (("solve", cheap),
                 ("screen", (TopK(k=min(view.k, base["num_classes"]), **fixed),)))  # fmt: skip

    def for_attack(labels):
        fn = SBGCScorer(labels=labels, options=view_opts, **base)
        return AttackView(fn, stochastic=view.fresh, label_aware=labels is not None)

    return Scorer(name=name, fn=judge, num_classes=base["num_classes"], batch_size=batch_size,
                  settings=_settings(run_dir, tm, options=judge.options, batch_size=batch_size,
                                     dequantize=judge.dequantize, keys="row"),
                  view=for_attack)  # fmt: skip


def elbo_scorer(run_dir: str, *, batch_size: int, view: ViewOptions = ViewOptions(),
                name: str = "elbo", trained=None, run_eval=None) -> Scorer:  # fmt: skip
    """The ELBO classifier of a trained run as a Scorer: the judge `run_judge` with the run's
    eval.elbo_* settings (`jaxrej.config.RunEval`'s defaults where absent, or run_eval),
    split at the net's label_cutoff; the attack view with view.n_times draws, bin-centre inputs
    and positional draws (label-blind: every class is scored at once)."""
    from jaxrej.training.workdir import load_trained

    tm = trained or load_trained(run_dir)
    e = run_eval or tm.run.eval
    judge = run_judge(tm, e, "elbo")
    cheap = judge.replace(n_times=min(view.n_times, e.elbo_n_times), dequantize="center",
                          row_keys=False)  # fmt: skip

    def for_attack(labels):
        return AttackView(cheap, stochastic=view.fresh)

    return Scorer(name=name, fn=judge, num_classes=judge.num_classes, batch_size=batch_size,
                  settings=_settings(run_dir, tm, scorer="elbo", n_times=judge.n_times,
                                     time_sampling=judge.time_sampling,
                                     label_max=judge.label_max, batch_size=batch_size,
                                     dequantize=judge.dequantize, keys="row"),
                  view=for_attack)  # fmt: skip
