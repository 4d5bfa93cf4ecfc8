"""`jaxrej heads --config CONFIG --workdir DIR [--config.a.b=v ...]`.

Trains the base classifier, fits the SDIM-logit head, the GMM heads (class-conditional and
class-agnostic) and the baselines (MSP, temperature-scaled MSP, Mahalanobis), picks thresholds
and reports:
* the SDIM-logit paper's table: base accuracy, head accuracy, acc-left and rejection rate at
  the 1st and 2nd percentile thresholds (per class, from correctly classified training rows);
* for every scorer: mistake detection (positive = correctly classified test example; the
  mistakes are the base classifier's, SDIM-logit's own for SDIM-logit) and OOD detection
  (positive = in-distribution test example) AUROC, AUPR-in/out, FPR@95%TPR, AURC, a global
  threshold at `tpr` of the validation data, and the Mann-Whitney U test in vs OOD.

Writes DIR/heads.json and DIR/heads_scores.npz (every scorer's test and OOD scores), each
atomically (temp file + os.replace); creates DIR and never touches other files in it.

OOD sets for digits are made from the test split itself: "inverted" (16 - pixel) and "noise"
(i.i.d. uniform pixel levels); tfds datasets name theirs in `config.ood.datasets`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrej import classifiers, reject
from jaxrej.cli import load_config
from jaxrej.heads import baselines, gmm, sdim_logit

SCORERS = ("sdim_logit", "msp", "msp_temperature", "mahalanobis", "gmm_cc", "gmm")


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="ml_collections config file (get_config())")
    parser.add_argument("--workdir", required=True, help="run folder (created if missing)")


# ----------------------------------------------------------------------------- data


def _load(name: str, split: str, data_dir: str):
    """(images uint8 (N, H, W, C), labels int32, n_levels)."""
    if name == "digits":
        from jaxrej.data import digits

        x, y = digits.load(split)
        return x, y, digits.N_LEVELS
    try:
        from jaxrej.data.registry import load_dataset
    except ImportError as e:  # the tfds loaders live in jaxrej.data.registry
        raise ValueError(f"data.dataset={name!r} needs jaxrej.data.registry ({e})") from e
    ds = load_dataset(name, split, data_dir=data_dir or None, download=False)
    return ds.images, ds.labels, ds.n_levels


def _scale(images, n_levels):
    return np.asarray(images, np.float32) / float(n_levels - 1)


def _digits_ood(images01: np.ndarray, n_levels: int, seed: int) -> dict[str, np.ndarray]:
    """Held-out transformations of the in-distribution test images (values in [0, 1])."""
    rng = np.random.default_rng(seed + 1000)
    noise = rng.integers(0, n_levels, size=images01.shape) / float(n_levels - 1)
    return {"inverted": 1.0 - images01, "noise": noise.astype(np.float32)}


def _split_val(labels: np.ndarray, fraction: float, seed: int):
    """Stratified (fit, val) index split of the training rows."""
    rng = np.random.default_rng(seed)
    fit_idx, val_idx = [], []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(fraction * rows.size))
        val_idx.append(rows[:k])
        fit_idx.append(rows[k:])
    return np.sort(np.concatenate(fit_idx)), np.sort(np.concatenate(val_idx))


# ----------------------------------------------------------------------------- metrics


def _detection(s_in, s_out) -> dict:
    s = np.r_[s_in, s_out]
    pos = np.r_[np.ones(len(s_in), bool), np.zeros(len(s_out), bool)]
    u, p = reject.mann_whitney_u(s_in, s_out)
    return {
        "auroc": reject.auroc(s, pos),
        "aupr_in": reject.aupr_in(s, pos),
        "aupr_out": reject.aupr_out(s, pos),
        "fpr_at_95_tpr": reject.fpr_at_tpr(s, pos, 0.95),
        "mann_whitney_u": u,
        "mann_whitney_p": p,
    }


def _mistakes(scores, correct) -> dict:
    out = {"aurc": reject.aurc(scores, ~correct), "n_errors": int((~correct).sum())}
    if correct.all() or not correct.any():
        return out | {"auroc": None, "fpr_at_95_tpr": None}
    return out | {
        "auroc": reject.auroc(scores, correct),
        "fpr_at_95_tpr": reject.fpr_at_tpr(scores, correct, 0.95),
    }


def _pct_key(k: float) -> str:
    return f"p{k:g}"


# ----------------------------------------------------------------------------- run


def _options(config) -> dict:
    c = config
    try:
        opts = {
            "dataset": str(c.data.dataset),
            "data_dir": str(c.data.get("data_dir", "")),
            "val_fraction": float(c.data.val_fraction),
            "seed": int(c.seed),
            "model": str(c.model.name),
            "model_kwargs": {
                k: (tuple(v) if isinstance(v, (list, tuple)) else v)
                for k, v in c.model.kwargs.items()
            },
            "train": dict(c.train),
            "sdim": dict(c.sdim),
            "gmm": dict(c.gmm),
            "percentiles": tuple(float(p) for p in c.reject.percentiles),
            "tpr": float(c.reject.tpr),
            "ood": list(c.ood.datasets),
        }
    except (AttributeError, KeyError, TypeError) as e:
        raise ValueError(f"--config: missing or malformed field ({e})") from e
    if not 0.0 < opts["val_fraction"] < 1.0:
        raise ValueError(
            f"data.val_fraction: expected a number in (0, 1), got {opts['val_fraction']}"
        )
    for p in opts["percentiles"]:
        if not 0.0 < p < 100.0:
            raise ValueError(f"reject.percentiles: expected numbers in (0, 100), got {p}")
    if not 0.0 < opts["tpr"] <= 1.0:
        raise ValueError(f"reject.tpr: expected a number in (0, 1], got {opts['tpr']}")
    return opts


def _write_atomic(path: str, write) -> None:
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run(args) -> dict:
    config = load_config(args.config, args.overrides)
    o = _options(config)
    workdir = args.workdir
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir: {workdir!r} exists and is not a directory")
    t_start = time.time()
    key = jax.random.key(o["seed"])
    k_model, k_train, k_sdim, k_gmm, k_gmm2 = jax.random.split(key, 5)

    # data -------------------------------------------------------------------------------
    xtr, ytr, levels = _load(o["dataset"], "train", o["data_dir"])
    xte, yte, _ = _load(o["dataset"], "test", o["data_dir"])
    xtr, xte = _scale(xtr, levels), _scale(xte, levels)
    fit_idx, val_idx = _split_val(ytr, o["val_fraction"], o["seed"])
    x_fit, y_fit, x_val, y_val = xtr[fit_idx], ytr[fit_idx], xtr[val_idx], ytr[val_idx]
    num_classes = int(ytr.max()) + 1
    if o["dataset"] == "digits":
        ood = _digits_ood(xte, levels, o["seed"])
    else:
        ood = {}
        for name in o["ood"]:
            xo, _, lo = _load(name, "test", o["data_dir"])
            ood[name] = _scale(xo, lo)
    for name, xo in ood.items():
        if xo.shape[1:] != xte.shape[1:]:
            raise ValueError(
                f"ood.datasets: {name!r} has image shape {xo.shape[1:]}, expected {xte.shape[1:]}"
            )

    # base classifier --------------------------------------------------------------------
    model = classifiers.make_model(o["model"], num_classes, **o["model_kwargs"])
    state = classifiers.init(model, x_fit[:2], key=k_model)
    state = classifiers.train(model, state, x_fit, y_fit, key=k_train, **o["train"])
    outs = {
        n: classifiers.apply(model, state, x)
        for n, x in [("fit", x_fit), ("val", x_val), ("test", xte)]
    }
    outs |= {f"ood/{n}": classifiers.apply(model, state, x) for n, x in ood.items()}
    logits = {k: np.asarray(v[0]) for k, v in outs.items()}
    feats = {k: np.asarray(v[1]) for k, v in outs.items()}
    base_pred = np.argmax(logits["test"], 1)
    base_correct = base_pred == yte

    # heads ------------------------------------------------------------------------------
    sd = dict(o["sdim"])
    sd["rep_size"] = sd.get("rep_size") or None
    head = sdim_logit.fit(logits["fit"], y_fit, key=k_sdim, **sd)
    temperature = float(baselines.fit_temperature(logits["val"], y_val))
    maha = baselines.fit_mahalanobis(
        feats["fit"], y_fit, num_classes=num_classes, reg=o["gmm"]["reg_covar"]
    )
    g = o["gmm"]
    gmm_opts = {k: g[k] for k in ("covariance_type", "reg_covar", "tol", "max_iter", "n_init")}
    gmm_cc = gmm.fit_class_conditional(
        feats["fit"],
        y_fit,
        num_classes=num_classes,
        n_components=g["n_components_per_class"],
        key=k_gmm,
        **gmm_opts,
    )
    gmm_all = gmm.fit(feats["fit"], n_components=g["n_components"], key=k_gmm2, **gmm_opts)

    def class_scores(name, split):
        if name == "sdim_logit":
            return np.asarray(sdim_logit.class_scores(head, logits[split]))
        if name == "gmm_cc":
            return np.asarray(gmm.class_log_prob(gmm_cc, feats[split]))
        return None

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
        "base_accuracy": reject.accuracy(base_pred, yte),
        "sdim_logit_accuracy": reject.accuracy(sdim_pred, yte),
    }
    per_class = {}
    for p in o["percentiles"]:
        th = reject.fit_class_thresholds(s_fit, y_fit, percentile=p)
        pred, rej = reject.decide(s_test, th)
        table[f"acc_left_{_pct_key(p)}"] = reject.acc_left(pred, yte, rej)
        table[f"rejection_rate_{_pct_key(p)}"] = reject.rejection_rate(rej)
        per_class[_pct_key(p)] = {
            "thresholds": np.asarray(th).tolist(),
            "ood_rejection_rate": {
                n: reject.rejection_rate(
                    reject.decide(class_scores("sdim_logit", f"ood/{n}"), th)[1]
                )
                for n in ood
            },
        }
    # the class-conditional GMM as a classifier with the same per-class rule
    cs_fit, cs_test = class_scores("gmm_cc", "fit"), class_scores("gmm_cc", "test")
    gmm_cc_table = {"accuracy": reject.accuracy(np.argmax(cs_test, 1), yte)}
    for p in o["percentiles"]:
        th = reject.fit_class_thresholds(cs_fit, y_fit, percentile=p)
        pred, rej = reject.decide(cs_test, th)
        gmm_cc_table[f"acc_left_{_pct_key(p)}"] = reject.acc_left(pred, yte, rej)
        gmm_cc_table[f"rejection_rate_{_pct_key(p)}"] = reject.rejection_rate(rej)

    # every scorer -----------------------------------------------------------------------
    scorers, saved = (
        {},
        {"labels_test": yte, "base_pred_test": base_pred, "sdim_pred_test": sdim_pred},
    )
    for name in SCORERS:
        s_test_c = confidence(name, "test")
        correct = (sdim_pred == yte) if name == "sdim_logit" else base_correct
        pred = sdim_pred if name == "sdim_logit" else base_pred
        s_val = confidence(name, "val")
        t = reject.fit_global_threshold(s_val, tpr=o["tpr"])
        rej = np.asarray(reject.reject_below(jnp.asarray(s_test_c), t))
        entry = {
            "mistakes": _mistakes(s_test_c, correct),
            "global_threshold": {
                "tpr": o["tpr"],
                "threshold": t,
                **reject.summarize(pred, yte, rej),
            },
            "ood": {},
        }
        saved[f"{name}/test"] = s_test_c
        saved[f"{name}/correct_test"] = correct
        for n in ood:
            s_o = confidence(name, f"ood/{n}")
            saved[f"{name}/ood/{n}"] = s_o
            entry["ood"][n] = _detection(s_test_c, s_o) | {
                "rejection_rate_at_global_threshold": reject.rejection_rate(~(s_o >= t))
            }
        scorers[name] = entry

    result = {
        "config": config.to_dict(),
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
        "seconds": time.time() - t_start,
    }

    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "heads.json")
    text = json.dumps(result, indent=2, default=float).encode()
    _write_atomic(path, lambda f: f.write(text))
    _write_atomic(os.path.join(workdir, "heads_scores.npz"), lambda f: np.savez(f, **saved))

    print(_markdown(result, o["percentiles"], list(ood)), file=sys.stderr)
    return {
        "heads_json": path,
        "table": table,
        "mistake_auroc": {n: scorers[n]["mistakes"]["auroc"] for n in SCORERS},
        "ood_auroc": {n: {k: v["auroc"] for k, v in scorers[n]["ood"].items()} for n in SCORERS},
        "seconds": round(result["seconds"], 1),
    }


def _markdown(result, percentiles, ood_names) -> str:
    t = result["table"]
    cols = ["base acc", "SDIM-logit acc"]
    vals = [t["base_accuracy"], t["sdim_logit_accuracy"]]
    for p in percentiles:
        cols += [f"acc-left @{p:g}%", f"rej. rate @{p:g}%"]
        vals += [t[f"acc_left_{_pct_key(p)}"], t[f"rejection_rate_{_pct_key(p)}"]]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines.append("| " + " | ".join(f"{100 * v:.2f}" for v in vals) + " |")
    lines += [
        "",
        "| scorer | mistake AUROC | AURC | "
        + " | ".join(f"OOD AUROC ({n})" for n in ood_names)
        + " |",
    ]
    lines.append("|" + "---|" * (3 + len(ood_names)))
    for name, e in result["scorers"].items():
        m = e["mistakes"]
        au = "n/a" if m["auroc"] is None else f"{m['auroc']:.4f}"
        oods = " | ".join(f"{e['ood'][n]['auroc']:.4f}" for n in ood_names)
        lines.append(f"| {name} | {au} | {m['aurc']:.4f} | {oods} |")
    return "\n".join(lines)
