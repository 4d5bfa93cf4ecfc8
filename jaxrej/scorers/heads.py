"""Reject heads as scorers: a base classifier and the heads fitted on its outputs, as
differentiable pixel -> class-score functions `(B, *event) -> (B, C)`, so that attacks act on the
pixels (not on features or logits).

Pixel space: images in [0, 1] as the discriminative classifiers see them, x = k / (L - 1)
(`jaxrej.data.preprocessing.to_unit_interval`); an attack's eps-ball lives there for every
scorer. Per scorer (f = base classifier, z = its logits, h = its penultimate features):

    "msp"             log softmax(z)                 (argmax = base prediction, s_pred = log MSP)
    "msp_temperature" log softmax(z / T)
    "sdim_logit"      SDIM-logit class scores s_c(z) (Xiao et al. 2020)
    "gmm_cc"          log p(h | y = c), one GMM per class
    "gmm"             log p(h) + z_c - max_j z_j     (argmax = base prediction, s_pred = log p(h))
    "mahalanobis"     -(h - mu_c)^T Sigma^-1 (h - mu_c) / 2  (Lee et al. 2018, eq. 2)

With class scores in this form one per-class threshold rule (`jaxrej.reject.decide`) covers
every scorer: rejected iff s_pred(x) < t_pred. Scorers are `flax.struct` pytrees (arrays are
leaves), so an attack compiles once per scorer kind and shape. `fit_heads` fits the base
classifier and heads (`jaxrej.eval.heads.evaluate_heads` reports on them, through
`head_scores`); `save_heads` / `load_heads` keep them in a workdir; `heads_scorer` is the
`jaxrej.scorers.Scorer` of one head of a saved run.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization, struct

HEAD_SCORERS = ("msp", "msp_temperature", "sdim_logit", "gmm_cc", "gmm", "mahalanobis")
HEADS_FILE = "adversarial_heads.msgpack"
HEADS_META = "adversarial_heads.json"

__all__ = ["HEAD_SCORERS", "FittedHeads", "HeadScorer", "fit_heads", "freeze_kwargs", "save_heads",
           "load_heads", "head_scorer", "head_scorers", "head_scores", "heads_scorer"]  # fmt: skip


class FittedHeads(struct.PyTreeNode):
    """The base classifier (model name/kwargs static, ClassifierState) and every fitted head."""

    state: Any  # jaxrej.classifiers.ClassifierState
    sdim: Any  # jaxrej.heads.sdim_logit.SDIMLogitHead
    temperature: jax.Array
    mahalanobis: Any  # jaxrej.heads.baselines.Mahalanobis
    gmm_cc: Any  # jaxrej.heads.gmm.GMM with a leading (C,) axis
    gmm: Any  # jaxrej.heads.gmm.GMM
    model: str = struct.field(pytree_node=False, default="mlp")
    model_kwargs: tuple = struct.field(pytree_node=False, default=())
    num_classes: int = struct.field(pytree_node=False, default=10)

    def module(self):
        from jaxrej.classifiers import make_model

        return make_model(self.model, self.num_classes, **dict(self.model_kwargs))

    def forward(self, x):
        """(logits (B, C), features (B, F)) of pixels x (B, *event), eval mode."""
        variables = {"params": self.state.params}
        if self.state.batch_stats:
            variables["batch_stats"] = self.state.batch_stats
        return self.module().apply(variables, x, train=False)


def freeze_kwargs(kwargs) -> tuple:
    """Model keyword arguments as a hashable, sorted tuple of (name, value) pairs."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))


