"""`jaxrej score --workdir DIR --split test [--limit N] [--config.eval.rtol=1e-4 ...]`:
class log-likelihoods log p(x | y) for every class by the probability-flow ODE, predictions
(argmax), accuracy and bits/dim of a split, from the EMA params of DIR's latest checkpoint.

Writes DIR/score_<split>.npz (class_logp (N, C), labels, pred, ok, nfe, refined) and
DIR/score.json. With eval.screen_margin > 0, a cheap Hutchinson pass (tolerance eval.screen_tol)
first drops classes more than screen_margin nats below the best; the classes left (always the
winner) get the requested solve (jaxrej.class_log_likelihood_result).
A row with a failed solve (NaN) gets pred = -1: counted as failed/rejected, never as correct.
"""

from __future__ import annotations

import ast
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True, help="a training run folder")
    parser.add_argument("--split", default="test", help="data split to score (default: test)")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N examples")
    parser.add_argument("--raw-params", action="store_true", help="use raw params, not the EMA")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def apply_eval_overrides(eval_cfg: dict, overrides) -> dict:
    """`--config.eval.k=v` overrides on the stored eval settings (same type rules as train)."""
    out = dict(eval_cfg)
    for item in overrides:
        key, _, raw = item[len("--config.") :].partition("=")
        if not key.startswith("eval.") or key.count(".") != 1 or not raw:
            raise ValueError(
                f"{item!r}: score accepts only --config.eval.<field>=<value> overrides"
            )
        leaf = key.split(".", 1)[1]
        if leaf not in out:
            raise ValueError(f"--config.{key}: config has no field {leaf!r}; have {sorted(out)}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        old = out[leaf]
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(old):
            raise ValueError(
                f"--config.{key}={raw!r}: expected a {type(old).__name__} like {old!r}"
            )
        out[leaf] = value
    return out


def summarize(class_logp: np.ndarray, labels: np.ndarray, *, event_shape, n_levels: int) -> dict:
    """Accuracy (failed rows count as wrong), failures and bits/dim from (N, C) class log-likelihoods."""
    from jaxrej.likelihood import bits_per_dim, marginal_log_likelihood

    class_logp = np.asarray(class_logp, np.float64)
    ok = np.all(np.isfinite(class_logp), axis=1)
    pred = np.where(ok, np.argmax(np.where(ok[:, None], class_logp, 0.0), axis=1), -1)
    n = int(labels.shape[0])
    correct = (pred == labels) & ok
    marg = np.asarray(marginal_log_likelihood(jnp.asarray(class_logp)))
    cond = class_logp[np.arange(n), labels]
    bpd = np.asarray(bits_per_dim(jnp.asarray(marg), tuple(event_shape), n_levels=n_levels))
    bpd_c = np.asarray(bits_per_dim(jnp.asarray(cond), tuple(event_shape), n_levels=n_levels))
    mean = lambda a: float(np.mean(a[ok])) if ok.any() else math.nan  # noqa: E731
    return {
        "n": n,
        "n_failed": int(n - ok.sum()),
        "accuracy": float(correct.sum() / n),
        "accuracy_solved": float(correct.sum() / max(ok.sum(), 1)),
        "bits_per_dim": mean(bpd),
        "bits_per_dim_conditional": mean(bpd_c),
        "pred": pred,
        "ok": ok,
    }


def run(args) -> dict:
    from jaxrej.class_likelihoods import Screen, class_log_likelihood_result
    from jaxrej.commands.train import check_eval
    from jaxrej.data.batching import num_batches, padded_batches
    from jaxrej.data.preprocessing import to_model_input
    from jaxrej.data.registry import load_dataset
    from jaxrej.training.checkpoint import atomic_save_npz, atomic_write_json
    from jaxrej.training.workdir import load_score_model, read_config

    cfg = read_config(args.workdir)  # ValueError for a missing workdir / config
    e = apply_eval_overrides(cfg["eval"], args.overrides)
    check_eval(e)
    if args.limit < 0:
        raise ValueError(f"--limit: expected >= 0, got {args.limit}")
    score_fn, params, sde, cfg = load_score_model(args.workdir, ema=not args.raw_params)
    d = cfg["data"]
    data = load_dataset(d["dataset"], args.split, data_dir=d.get("data_dir") or None,
                        path=d.get("path") or None)  # fmt: skip
    images, labels = data.images, data.labels
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    if tuple(images.shape[1:]) != tuple(d["event_shape"]):
        raise ValueError(
            f"--split: images {images.shape[1:]} differ from the run's {d['event_shape']}"
        )
    key = jax.random.key(cfg.get("seed", 0) + 1)
    dq_key, probe_key = jax.random.split(key)
    nb = num_batches(len(images), e["batch_size"])
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=nb, desc=f"score {args.split}", dynamic_ncols=True)
    screen = None
    if e.get("screen_margin", 0.0) > 0:
        screen = Screen(margin=e["screen_margin"], divergence="rademacher",
                        rtol=e["screen_tol"], atol=e["screen_tol"])  # fmt: skip
    chunks, masks, nfe, refined = [], [], [], []
    t0 = time.perf_counter()
    for i, ((xb,), mask) in enumerate(padded_batches(images, batch_size=e["batch_size"])):
        x = to_model_input(jnp.asarray(xb), d["n_levels"], mode=e["dequantize"],
                           key=jax.random.fold_in(dq_key, i))  # fmt: skip
        res = class_log_likelihood_result(
            score_fn, params, sde, x, num_classes=d["num_classes"],
            key=jax.random.fold_in(probe_key, i), divergence=e["divergence"],
            n_probes=e["n_probes"], rtol=e["rtol"], atol=e["atol"], eps=e["eps"], screen=screen,
            chunk_size=e.get("chunk_size") or None,
        )  # fmt: skip
        chunks.append(np.asarray(res.logp))
        nfe.append(np.asarray(res.nfe))
        refined.append(np.asarray(res.refined))
        masks.append(mask)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0
    class_logp = np.concatenate([c[m] for c, m in zip(chunks, masks, strict=True)])
    nfe = np.concatenate([c[m] for c, m in zip(nfe, masks, strict=True)])
    refined = np.concatenate([c[m] for c, m in zip(refined, masks, strict=True)])
    s = summarize(class_logp, labels, event_shape=d["event_shape"], n_levels=d["n_levels"])
    pred, ok = s.pop("pred"), s.pop("ok")
    atomic_save_npz(os.path.join(args.workdir, f"score_{args.split}.npz"),
                    class_logp=class_logp, labels=labels, pred=pred, ok=ok, nfe=nfe,
                    refined=refined)  # fmt: skip
    summary = {
        "split": args.split,
        **s,
        "time_s": round(elapsed, 2),
        "nfe_mean_per_example": float(nfe.sum(axis=1).mean()),
        "refined_fraction": float(refined.mean()),
        "params": "raw" if args.raw_params else "ema",
        "eval": e,
        "workdir": args.workdir,
    }
    atomic_write_json(os.path.join(args.workdir, "score.json"), summary)
    return summary
