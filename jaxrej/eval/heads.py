"""The reject-heads protocol: a base classifier, the SDIM-logit head, GMM heads and baselines,
their thresholds, and the metrics reported for each (`jaxrej heads` is a thin wrapper).

    data = load_heads_data("digits", val_fraction=0.15, seed=0, ood=("fashion=idx:f.gz",))
    res = evaluate_heads(data, options=HeadsOptions(...), key=jax.random.key(0))
    res.report["table"], res.scores["gmm/test"]

Reported:
* the SDIM-logit paper's table: base accuracy, head accuracy, acc-left and rejection rate at
  each percentile threshold (per class, from correctly classified fit rows; Xiao et al. 2020);
* for every scorer in SCORERS: mistake detection (positive = correctly classified test example;
  the mistakes are the base classifier's, SDIM-logit's own for SDIM-logit) and OOD detection
  (positive = in-distribution test example), `metrics.mistake_detection` and
  `metrics.ood_detection`, plus a global threshold accepting `tpr` of the validation rows.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

SCORERS = ("sdim_logit", "msp", "msp_temperature", "mahalanobis", "gmm_cc", "gmm")


class HeadsData(NamedTuple):
    """Images float32 in [0, 1] (N, H, W, C) and int32 labels (N,) of each split."""

    fit: tuple[np.ndarray, np.ndarray]  # fits the classifier and the heads
    val: tuple[np.ndarray, np.ndarray]  # temperature and global thresholds
    test: tuple[np.ndarray, np.ndarray]
    ood: dict[str, np.ndarray]  # name -> images (M, H, W, C), shaped like the test images
    num_classes: int
    sources: dict[str, str] = {}  # "fit", "val", "test", "ood/<name>" -> where the rows came from


class HeadsEvaluation(NamedTuple):
    report: dict  # JSON-ready numbers (see the module doc)
    scores: dict[str, np.ndarray]  # every scorer's test and OOD confidences, labels, predictions
    fitted: Any = None  # jaxrej.scorers.heads.FittedHeads: the classifier and every head


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadsOptions:
    """Plain values of the protocol; __post_init__ names a bad value.

    model, model_kwargs: `classifiers.make_model`; train: `classifiers.train` keywords;
    sdim: `heads.sdim_logit.fit` keywords (rep_size 0: the number of classes); gmm, gmm_cc: the
    class-agnostic and the per-class mixtures' `heads.gmm.EMOptions`;
    percentiles: per-class threshold percentiles in (0, 100); tpr: the global rule's accepted
    fraction of validation rows, in (0, 1]; progress: tqdm bars on stderr while fitting.
    """

    model: str
    model_kwargs: Mapping[str, Any]
    train: Mapping[str, Any]
    sdim: Mapping[str, Any]
    gmm: Any  # jaxrej.heads.gmm.EMOptions
    gmm_cc: Any
    percentiles: tuple[float, ...] = (1.0, 2.0)
    tpr: float = 0.95
    progress: bool = False

    def __post_init__(self):
        for p in self.percentiles:
            if not 0.0 < p < 100.0:
                raise ValueError(f"reject.percentiles: expected numbers in (0, 100), got {p}")
        if not 0.0 < self.tpr <= 1.0:
            raise ValueError(f"reject.tpr: expected a number in (0, 1], got {self.tpr}")
        from jaxrej.heads.gmm import EMOptions

        for name in ("gmm", "gmm_cc"):
            if not isinstance(getattr(self, name), EMOptions):
                raise ValueError(f"{name}: expected a jaxrej.heads.gmm.EMOptions, got "
                                 f"{getattr(self, name)!r}")  # fmt: skip


def split_validation(labels: np.ndarray, fraction: float, *, seed: int):
    """Stratified (fit, val) row indices: round(fraction * n_c) rows of each class c to val."""
    rng = np.random.default_rng(seed)
    fit_idx, val_idx = [], []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(fraction * rows.size))
        val_idx.append(rows[:k])
        fit_idx.append(rows[k:])
    return np.sort(np.concatenate(fit_idx)), np.sort(np.concatenate(val_idx))


def load_heads_data(
    dataset: str,
    *,
    ood: tuple[str, ...] = (),
    val_fraction: float,
    seed: int,
    data_dir: str | None = None,
    test: str | None = None,
) -> HeadsData:
    """The protocol's splits of the dataset string `dataset` (`data.registry`), scaled by
    `preprocessing.to_unit_interval`.

    fit / val: a local set's (idx:, npz:) fixed "train" / "validation" splits; otherwise the
    "train" split divided by `split_validation(val_fraction, seed)`. test: the "test" split of
    `dataset`, or of `test` ("[name=]SPEC") when given. OOD sets: each "[name=]SPEC" in `ood`
    (a local file whole, split "all"; a registry name its "test" split; labels not needed), or
    with none named, `data.ood.transformed` of the test split (noise seed: seed + 1000)."""
    from jaxrej.data import ood as ood_sets
    from jaxrej.data.preprocessing import to_unit_interval
    from jaxrej.data.registry import is_local, load_dataset, parse_named

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction: expected a number in (0, 1), got {val_fraction}")
    kw = {"data_dir": data_dir or None, "download": False}

    def need_labels(d, field):
        if d.labels is None:
            raise ValueError(f"{field}: {d.spec!r} has no labels; this split needs them")
        return d

    def load(field, spec, split):
        try:
            return load_dataset(spec, split, **kw)
        except ValueError as e:
            raise ValueError(f"{field}: {e}") from e

    train = need_labels(load("data.dataset", dataset, "train"), "data.dataset")
    x_train = to_unit_interval(train.images, train.n_levels)
    if is_local(dataset):
        val = need_labels(load("data.dataset", dataset, "validation"), "data.dataset")
        fit_xy = (x_train, train.labels)
        val_xy = (to_unit_interval(val.images, val.n_levels), val.labels)
        sources = {"fit": f"{dataset} [train]", "val": f"{dataset} [validation]"}
    else:
        fit_idx, val_idx = split_validation(train.labels, val_fraction, seed=seed)
        fit_xy = (x_train[fit_idx], train.labels[fit_idx])
        val_xy = (x_train[val_idx], train.labels[val_idx])
        sources = {
            "fit": f"{dataset} [train, {1 - val_fraction:g} of each class]",
            "val": f"{dataset} [train, {val_fraction:g} of each class]",
        }
    test_spec = parse_named(test)[1] if test else dataset
    test_set = need_labels(load("--test" if test else "data.dataset", test_spec, "test"), "--test")
    sources["test"] = f"{test_spec} [test]"
    if ood:
        sets = {}
        for item in ood:
            name, spec = parse_named(item)
            if name in sets:
                raise ValueError(f"ood: two sets named {name!r}; name them with name=SPEC")
            split = "all" if is_local(spec) else "test"
            d = load(f"ood {name!r}", spec, split)
            sets[name] = to_unit_interval(d.images, d.n_levels)
            sources[f"ood/{name}"] = f"{spec} [{split}]"
    else:
        levels = ood_sets.transformed(test_set.images, test_set.n_levels, seed=seed + 1000)
        sets = {n: to_unit_interval(x, test_set.n_levels) for n, x in levels.items()}
        sources |= {f"ood/{n}": f"{test_spec} [test] {n}" for n in sets}
    shape = train.images.shape[1:]
    for name, x in [("test", test_set.images), *sets.items()]:
        if x.shape[1:] != shape:
            raise ValueError(
                f"{'--test' if name == 'test' else 'ood ' + repr(name)}: image shape "
                f"{x.shape[1:]}, expected the training images' {shape}"
            )
    classes = int(train.num_classes)
    if test_set.labels.size and test_set.labels.max() >= classes:
        raise ValueError(f"--test: labels up to {test_set.labels.max()}, expected < {classes}")
    return HeadsData(
        fit=fit_xy,
        val=val_xy,
        test=(to_unit_interval(test_set.images, test_set.n_levels), test_set.labels),
        ood=sets,
        num_classes=classes,
        sources=sources,
    )


def evaluate_heads(data: HeadsData, *, options: HeadsOptions, key) -> HeadsEvaluation:
    """Train the base classifier on data.fit, fit every head, pick thresholds and report
    (module doc). key: a jax PRNG key for the classifier, SDIM-logit and the GMMs."""
    import jax.numpy as jnp

    from jaxrej import classifiers, metrics, reject
    from jaxrej.heads import baselines, gmm
    from jaxrej.scorers.heads import fit_heads, head_scores

    o = options
    (x_fit, y_fit), (x_val, y_val), (xte, yte) = data.fit, data.val, data.test
    num_classes, ood = data.num_classes, data.ood

    # base classifier and heads (the one fitting path: scorers.heads.fit_heads) ----------------
    fitted = fit_heads(data.fit, data.val, num_classes=num_classes, model=o.model,
                       model_kwargs=o.model_kwargs, train=o.train, sdim=o.sdim, gmm=o.gmm,
                       gmm_cc=o.gmm_cc, key=key, progress=o.progress)  # fmt: skip
    model, state = fitted.module(), fitted.state
    outs = {
        n: classifiers.apply(model, state, x)
        for n, x in [("fit", x_fit), ("val", x_val), ("test", xte)]
    }
    outs |= {f"ood/{n}": classifiers.apply(model, state, x) for n, x in ood.items()}
    logits = {k: np.asarray(v[0]) for k, v in outs.items()}
    feats = {k: np.asarray(v[1]) for k, v in outs.items()}
    base_pred = np.argmax(logits["test"], 1)
    base_correct = base_pred == yte
    head, maha, gmm_cc, gmm_all = fitted.sdim, fitted.mahalanobis, fitted.gmm_cc, fitted.gmm
    temperature = float(fitted.temperature)

    def class_scores(name, split):  # the scorer layer's definition of the head's scores
        return np.asarray(head_scores(fitted, name, logits[split], feats[split]))

    def confidence(name, split):
        """(N,) confidence of the prediction each scorer rejects on."""
        lg = logits[split]
        if name == "sdim_logit":
            return np.max(class_scores(name, split), axis=1)
        if name == "gmm_cc":  # log p(z | y = base prediction)
            cs = class_scores(name, split)
            return np.take_along_axis(cs, np.argmax(lg, 1)[:, None], axis=1)[:, 0]
        if name == "msp":
            return np.asarray(baselines.msp(lg))
        if name == "msp_temperature":
            return np.asarray(baselines.msp(lg, temperature))
        if name == "mahalanobis":
            return np.asarray(baselines.mahalanobis_score(maha, feats[split]))
        if name == "gmm":
            return np.asarray(gmm.log_prob(gmm_all, feats[split]))
        raise AssertionError(name)

    # SDIM-logit paper table ---------------------------------------------------------------
    s_fit, s_test = class_scores("sdim_logit", "fit"), class_scores("sdim_logit", "test")
    sdim_pred = np.argmax(s_test, 1)
    table = {
        "base_accuracy": metrics.accuracy(base_pred, yte),
        "sdim_logit_accuracy": metrics.accuracy(sdim_pred, yte),
    }

    def per_class_rule(fit_scores, test_scores, row):
        """{key: thresholds (C,)} of each percentile rule fitted on the fit rows; `row` gets
        each rule's acc_left / rejection_rate on the test rows."""
        out = {}
        for p in o.percentiles:
            k = reject.threshold_key(p)
            th = reject.fit_thresholds(fit_scores, y_fit, percentiles=(p,), accept_correct=())[k]
            pred, rej = reject.decide(test_scores, th)
            row[f"acc_left_{k}"] = metrics.acc_left(pred, yte, rej)
            row[f"rejection_rate_{k}"] = metrics.rejection_rate(rej)
            out[k] = th
        return out

    per_class = {
        k: {"thresholds": np.asarray(th).tolist(),
            "ood_rejection_rate": {n: metrics.rejection_rate(reject.decide(
                class_scores("sdim_logit", f"ood/{n}"), th)[1]) for n in ood}}
        for k, th in per_class_rule(s_fit, s_test, table).items()
    }  # fmt: skip
    # the class-conditional GMM as a classifier with the same per-class rule
    cs_fit, cs_test = class_scores("gmm_cc", "fit"), class_scores("gmm_cc", "test")
    gmm_cc_table = {"accuracy": metrics.accuracy(np.argmax(cs_test, 1), yte)}
    per_class_rule(cs_fit, cs_test, gmm_cc_table)

    # every scorer -----------------------------------------------------------------------
    scorers = {}
    saved = {"labels_test": yte, "base_pred_test": base_pred, "sdim_pred_test": sdim_pred}
    for name in SCORERS:
        s_test_c = confidence(name, "test")
        correct = (sdim_pred == yte) if name == "sdim_logit" else base_correct
        pred = sdim_pred if name == "sdim_logit" else base_pred
        t = reject.fit_global_threshold(confidence(name, "val"), tpr=o.tpr)
        rej = np.asarray(reject.reject_below(jnp.asarray(s_test_c), t))
        entry = {
            "mistakes": metrics.mistake_detection(s_test_c, correct),
            "global_threshold": {"tpr": o.tpr, "threshold": t, **metrics.summarize(pred, yte, rej)},
            "ood": {},
        }
        saved[f"{name}/test"] = s_test_c
        saved[f"{name}/correct_test"] = correct
        for n in ood:
            s_o = confidence(name, f"ood/{n}")
            saved[f"{name}/ood/{n}"] = s_o
            entry["ood"][n] = metrics.ood_detection(s_test_c, s_o) | {
                "rejection_rate_at_global_threshold": metrics.rejection_rate(~(s_o >= t))
            }
        scorers[name] = entry

    report = {
        "n": {"fit": int(len(y_fit)), "val": int(len(y_val)), "test": int(len(yte))}
        | {f"ood/{n}": int(len(x)) for n, x in ood.items()},
        "table": table,
        "sdim_logit_per_class": per_class,
        "gmm_cc_per_class": gmm_cc_table,
        "temperature": temperature,
        "gmm": {
            "class_conditional_converged": np.asarray(gmm_cc.converged).tolist(),
            "class_agnostic_converged": bool(gmm_all.converged),
            "class_agnostic_train_loglik": float(gmm_all.lower_bound),
        },
        "classifier_final_train_loss": float(state.losses[-1]),
        "sdim_final_losses": dict(
            zip(("total", "mi", "nll", "lm"), np.asarray(head.losses[-1]).tolist(), strict=True)
        ),
        "scorers": scorers,
    }
    return HeadsEvaluation(report, saved, fitted)