def fit_heads(
    fit, val, *, num_classes, model, model_kwargs, train, sdim, gmm, gmm_cc, key, progress=False
) -> FittedHeads:
    """Fit the base classifier on fit = (x, y) and every head on its outputs (temperature on
    val = (x, y)): the fitting step of `jaxrej.eval.heads.evaluate_heads`. gmm, gmm_cc: the
    class-agnostic and per-class mixtures' `heads.gmm.EMOptions` (Mahalanobis takes gmm_cc's
    reg_covar). progress: tqdm bars (stderr) over the classifier's and SDIM-logit's epochs and
    over the three Gaussian fits."""
    from jaxrej import classifiers
    from jaxrej.heads import baselines, sdim_logit
    from jaxrej.heads import gmm as gmm_lib

    k_model, k_train, k_sdim, k_gmm, k_gmm2 = jax.random.split(key, 5)
    (x_fit, y_fit), (x_val, y_val) = fit, val
    net = classifiers.make_model(model, num_classes, **dict(model_kwargs))
    state = classifiers.init(net, x_fit[:2], key=k_model)
    state = classifiers.train(
        net, state, x_fit, y_fit, key=k_train, **{**dict(train), "progress": progress}
    )
    logits_fit, feats_fit = (np.asarray(a) for a in classifiers.apply(net, state, x_fit))
    logits_val = np.asarray(classifiers.apply(net, state, x_val)[0])
    sd = {**dict(sdim), "progress": progress}
    sd["rep_size"] = sd.get("rep_size") or None
    head = sdim_logit.fit(logits_fit, y_fit, key=k_sdim, **sd)
    fits = {
        "mahalanobis": lambda: baselines.fit_mahalanobis(
            feats_fit, y_fit, num_classes=num_classes, reg=gmm_cc.reg_covar
        ),
        "gmm_cc": lambda: gmm_lib.fit_class_conditional(
            feats_fit, y_fit, gmm_cc, num_classes=num_classes, key=k_gmm
        ),
        "gmm": lambda: gmm_lib.fit(feats_fit, gmm, key=k_gmm2),
    }
    from tqdm.auto import tqdm

    bar = tqdm(fits, desc="gaussian heads", unit="fit", dynamic_ncols=True, disable=not progress)
    fitted = {}
    for name in bar:
        bar.set_postfix_str(name)  # the one being fitted
        fitted[name] = fits[name]()
    return FittedHeads(
        state=state,
        sdim=head,
        temperature=jnp.asarray(baselines.fit_temperature(logits_val, y_val), jnp.float32),
        mahalanobis=fitted["mahalanobis"],
        gmm_cc=fitted["gmm_cc"],
        gmm=fitted["gmm"],
        model=model,
        model_kwargs=freeze_kwargs(dict(model_kwargs)),
        num_classes=int(num_classes),
    )


class HeadScorer(struct.PyTreeNode):
    """Pixels (B, *event) -> class scores (B, C) of head HEAD_SCORERS[index] (module doc). The
    head is chosen by a traced index, so every head shares one compilation of an attack (the
    six heads' scores are computed, one is returned: they are small beside the classifier)."""

    heads: FittedHeads
    index: jax.Array

    @property
    def kind(self) -> str:
        return HEAD_SCORERS[int(self.index)]

    def __call__(self, x):
        z, feats = self.heads.forward(x)
        every = jnp.stack([head_scores(self.heads, k, z, feats) for k in HEAD_SCORERS])
        return jnp.take(every, self.index, axis=0)


def head_scorer(heads: FittedHeads, kind: str) -> HeadScorer:
    """The HeadScorer of head `kind` (a name of HEAD_SCORERS)."""
    if kind not in HEAD_SCORERS:
        raise ValueError(f"kind: expected one of {HEAD_SCORERS}, got {kind!r}")
    return HeadScorer(heads=heads, index=jnp.asarray(HEAD_SCORERS.index(kind), jnp.int32))


def head_scores(heads: FittedHeads, kind: str, logits, feats):
    """Class scores (B, C) of head `kind` (module doc) from the base classifier's logits (B, C)
    and penultimate features (B, F): the one definition of every head's scores."""
    from jaxrej.heads import baselines, sdim_logit
    from jaxrej.heads import gmm as gmm_lib

    h, z = heads, logits
    if kind == "msp":
        return jax.nn.log_softmax(z, axis=-1)
    if kind == "msp_temperature":
        return jax.nn.log_softmax(z / h.temperature, axis=-1)
    if kind == "sdim_logit":
        return sdim_logit.class_scores(h.sdim, z)
    if kind == "gmm_cc":
        return gmm_lib.class_log_prob(h.gmm_cc, feats)
    if kind == "gmm":
        return gmm_lib.log_prob(h.gmm, feats)[:, None] + z - jnp.max(z, -1, keepdims=True)
    if kind == "mahalanobis":
        return baselines.mahalanobis_class_scores(h.mahalanobis, feats)
    raise ValueError(f"kind: expected one of {HEAD_SCORERS}, got {kind!r}")


