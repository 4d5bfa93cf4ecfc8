"""`jaxrej heads --config CONFIG --workdir DIR [--config.a.b=v ...]`: the reject-heads protocol
(`jaxrej.eval.heads`): base classifier, SDIM-logit, GMM heads and baselines, their reject metrics.

Writes DIR/heads.json (the report and the config) and DIR/heads_scores.npz (every scorer's test
and OOD scores), each atomically; creates DIR and never touches other files in it. OOD sets: the
test splits of `config.ood.datasets`, or with none named (digits), the test split inverted and
pure noise (`jaxrej.data.ood.transformed`).
"""

from __future__ import annotations

import os
import sys
import time


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="ml_collections config file (get_config())")
    parser.add_argument("--workdir", required=True, help="run folder (created if missing)")


def settings(config):
    """The config as plain values: (load_heads_data keywords, HeadsOptions, seed)."""
    from jaxrej.eval.heads import HeadsOptions

    c = config
    try:
        data = {
            "dataset": str(c.data.dataset),
            "ood": tuple(str(n) for n in c.ood.datasets),
            "val_fraction": float(c.data.val_fraction),
            "data_dir": str(c.data.get("data_dir", "")) or None,
            "path": str(c.data.get("path", "")) or None,
        }
        options = HeadsOptions(
            model=str(c.model.name),
            model_kwargs={
                k: (tuple(v) if isinstance(v, (list, tuple)) else v)
                for k, v in c.model.kwargs.items()
            },
            train=dict(c.train),
            sdim=dict(c.sdim),
            gmm=dict(c.gmm),
            percentiles=tuple(float(p) for p in c.reject.percentiles),
            tpr=float(c.reject.tpr),
        )
        seed = int(c.seed)
    except (AttributeError, KeyError, TypeError) as e:
        raise ValueError(f"--config: missing or malformed field ({e})") from e
    return data, options, seed


def run(args) -> dict:
    import jax

    from jaxrej.cli import load_config
    from jaxrej.eval.heads import SCORERS, evaluate_heads, load_heads_data, markdown
    from jaxrej.training.checkpoint import atomic_save_npz, atomic_write_json

    config = load_config(args.config, args.overrides)
    data_kw, options, seed = settings(config)
    workdir = args.workdir
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir: {workdir!r} exists and is not a directory")
    t_start = time.time()
    data = load_heads_data(**data_kw, seed=seed)
    report, scores = evaluate_heads(data, options=options, key=jax.random.key(seed))
    report = {"config": config.to_dict(), **report, "seconds": time.time() - t_start}

    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "heads.json")
    atomic_write_json(path, report)
    atomic_save_npz(os.path.join(workdir, "heads_scores.npz"), **scores)
    print(markdown(report, percentiles=options.percentiles, ood_names=list(data.ood)),
          file=sys.stderr)  # fmt: skip
    s = report["scorers"]
    return {
        "heads_json": path,
        "table": report["table"],
        "mistake_auroc": {n: s[n]["mistakes"]["auroc"] for n in SCORERS},
        "ood_auroc": {n: {k: v["auroc"] for k, v in s[n]["ood"].items()} for n in SCORERS},
        "seconds": round(report["seconds"], 1),
    }
