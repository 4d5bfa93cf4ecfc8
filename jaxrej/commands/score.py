"""`jaxrej score --workdir DIR [--split test] [--test [name=]SPEC] [--ood [name=]SPEC ...]
[--scorer ode|elbo] [--limit N] [--config.eval.rtol=1e-4 ...]`: class log-likelihoods
log p(x | y) for every class, predictions (argmax), accuracy and bits/dim of a set, from the EMA
params of DIR's newest intact checkpoint (an unreadable newer one is skipped with a warning; the
JSON records `checkpoint_step`).

Scorers (`--scorer`, default the run's eval.scorer): "ode", log p(x | y) by the probability-flow
ODE (below); "elbo", the denoising lower bound of `jaxrej.class_elbos` with eval.elbo_n_times
(t, z) draws per example shared by its classes (eval.elbo_time_sampling; eval.elbo_chunk_size
evaluations per vmapped call; split at the net's label_cutoff when it has one; the label acts
only up to eval.elbo_label_max when set, the class-average score above it), whose files carry
"_elbo" after the set's name.

The scored set: split `--split` of the run's `data.eval_dataset` (else `data.dataset`), or of
`--test SPEC` (a dataset string, `jaxrej.data.registry`). OOD sets (`--ood`, repeatable; a local file is used whole, a
registry name's test split): their class log-likelihoods too, and per set the AUROC of
log p(x) (positive = the scored, in-distribution set) and bits/dim.

Files, one set each, so no run overwrites another set's results, and a `--limit N` run never
overwrites a full run's (nor a `--step S` run the newest checkpoint's, nor a run with
--config.eval overrides the run's own settings'; each changed field tags the name, e.g.
"_elbo_n_times16"): DIR/score_<set>[_elbo][_limit<N>][_step<S>][_<field><value>...].json
(summary) and .npz (class_logp (N, C), labels, pred, ok, nfe, refined, covered, consistent), and
DIR/score_ood_<name>[...].npz per OOD set with the same tags.
<set> is the split ("test"), or with --test its name (plus "_<split>" unless the split is test).

Scoring is `jaxrej.class_log_likelihood_result` on padded batches of one shape (so it compiles
once; the JSON reports `compilations`): with eval.screen = "default" the library's TopK screens
pick each image's best class for the accurate solve (eval.divergence, rtol, atol, eps); "none"
solves every class accurately. A row with a failed solve (NaN) gets pred = -1: counted as
failed/rejected, never as correct.

`baseline_bits_per_dim` in the summary: the bits/dim of the scored set under an independent
per-pixel histogram of the run's training rows, the trivial density a model must beat.

`warnings` in the summary (also printed): rows whose screens misjudged a class by more than their
margin (`consistent_fraction` < 1: jaxrej.scoring.ClassLikelihoods.consistent), bits/dim worse
than a uniform density over the pixel levels (log2 n_levels), and class-conditional scores that barely depend on the label:
`label_dependence` = median over examples of the spread (std) of log p(x | y) over the classes y,
divided by the spread (std) over examples of the class-averaged log p(x | y); below
LABEL_DEPENDENCE_MIN the label hardly moves the score compared with how much the images do
(not raised where labels show an accuracy of at least twice chance: on MNIST log p(x) spreads
over hundreds of nats between images while a few nats between classes classify at 95%).
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

from jaxrej.metrics import label_dependence

LABEL_DEPENDENCE_MIN = 0.05
SCORERS = ("ode", "elbo")


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True, help="a training run folder")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument("--test", default=None, metavar="[name=]SPEC",
                        help="score this dataset (its --split) instead of the run's dataset")  # fmt: skip
    parser.add_argument("--ood", action="append", default=None, metavar="[name=]SPEC",
                        help="an OOD set (repeatable): its log p(x) AUROC and bits/dim")  # fmt: skip
    parser.add_argument("--scorer", choices=SCORERS, default=None,
                        help="ode: log p(x | y) by the probability-flow ODE; elbo: the denoising "
                        "lower bound (jaxrej.class_elbos, eval.elbo_n_times draws); default: the "
                        "run's eval.scorer (ode where a config has none)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=0, help="score only the first N examples")
    parser.add_argument("--step", type=int, default=None,
                        help="score checkpoint STEP (default: the newest intact one)")  # fmt: skip
    parser.add_argument("--raw-params", action="store_true", help="use raw params, not the EMA")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def summarize(class_logp: np.ndarray, labels, *, event_shape, n_levels: int) -> dict:
    """Accuracy (failed rows count as wrong; None without labels), failures, bits/dim and the
    label dependence from (N, C) class log-likelihoods."""
    import jax.numpy as jnp

    from jaxrej.likelihood import bits_per_dim, marginal_log_likelihood

    class_logp = np.asarray(class_logp, np.float64)
    n = int(class_logp.shape[0])
    ok = np.all(np.isfinite(class_logp), axis=1)
    pred = np.where(ok, np.argmax(np.where(ok[:, None], class_logp, 0.0), axis=1), -1)
    marg = np.asarray(marginal_log_likelihood(jnp.asarray(class_logp)))
    bpd = np.asarray(bits_per_dim(jnp.asarray(marg), tuple(event_shape), n_levels=n_levels))
    mean = lambda a: float(np.mean(a[ok])) if ok.any() else math.nan  # noqa: E731
    out = {"n": n, "n_failed": int(n - ok.sum()), "accuracy": None, "accuracy_solved": None}
    if labels is not None:
        correct = (pred == labels) & ok
        cond = class_logp[np.arange(n), labels]
        bpd_c = np.asarray(bits_per_dim(jnp.asarray(cond), tuple(event_shape), n_levels=n_levels))
        out |= {"accuracy": float(correct.sum() / n),
                "accuracy_solved": float(correct.sum() / max(ok.sum(), 1))}  # fmt: skip
    out["bits_per_dim"] = mean(bpd)
    out["bits_per_dim_conditional"] = None if labels is None else mean(bpd_c)
    out["uniform_bits_per_dim"] = math.log2(n_levels)
    out["label_dependence"] = label_dependence(class_logp)
    out["num_classes"] = int(class_logp.shape[1])
    return out | {"pred": pred, "ok": ok, "log_px": marg}


def warnings_for(summary: dict) -> list[str]:
    """The user-facing warnings of a summary (module doc)."""
    out = []
    bpd, uni = summary["bits_per_dim"], summary["uniform_bits_per_dim"]
    if math.isfinite(bpd) and bpd > uni:
        out.append(
            f"bits/dim {bpd:.3f} is worse than a uniform density over the pixel levels "
            f"({uni:.3f} = log2 n_levels): the model has not learnt the data density"
        )
    cf = summary.get("consistent_fraction")
    if cf is not None and cf < 1.0:
        out.append(
            f"the screens misjudged {100 * (1 - cf):.1f}% of the rows by more than their margin "
            "(a later pass moved a class further than the earlier pass allows: "
            "jaxrej.scoring.ClassLikelihoods.consistent), so those rows' predictions and "
            "unrefined classes are not to be trusted: re-score with --config.eval.screen=none"
        )
    r = summary["label_dependence"]["ratio"]
    acc, c = summary.get("accuracy"), summary.get("num_classes")
    beats_chance = acc is not None and c and acc >= 2.0 / c  # the labels say the ranking works
    if r is not None and r < LABEL_DEPENDENCE_MIN and not beats_chance:
        ld = summary["label_dependence"]
        out.append(
            f"the class-conditional scores barely depend on the label: the spread of "
            f"log p(x|y) over classes ({ld['class_spread']:.3g} nats, median) is {r:.3g} of its "
            f"spread over examples ({ld['example_spread']:.3g} nats), below "
            f"{LABEL_DEPENDENCE_MIN}; predictions from it are close to guesses"
        )
    return out


def baseline_bits_per_dim(d: dict, images) -> float:
    """Mean bits/dim of `images` under the independent per-pixel histogram of the run's training
    rows (`jaxrej.likelihood.pixel_histogram_bits_per_dim`): the trivial density to beat."""
    from jaxrej.data.registry import load_dataset
    from jaxrej.likelihood import pixel_histogram_bits_per_dim

    train = load_dataset(d["dataset"], d.get("train_split", "train"),
                         data_dir=d.get("data_dir") or None)  # fmt: skip
    bpd = pixel_histogram_bits_per_dim(train.images, images, n_levels=d["n_levels"])
    return float(np.mean(bpd))


def run(args) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxrej.config import RunEval, apply_overrides
    from jaxrej.data.batching import num_batches, padded_batches
    from jaxrej.data.preprocessing import to_model_input
    from jaxrej.data.registry import is_local, parse_named
    from jaxrej.elbo import class_elbos
    from jaxrej.io import atomic_save_npz, atomic_write_json
    from jaxrej.metrics import ood_detection
    from jaxrej.scoring import DEFAULT_SCREEN, class_log_likelihood_result, compilations
    from jaxrej.training.workdir import load_run_set, load_trained, read_config, score_stem

    cfg = read_config(args.workdir)  # ValueError for a missing workdir / config
    want_step = getattr(args, "step", None)
    if want_step is not None and want_step < 0:
        raise ValueError(f"--step: expected a checkpoint step >= 0, got {want_step}")
    if cfg.get("model", {}).get("name") == "abs":  # analysis by synthesis (jaxrej.abs)
        from jaxrej.abs.commands import score_run

        return score_run(args, cfg)
    own = RunEval.from_dict(cfg["eval"]).to_dict()  # with the defaults older configs lack
    ev = RunEval.from_dict(
        apply_overrides({"eval": dict(own)}, args.overrides, sections=("eval",))["eval"]
    )
    e = ev.to_dict()
    # the fields an override changed tag the files' names: no run overwrites another's results
    changed = {k: v for k, v in e.items() if v != own[k]}
    scorer = getattr(args, "scorer", None) or ev.scorer
    if args.limit < 0:
        raise ValueError(f"--limit: expected >= 0, got {args.limit}")
    test_arg, ood_args = getattr(args, "test", None), getattr(args, "ood", None) or []
    ood_named = [parse_named(o) for o in ood_args]  # ValueError for a malformed string
    names = [n for n, _ in ood_named]
    if len(set(names)) != len(names):
        raise ValueError(f"--ood: two sets share a name in {names}; name them with name=SPEC")
    score_fn, params, sde, cfg, step, cutoff = load_trained(
        args.workdir, ema=not args.raw_params, step=want_step
    )
    cutoff = cutoff if scorer == "elbo" else 0.0
    d = cfg["data"]
    if test_arg:
        test_name, test_spec = parse_named(test_arg)
        set_name = test_name if args.split == "test" else f"{test_name}_{args.split}"
        images, labels = load_run_set("--test", test_spec, args.split, d, args.limit)
    else:
        test_spec, set_name = d.get("eval_dataset") or d["dataset"], args.split
        images, labels = load_run_set("--split", test_spec, args.split, d, args.limit)
    oods = {}
    for name, spec in ood_named:
        split = "all" if is_local(spec) else "test"
        oods[name] = (spec, split, load_run_set(f"--ood {name}", spec, split, d, args.limit)[0])

    key = jax.random.key(cfg.get("seed", 0) + 1)
    dq_key, probe_key = jax.random.split(key)
    solve = ev.solve
    screen = DEFAULT_SCREEN if ev.screen == "default" else None

    def score(x_all, desc):
        nb = num_batches(len(x_all), ev.batch_size)
        bar = None
        if not args.no_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=nb, desc=f"score {desc}", dynamic_ncols=True)
        parts, masks = {"logp": [], "nfe": [], "refined": [], "covered": [], "consistent": []}, []
        for i, ((xb,), mask) in enumerate(padded_batches(x_all, batch_size=ev.batch_size)):
            x = to_model_input(jnp.asarray(xb), d["n_levels"], mode=ev.dequantize,
                               key=jax.random.fold_in(dq_key, i))  # fmt: skip
            if scorer == "elbo":
                lp = class_elbos(score_fn, params, sde, x, num_classes=d["num_classes"],
                                 key=jax.random.fold_in(probe_key, i), n_times=ev.elbo_n_times,
                                 time_sampling=ev.elbo_time_sampling, eps=ev.eps,
                                 chunk_size=ev.elbo_chunk_size or None,
                                 label_cutoff=cutoff, label_max=ev.elbo_label_max)  # fmt: skip
                nfe = jnp.full(lp.shape, ev.elbo_n_times, jnp.int32)
                if cutoff > 0:  # the draws below the cutoff are shared, evaluated at class 0
                    nfe = nfe.at[:, 0].add(ev.elbo_n_times)
                if ev.elbo_label_max:  # the shared draws above the window: the class average
                    nfe = nfe.at[:, 0].add(ev.elbo_n_times * d["num_classes"])
                res = {"logp": lp, "nfe": nfe,
                       "refined": jnp.ones(lp.shape, bool), "covered": jnp.ones(lp.shape[:1], bool),
                       "consistent": jnp.ones(lp.shape[:1], bool)}  # fmt: skip
            else:
                res = class_log_likelihood_result(
                    score_fn, params, sde, x, num_classes=d["num_classes"],
                    key=jax.random.fold_in(probe_key, i), solve=solve, screen=screen,
                    chunk_size=ev.chunk_size or None,
                )  # fmt: skip
                res = {name: getattr(res, name) for name in parts}
            for name, acc in parts.items():
                acc.append(np.asarray(res[name]))
            masks.append(mask)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        out = {k: np.concatenate([c[m] for c, m in zip(acc, masks, strict=True)])
               for k, acc in parts.items()}  # fmt: skip
        return out, nb

    compiled0 = compilations()["scorer"]
    t0 = time.perf_counter()
    r, nb = score(images, set_name)
    elapsed = time.perf_counter() - t0
    s = summarize(r["logp"], labels, event_shape=d["event_shape"], n_levels=d["n_levels"])
    s["baseline_bits_per_dim"] = baseline_bits_per_dim(d, images)
    pred, ok, log_px = s.pop("pred"), s.pop("ok"), s.pop("log_px")
    stem = score_stem(set_name, args.limit, scorer, want_step, changed)
    arrays = {"class_logp": r["logp"], "pred": pred, "ok": ok, "nfe": r["nfe"],
              "refined": r["refined"], "covered": r["covered"], "consistent": r["consistent"]}  # fmt: skip
    if labels is not None:
        arrays["labels"] = labels
    ood_results, ood_files = {}, []
    for name, (spec, split, x_ood) in oods.items():
        t1 = time.perf_counter()
        ro, _ = score(x_ood, f"ood {name}")
        so = summarize(ro["logp"], None, event_shape=d["event_shape"], n_levels=d["n_levels"])
        so_ok, so_lp = so.pop("ok"), so.pop("log_px")
        so.pop("pred")
        path = os.path.join(
            args.workdir,
            f"{score_stem('ood_' + name, args.limit, scorer, want_step, changed)}.npz",
        )
        atomic_save_npz(path, class_logp=ro["logp"], log_px=so_lp, ok=so_ok, nfe=ro["nfe"],
                        refined=ro["refined"], covered=ro["covered"],
                        consistent=ro["consistent"])  # fmt: skip
        ood_files.append(path)
        det = ood_detection(log_px, so_lp)
        ood_results[name] = {
            "spec": spec, "split": split, "n": so["n"], "n_failed": so["n_failed"],
            "auroc": det["auroc"], "fpr_at_95_tpr": det["fpr_at_95_tpr"],
            "aupr_in": det["aupr_in"], "bits_per_dim": so["bits_per_dim"],
            "time_s": round(time.perf_counter() - t1, 2),
        }  # fmt: skip
    atomic_save_npz(os.path.join(args.workdir, f"{stem}.npz"), **arrays)
    notes = []
    if not ood_results:
        notes.append("no OOD set given (--ood [name=]SPEC): no OOD AUROC reported")
    s["consistent_fraction"] = float(r["consistent"].mean())
    warnings = warnings_for(s)
    summary = {
        "set": set_name,
        "scorer": scorer,
        "dataset": test_spec,
        "split": args.split,
        "limit": args.limit or None,
        **s,
        "ood": ood_results,
        "ood_score": "log p(x) (uniform class prior); AUROC positive = in-distribution "
        "(the scored set), as jaxrej.metrics",
        "warnings": warnings,
        "notes": notes,
        "time_s": round(elapsed, 2),
        "nfe_mean_per_example": float(r["nfe"].sum(axis=1).mean()),
        "refined_fraction": float(r["refined"].mean()),
        "covered_fraction": float(r["covered"].mean()),
        "compilations": compilations()["scorer"] - compiled0,
        "batches": nb,
        "params": "raw" if args.raw_params else "ema",
        "checkpoint_step": step,
        "eval": {**e, "elbo_label_cutoff": cutoff} if scorer == "elbo" else e,
        "workdir": args.workdir,
        "files": [os.path.join(args.workdir, f"{stem}.{x}") for x in ("json", "npz")] + ood_files,
    }
    atomic_write_json(os.path.join(args.workdir, f"{stem}.json"), summary)
    for w in warnings:
        print(f"jaxrej score: warning: {w}", file=sys.stderr)
    for n in notes:
        print(f"jaxrej score: note: {n}", file=sys.stderr)
    return summary
