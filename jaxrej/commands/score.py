"""`jaxrej score --workdir DIR --split test [--limit N] [--config.eval.rtol=1e-4 ...]`:
class log-likelihoods log p(x | y) for every class by the probability-flow ODE, predictions
(argmax), accuracy and bits/dim of a split, from the EMA params of DIR's newest intact checkpoint
(an unreadable newer one is skipped with a warning; score.json records `checkpoint_step`).

Writes DIR/score_<split>.npz (class_logp (N, C), labels, pred, ok, nfe, refined, covered) and
DIR/score.json. Scoring is `jaxrej.class_log_likelihood_result` on padded batches of one shape (so
it compiles once; score.json reports `compilations`): with eval.screen = "default" the library's
TopK screens pick each digit's best class for the accurate solve (eval.divergence, rtol, atol,
eps); "none" solves every class accurately.
A row with a failed solve (NaN) gets pred = -1: counted as failed/rejected, never as correct.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True, help="a training run folder")
    parser.add_argument("--split", default="test", help="data split to score (default: test)")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N examples")
    parser.add_argument("--raw-params", action="store_true", help="use raw params, not the EMA")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def summarize(class_logp: np.ndarray, labels: np.ndarray, *, event_shape, n_levels: int) -> dict:
    """Accuracy (failed rows count as wrong), failures and bits/dim from (N, C) class log-likelihoods."""
    import jax.numpy as jnp

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


def screen_setting(e: dict) -> str:
    """eval.screen ("default" | "none"); runs configured before it existed have screen_margin
    (0: no screen)."""
    if "screen" in e:
        return e["screen"]
    return "default" if e.get("screen_margin", 1.0) > 0 else "none"


def run(args) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxrej.cli import apply_overrides
    from jaxrej.commands.train import check_eval
    from jaxrej.data.batching import num_batches, padded_batches
    from jaxrej.data.preprocessing import to_model_input
    from jaxrej.data.registry import load_dataset
    from jaxrej.flow import FlowSolve
    from jaxrej.scoring import DEFAULT_SCREEN, class_log_likelihood_result, compilations
    from jaxrej.training.checkpoint import atomic_save_npz, atomic_write_json
    from jaxrej.training.workdir import load_trained, read_config

    cfg = read_config(args.workdir)  # ValueError for a missing workdir / config
    e = apply_overrides({"eval": dict(cfg["eval"])}, args.overrides, sections=("eval",))["eval"]
    check_eval(e)
    if args.limit < 0:
        raise ValueError(f"--limit: expected >= 0, got {args.limit}")
    score_fn, params, sde, cfg, step = load_trained(args.workdir, ema=not args.raw_params)
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
    solve = FlowSolve(divergence=e["divergence"], n_probes=e["n_probes"], rtol=e["rtol"],
                      atol=e["atol"], eps=e["eps"])  # fmt: skip
    screen = DEFAULT_SCREEN if screen_setting(e) == "default" else None
    compiled0 = compilations()["scorer"]
    parts, masks = {"logp": [], "nfe": [], "refined": [], "covered": []}, []
    t0 = time.perf_counter()
    for i, ((xb,), mask) in enumerate(padded_batches(images, batch_size=e["batch_size"])):
        x = to_model_input(jnp.asarray(xb), d["n_levels"], mode=e["dequantize"],
                           key=jax.random.fold_in(dq_key, i))  # fmt: skip
        res = class_log_likelihood_result(
            score_fn, params, sde, x, num_classes=d["num_classes"],
            key=jax.random.fold_in(probe_key, i), solve=solve, screen=screen,
            chunk_size=e.get("chunk_size") or None,
        )  # fmt: skip
        for name, acc in parts.items():
            acc.append(np.asarray(getattr(res, name)))
        masks.append(mask)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0
    class_logp, nfe, refined, covered = (
        np.concatenate([c[m] for c, m in zip(acc, masks, strict=True)]) for acc in parts.values()
    )
    s = summarize(class_logp, labels, event_shape=d["event_shape"], n_levels=d["n_levels"])
    pred, ok = s.pop("pred"), s.pop("ok")
    atomic_save_npz(os.path.join(args.workdir, f"score_{args.split}.npz"),
                    class_logp=class_logp, labels=labels, pred=pred, ok=ok, nfe=nfe,
                    refined=refined, covered=covered)  # fmt: skip
    summary = {
        "split": args.split,
        **s,
        "time_s": round(elapsed, 2),
        "nfe_mean_per_example": float(nfe.sum(axis=1).mean()),
        "refined_fraction": float(refined.mean()),
        "covered_fraction": float(covered.mean()),
        "compilations": compilations()["scorer"] - compiled0,
        "batches": nb,
        "params": "raw" if args.raw_params else "ema",
        "checkpoint_step": step,
        "eval": e,
        "workdir": args.workdir,
    }
    atomic_write_json(os.path.join(args.workdir, "score.json"), summary)
    return summary
