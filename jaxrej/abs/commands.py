"""The command side of ABS: `jaxrej train` and `jaxrej score` hand a run whose config has
model.name == 'abs' to `train_run` / `score_run` (plain dicts in, files out).

Config sections (configs/mnist_abs.py): data (dataset, train_split, eval_dataset, eval_split,
data_dir), model (name='abs', latent_dim, hidden, encoder_hidden, sigma, encoder), training
(`ABSTrainOptions`), eval (`LatentOptions` fields + bank_size, batch_size).

Files: DIR/config.json, checkpoints/, metrics.jsonl, train.json (train); DIR/score_<set>[_limit<N>]
.json / .npz and score_ood_<name>[_limit<N>].npz (score), the same names as the score model's.
The class score is the ABS bound in nats (a Gaussian density of the pixels in [0, 1], so no
bits/dim); OOD sets are detected by the class-marginal bound logsumexp_c s_c - log C.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

EVAL_FIELDS = ("steps", "lr", "n_starts", "encoder_start", "correction", "bank_size", "batch_size")


def _data(cfg: dict):
    """(train Dataset, eval Dataset or None) of a config's data section."""
    from jaxrej.data.registry import load_train_and_eval

    d = cfg["data"]
    return load_train_and_eval(d["dataset"], d.get("train_split", "train"), d.get("eval_dataset"),
                               d.get("eval_split"), data_dir=d.get("data_dir") or None)  # fmt: skip


def check_eval(e: dict) -> None:
    """ValueError naming a bad or unknown eval.* field of an ABS config."""
    from jaxrej.abs.latent import LatentOptions

    unknown = set(e) - set(EVAL_FIELDS)
    if unknown:
        raise ValueError(f"eval: unknown field(s) {sorted(unknown)} for model.name='abs'")
    for k in ("bank_size", "batch_size"):
        v = e.get(k, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"eval.{k}: expected an int >= 1, got {v!r}")
    try:
        LatentOptions(**{k: v for k, v in e.items() if k not in ("bank_size", "batch_size")})
    except ValueError as err:
        raise ValueError(f"eval.{err}") from err


def train_run(cfg: dict, workdir: str, *, progress: bool = True) -> dict:
    """Train (or resume) the ABS run of config dict `cfg` in `workdir` (module doc)."""
    import jax

    from jaxrej.abs import scorer as sc
    from jaxrej.abs.model import init_params
    from jaxrej.abs.training import options_from_config, train
    from jaxrej.config import json_form
    from jaxrej.io import atomic_write_json
    from jaxrej.training.workdir import CONFIG_FILE, TRAIN_FILE, check_run_workdir, read_summary

    for section in ("data", "model", "training", "eval"):
        if section not in cfg:
            raise ValueError(f"config: missing section {section!r}")
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an int, got {seed!r}")
    opts = options_from_config(cfg)
    check_eval(cfg["eval"])
    data, evals = _data(cfg)
    cfg["data"] |= {"num_classes": int(data.num_classes), "n_levels": int(data.n_levels),
                    "event_shape": list(data.images.shape[1:])}  # fmt: skip
    cfg = json_form(cfg)
    model = sc.model_from_config(
        cfg, num_classes=data.num_classes, event_shape=data.images.shape[1:]
    )
    cfg_path = os.path.join(workdir, CONFIG_FILE)
    check_run_workdir(workdir, cfg)  # ValueError: another run, nothing changed
    os.makedirs(workdir, exist_ok=True)
    if not os.path.isfile(cfg_path):
        atomic_write_json(cfg_path, cfg)
    init_key, train_key = jax.random.split(jax.random.key(seed))
    params = init_params(model, key=init_key)
    evaluate = None
    if evals is not None and opts.eval_rows and opts.eval_every:
        n = min(opts.eval_rows, len(evals.labels))
        xe = evals.images[:n].astype(np.float32) / (data.n_levels - 1)
        ye = evals.labels[:n]
        lo = sc.latent_options(cfg)
        bs = int(cfg["eval"].get("batch_size", 100))

        def evaluate(p):
            s = sc.build_scorer(model, p, bank_size=int(cfg["eval"].get("bank_size", 1000)),
                                seed=seed, options=lo)  # fmt: skip
            scores = class_scores(s, xe, batch_size=bs, progress=False)
            return {"eval_accuracy": float(np.mean(np.argmax(scores, 1) == ye)), "eval_rows": n}

    state, summary = train(workdir=workdir, model=model, init_params=params, images=data.images,
                           labels=data.labels, opts=opts, key=train_key, n_levels=data.n_levels,
                           progress=progress, evaluate=evaluate)  # fmt: skip
    path = os.path.join(workdir, TRAIN_FILE)
    stored = read_summary(path)
    if summary["start_step"] == summary["final_step"] and stored is not None:
        if stored.get("final_step") == summary["final_step"]:
            print(f"jaxrej train: {workdir!r} is already trained to step {summary['final_step']}; "
                  f"its {TRAIN_FILE} is kept", file=sys.stderr)  # fmt: skip
            return stored
    n_params = int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
    summary |= {"workdir": workdir, "model": "abs", "n_params": n_params,
                "n_train": int(data.images.shape[0]), "devices": str(jax.devices())}  # fmt: skip
    atomic_write_json(path, summary)
    return summary