def head_scorers(heads: FittedHeads) -> dict[str, HeadScorer]:
    """{name: HeadScorer} for every name in HEAD_SCORERS."""
    return {k: head_scorer(heads, k) for k in HEAD_SCORERS}


# ----------------------------------------------------------------------------- save / load


def save_heads(workdir: str, heads: FittedHeads) -> str:
    """Write workdir/adversarial_heads.msgpack (arrays) and .json (static settings) atomically."""
    from jaxrej.io import atomic_write, atomic_write_json

    os.makedirs(workdir, exist_ok=True)
    state = serialization.to_state_dict(heads)
    meta = {
        "model": heads.model,
        "model_kwargs": [
            [k, list(v) if isinstance(v, tuple) else v] for k, v in heads.model_kwargs
        ],
        "num_classes": heads.num_classes,
        "sdim": {
            k: getattr(heads.sdim, k) for k in ("num_classes", "rep_size", "hidden", "mi_units")
        },  # fmt: skip
        "gmm_covariance_type": heads.gmm.covariance_type,
        "gmm_cc_covariance_type": heads.gmm_cc.covariance_type,
    }
    path = os.path.join(workdir, HEADS_FILE)
    data = serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray, state))
    atomic_write(path, lambda f: f.write(data))
    atomic_write_json(os.path.join(workdir, HEADS_META), meta)
    return path


def load_heads(workdir: str) -> FittedHeads:
    """The FittedHeads that `save_heads` wrote to workdir; ValueError if absent."""
    from jaxrej.classifiers import ClassifierState
    from jaxrej.heads.baselines import Mahalanobis
    from jaxrej.heads.gmm import GMM
    from jaxrej.heads.sdim_logit import SDIMLogitHead

    path, meta_path = os.path.join(workdir, HEADS_FILE), os.path.join(workdir, HEADS_META)
    if not (os.path.isfile(path) and os.path.isfile(meta_path)):
        raise ValueError(f"workdir: {workdir!r} has no {HEADS_FILE} / {HEADS_META}")
    with open(path, "rb") as f:
        d = serialization.msgpack_restore(f.read())
    with open(meta_path) as f:
        meta = json.load(f)
    arr = lambda t: jax.tree_util.tree_map(jnp.asarray, t)  # noqa: E731

    def gmm(x, kind):
        return GMM(**arr(x), covariance_type=meta[kind])

    return FittedHeads(
        state=ClassifierState(**arr(d["state"])),
        sdim=SDIMLogitHead(**arr(d["sdim"]), **meta["sdim"]),
        temperature=jnp.asarray(d["temperature"]),
        mahalanobis=Mahalanobis(**arr(d["mahalanobis"])),
        gmm_cc=gmm(d["gmm_cc"], "gmm_cc_covariance_type"),
        gmm=gmm(d["gmm"], "gmm_covariance_type"),
        model=meta["model"],
        model_kwargs=freeze_kwargs({k: v for k, v in meta["model_kwargs"]}),
        num_classes=int(meta["num_classes"]),
    )


def heads_scorer(
    run_dir: str, kind: str, *, batch_size: int = 256, heads: FittedHeads | None = None
):
    """The `jaxrej.scorers.Scorer` of head `kind` of the heads saved in run_dir (`save_heads`):
    deterministic, label-blind; its attack view is itself."""
    from jaxrej.scorers.base import Scorer

    heads = load_heads(run_dir) if heads is None else heads
    stamp = os.path.getmtime(os.path.join(run_dir, HEADS_FILE))
    settings = json.dumps({"run": os.path.abspath(run_dir), "saved": stamp, "kind": kind})
    return Scorer(name=kind, fn=head_scorer(heads, kind), num_classes=heads.num_classes,
                  batch_size=batch_size, settings=settings)  # fmt: skip