def markdown(report: dict, *, percentiles, ood_names) -> str:
    """Two markdown tables: the SDIM-logit paper's table, and each scorer's mistake AUROC,
    AURC and OOD AUROC per set."""
    from jaxrej import reject

    t = report["table"]
    cols = ["base acc", "SDIM-logit acc"]
    vals = [t["base_accuracy"], t["sdim_logit_accuracy"]]
    for p in percentiles:
        cols += [f"acc-left @{p:g}%", f"rej. rate @{p:g}%"]
        vals += [
            t[f"acc_left_{reject.threshold_key(p)}"],
            t[f"rejection_rate_{reject.threshold_key(p)}"],
        ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines.append("| " + " | ".join(f"{100 * v:.2f}" for v in vals) + " |")
    lines += [
        "",
        "| scorer | mistake AUROC | AURC | "
        + " | ".join(f"OOD AUROC ({n})" for n in ood_names)
        + " |",
    ]
    lines.append("|" + "---|" * (3 + len(ood_names)))
    for name, e in report["scorers"].items():
        m = e["mistakes"]
        au = "n/a" if m["auroc"] is None else f"{m['auroc']:.4f}"
        oods = " | ".join(f"{e['ood'][n]['auroc']:.4f}" for n in ood_names)
        lines.append(f"| {name} | {au} | {m['aurc']:.4f} | {oods} |")
    return "\n".join(lines)


def heads_stem(test: str | None, ood: Sequence[str] | None) -> str:
    """File stem of a heads run's results: 'heads' for the config's own sets, 'heads_<test name>'
    with `test`, '..._ood_<a>_<b>' with `ood`: a run on other sets never overwrites another's."""
    from jaxrej.data.registry import parse_named

    stem = "heads"
    if test:
        stem += f"_{parse_named(test)[0]}"
    if ood:
        stem += "_ood_" + "_".join(parse_named(o)[0] for o in ood)
    return stem


def run_heads(workdir: str, *, data: Mapping[str, Any], options: HeadsOptions, seed: int,
              config: Mapping[str, Any], test: str | None = None,
              ood: Sequence[str] | None = None) -> dict:  # fmt: skip
    """The protocol (`load_heads_data(**data)`, `evaluate_heads`) into `workdir`, which is
    created and where nothing else is touched: <stem>.json (the report, the sets, `config`
    recorded as given) and <stem>_scores.npz, <stem> = `heads_stem(test, ood)`; for the config's
    own sets also the fitted heads (`scorers.heads.save_heads`) that `jaxrej evaluate` scores
    and attacks. `ood` replaces data["ood"]. Prints the tables to stderr and returns a summary.
    """
    import jax

    from jaxrej.io import atomic_save_npz, atomic_write_json
    from jaxrej.scorers.heads import save_heads

    data = dict(data)
    if ood:
        data["ood"] = tuple(ood)
    stem = heads_stem(test, ood)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir: {workdir!r} exists and is not a directory")
    t_start = time.time()
    loaded = load_heads_data(**data, seed=seed, test=test)
    notes = []
    if not data["ood"]:
        notes.append(
            "no OOD set given (config.ood.datasets or --ood [name=]SPEC): the OOD columns are "
            "the test split inverted and uniform noise, not a natural OOD dataset"
        )
    report, scores, fitted = evaluate_heads(loaded, options=options, key=jax.random.key(seed))
    report = {
        "config": dict(config),
        "data": {k: data.get(k) for k in ("dataset", "ood", "val_fraction", "data_dir")},
        "seed": int(seed),
        "sets": dict(loaded.sources),
        "ood_positive": "in-distribution (AUROC of the confidence, in-distribution test = 1)",
        "notes": notes,
        **report,
        "seconds": time.time() - t_start,
    }

    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, f"{stem}.json")
    atomic_write_json(path, report)
    atomic_save_npz(os.path.join(workdir, f"{stem}_scores.npz"), **scores)
    if stem == "heads":  # the config's own sets: keep the fitted heads for evaluate / attacks
        save_heads(workdir, fitted)
    print(markdown(report, percentiles=options.percentiles, ood_names=list(loaded.ood)),
          file=sys.stderr)  # fmt: skip
    for n in notes:
        print(f"jaxrej heads: note: {n}", file=sys.stderr)
    s = report["scorers"]
    return {
        "heads_json": path,
        "sets": report["sets"],
        "table": report["table"],
        "accuracy_at_global_threshold": {
            n: {k: s[n]["global_threshold"][k] for k in ("accuracy", "acc_left", "rejection_rate")}
            for n in SCORERS
        },
        "mistake_auroc": {n: s[n]["mistakes"]["auroc"] for n in SCORERS},
        "ood_auroc": {n: {k: v["auroc"] for k, v in s[n]["ood"].items()} for n in SCORERS},
        "notes": notes,
        "seconds": round(report["seconds"], 1),
    }
