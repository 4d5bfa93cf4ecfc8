"""The score model's classifiers as scorers: log p(x | y) by the probability-flow ODE ("sbgc")
and the denoising lower bound ("elbo", `jaxrej.class_elbos`), of pixel images.

    sc = sbgc_scorer("runs/digits", batch_size=36)   # judge: the run's eval settings
    sc.for_attack(labels=y)                         # the cheaper, label-keeping attack view

Pixel space x in [0, 1] maps to the model's bin-centre input x' = ((L - 1) x + 1/2) / L (an
eps-ball shrinks by (L - 1) / L there). The JUDGE is the clean table's scorer: the run's eval
settings (divergence, n_probes, rtol, atol, eps, screen) and probes from key(seed + 1), label-blind.
The ODE's ATTACK VIEW (`ViewOptions`): a cheaper solve (1 Rademacher probe, rtol = atol = 1e-3,
max_steps 64) and TopK(k=2) screens that keep the batch's labels (the true class and its best
rival are refined; the rest held constant, `jaxrej.scoring.stop_unrefined`); fixed or fresh
probes. The ELBO's view: fewer (t, z) draws, fixed or fresh.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
from flax import struct

from jaxrej.scorers.base import AttackView, Scorer

__all__ = ["SBGCScorer", "ELBOScorer", "ViewOptions", "sbgc_scorer", "elbo_scorer"]


class SBGCScorer(struct.PyTreeNode):
    """Pixels (B, *event) in [0, 1] -> log p(x' | y) (B, C) through the ODE
    (`jaxrej.class_log_likelihood_result`). Called as f(x) it uses `key`; as f(x, key) the given
    key (fresh probes). labels (B,) or None: the class every screen stage keeps; with labels the
    unrefined classes are constants (`jaxrej.scoring.stop_unrefined`). options: solve options and
    the screen, as keyword pairs (static)."""

    params: Any
    key: jax.Array
    labels: jax.Array | None = None
    score_fn: Any = struct.field(pytree_node=False, default=None)
    sde: Any = struct.field(pytree_node=False, default=None)
    num_classes: int = struct.field(pytree_node=False, default=10)
    n_levels: int = struct.field(pytree_node=False, default=17)
    options: tuple = struct.field(pytree_node=False, default=())

    def model_input(self, x):
        return ((self.n_levels - 1) * x + 0.5) / self.n_levels

    def __call__(self, x, key=None):
        import jaxrej

        res = jaxrej.class_log_likelihood_result(
            self.score_fn, self.params, self.sde, self.model_input(x),
            num_classes=self.num_classes, key=self.key if key is None else key,
            labels=self.labels, **dict(self.options),
        )  # fmt: skip
        return res.logp if self.labels is None else jaxrej.scoring.stop_unrefined(res)


class ELBOScorer(struct.PyTreeNode):
    """Pixels (B, *event) in [0, 1] -> the denoising bound on log p(x' | y) (B, C)
    (`jaxrej.class_elbos`, n_times (t, z) draws per example shared by its classes). f(x) uses
    `key`, f(x, key) the given key."""

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

    def __call__(self, x, key=None):
        from jaxrej.elbo import class_elbos

        xm = ((self.n_levels - 1) * x + 0.5) / self.n_levels
        return class_elbos(self.score_fn, self.params, self.sde, xm, num_classes=self.num_classes,
                           key=self.key if key is None else key, n_times=self.n_times,
                           time_sampling=self.time_sampling, eps=self.eps,
                           chunk_size=self.chunk_size, label_cutoff=self.label_cutoff,
                           label_max=self.label_max)  # fmt: skip


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


def sbgc_scorer(run_dir: str, *, batch_size: int, view: ViewOptions = ViewOptions(),
                solve=None, name: str = "sbgc", trained=None) -> Scorer:  # fmt: skip
    """The ODE classifier of a trained run (`jaxrej train`) as a Scorer: the judge with the run's
    eval settings (or `solve`, a FlowSolve), the attack view of `view` (module doc). trained: the
    run's `load_trained` result, if already loaded."""
    from jaxrej.config import RunEval
    from jaxrej.flow import FlowSolve
    from jaxrej.scoring import TopK
    from jaxrej.training.workdir import load_trained

    tm = trained or load_trained(run_dir)
    e, d = RunEval.from_dict(tm.config["eval"]), tm.config["data"]
    options = (("solve", e.solve if solve is None else solve),
               ("chunk_size", e.chunk_size or None))  # fmt: skip
    options += (("screen", None),) if e.screen == "none" else ()
    key = jax.random.key(tm.config.get("seed", 0) + 1)
    base = dict(params=tm.params, score_fn=tm.score_fn, sde=tm.sde,
                num_classes=int(d["num_classes"]), n_levels=int(d["n_levels"]))  # fmt: skip
    judge = SBGCScorer(key=key, options=options, **base)
    cheap = FlowSolve(divergence="rademacher", n_probes=view.n_probes, rtol=view.rtol,
                      atol=view.atol, eps=e.eps, max_steps=view.max_steps, solver=view.solver,
                      n_steps=view.n_steps)  # fmt: skip
    fixed = {} if view.n_steps is None else {"solver": view.solver,
                                             "n_steps": max(view.n_steps // 2, 1)}  # fmt: skip
    view_opts = (("solve", cheap),
                 ("screen", (TopK(k=min(view.k, base["num_classes"]), **fixed),)))  # fmt: skip

    def for_attack(labels):
        fn = SBGCScorer(key=key, labels=labels, options=view_opts, **base)
        return AttackView(fn, stochastic=view.fresh, label_aware=labels is not None)

    return Scorer(name=name, fn=judge, num_classes=base["num_classes"], batch_size=batch_size,
                  settings=_settings(run_dir, tm, options=options, batch_size=batch_size),
                  view=for_attack)  # fmt: skip


def elbo_scorer(run_dir: str, *, batch_size: int, view: ViewOptions = ViewOptions(),
                name: str = "elbo", trained=None) -> Scorer:  # fmt: skip
    """The ELBO classifier of a trained run as a Scorer: the judge with the run's eval.elbo_*
    settings (`jaxrej.config.RunEval`'s defaults where absent; eval.elbo_label_max the top of
    the label's window), split at the net's label_cutoff (as `jaxrej score`), and key(seed + 1);
    the attack
    view with view.n_times draws (label-blind: every class is scored at once)."""
    from jaxrej.config import RunEval
    from jaxrej.training.workdir import load_trained

    tm = trained or load_trained(run_dir)
    e, d = RunEval.from_dict(tm.config["eval"]), tm.config["data"]
    key = jax.random.key(tm.config.get("seed", 0) + 1)
    base = dict(params=tm.params, score_fn=tm.score_fn, sde=tm.sde,
                num_classes=int(d["num_classes"]), n_levels=int(d["n_levels"]),
                time_sampling=e.elbo_time_sampling, eps=float(e.eps),
                chunk_size=e.elbo_chunk_size or None,
                label_cutoff=tm.label_cutoff, label_max=e.elbo_label_max)  # fmt: skip
    judge = ELBOScorer(key=key, n_times=e.elbo_n_times, **base)
    cheap = ELBOScorer(key=key, n_times=min(view.n_times, e.elbo_n_times), **base)

    def for_attack(labels):
        return AttackView(cheap, stochastic=view.fresh)

    return Scorer(name=name, fn=judge, num_classes=base["num_classes"], batch_size=batch_size,
                  settings=_settings(run_dir, tm, scorer="elbo", n_times=judge.n_times,
                                     time_sampling=judge.time_sampling,
                                     label_max=judge.label_max, batch_size=batch_size),
                  view=for_attack)  # fmt: skip