def class_scores(scorer, x: np.ndarray, *, batch_size: int, progress: bool = True,
                 desc: str = "score abs", full: bool = False):  # fmt: skip
    """Class bounds (N, C) of pixels x (N, *event) in [0, 1], in padded batches of one shape
    (one compilation); full=True returns (scores, log_joint, z)."""
    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    from jaxrej.data.batching import num_batches, padded_batches

    fn = jax.jit(lambda s, xb: s.result(xb))
    parts, masks = [], []
    bar = tqdm(total=num_batches(len(x), batch_size), desc=desc, dynamic_ncols=True,
               disable=not progress)  # fmt: skip
    for (xb,), mask in padded_batches(x, batch_size=batch_size):
        r = fn(scorer, jnp.asarray(xb, jnp.float32))
        parts.append(jax.device_get((r.score, r.log_joint, r.z)))
        masks.append(mask)
        bar.update(1)
    bar.close()
    out = [np.concatenate([p[i][m] for p, m in zip(parts, masks, strict=True)]) for i in range(3)]
    return tuple(out) if full else out[0]


def score_run(args, cfg: dict) -> dict:
    """`jaxrej score` for an ABS run (module doc); args as `jaxrej.commands.score` parses them."""
    import jax.numpy as jnp

    from jaxrej.abs.scorer import load_scorer
    from jaxrej.config import apply_overrides
    from jaxrej.data.registry import is_local, parse_named
    from jaxrej.io import atomic_save_npz, atomic_write_json
    from jaxrej.likelihood import marginal_log_likelihood
    from jaxrej.metrics import label_dependence, ood_detection
    from jaxrej.training.workdir import load_run_set, score_stem

    e = apply_overrides({"eval": dict(cfg["eval"])}, args.overrides, sections=("eval",))["eval"]
    check_eval(e)
    if args.limit < 0:
        raise ValueError(f"--limit: expected >= 0, got {args.limit}")
    ood_named = [parse_named(o) for o in (getattr(args, "ood", None) or [])]
    names = [n for n, _ in ood_named]
    if len(set(names)) != len(names):
        raise ValueError(f"--ood: two sets share a name in {names}; name them with name=SPEC")
    d = cfg["data"]
    if getattr(args, "test", None):
        test_name, test_spec = parse_named(args.test)
        set_name = test_name if args.split == "test" else f"{test_name}_{args.split}"
        images, labels = load_run_set("--test", test_spec, args.split, d, args.limit)
    else:
        test_spec = d.get("eval_dataset") or d["dataset"]
        set_name = args.split
        images, labels = load_run_set("--split", test_spec, args.split, d, args.limit)
    oods = {}
    for name, spec in ood_named:
        split = "all" if is_local(spec) else "test"
        oods[name] = (spec, split, load_run_set(f"--ood {name}", spec, split, d, args.limit)[0])
    latent = {k: v for k, v in e.items() if k not in ("bank_size", "batch_size")}
    want_step = getattr(args, "step", None)
    scorer, step = load_scorer(args.workdir, step=want_step, **latent)
    bs, unit = int(e.get("batch_size", 100)), float(d["n_levels"] - 1)
    progress = not args.no_progress

    def marginal(s):
        return np.asarray(marginal_log_likelihood(jnp.asarray(s)))

    t0 = time.perf_counter()
    s, lj, z = class_scores(scorer, images.astype(np.float32) / unit, batch_size=bs,
                            progress=progress, desc=f"score {set_name}", full=True)  # fmt: skip
    elapsed = time.perf_counter() - t0
    pred = np.argmax(s, axis=1)
    n = len(pred)
    log_px = marginal(s)
    stem = score_stem(set_name, args.limit, step=want_step)
    summary = {"set": set_name, "dataset": test_spec, "split": args.split, "n": n,
               "limit": args.limit or None, "model": "abs",
               "accuracy": None if labels is None else float(np.mean(pred == labels)),
               "bound_nats": float(np.mean(log_px)),
               "bound_nats_conditional": None if labels is None else float(np.mean(s[np.arange(n), labels])),
               "label_dependence": label_dependence(s)}  # fmt: skip
    arrays = {"class_logp": s, "log_joint": lj, "z": z, "pred": pred, "log_px": log_px}
    if labels is not None:
        arrays["labels"] = labels
    ood_results, files = {}, []
    for name, (spec, split, x_ood) in oods.items():
        t1 = time.perf_counter()
        so = class_scores(scorer, x_ood.astype(np.float32) / unit, batch_size=bs,
                          progress=progress, desc=f"score ood {name}")  # fmt: skip
        lo = marginal(so)
        path = os.path.join(
            args.workdir, f"{score_stem('ood_' + name, args.limit, step=want_step)}.npz"
        )
        atomic_save_npz(path, class_logp=so, log_px=lo)
        files.append(path)
        det = ood_detection(log_px, lo)
        ood_results[name] = {"spec": spec, "split": split, "n": int(len(lo)), "auroc": det["auroc"],
                             "fpr_at_95_tpr": det["fpr_at_95_tpr"], "aupr_in": det["aupr_in"],
                             "bound_nats": float(np.mean(lo)),
                             "time_s": round(time.perf_counter() - t1, 2)}  # fmt: skip
    atomic_save_npz(os.path.join(args.workdir, f"{stem}.npz"), **arrays)
    summary |= {"ood": ood_results,
                "ood_score": "class-marginal ABS bound logsumexp_c s_c(x) - log C (nats); AUROC "
                "positive = in-distribution (the scored set), as jaxrej.metrics",
                "score": "ABS bound on log p(x | y) in nats (jaxrej.abs), Gaussian pixel density",
                "time_s": round(elapsed, 2), "checkpoint_step": step, "eval": e,
                "workdir": args.workdir,
                "files": [os.path.join(args.workdir, f"{stem}.{x}") for x in ("json", "npz")] + files}  # fmt: skip
    atomic_write_json(os.path.join(args.workdir, f"{stem}.json"), summary)
    return summary
