"""`jaxrej heads --config CONFIG --workdir DIR [--test SPEC] [--ood [name=]SPEC ...]
[--config.a.b=v ...]`: the reject-heads protocol (`jaxrej.eval.heads`): base classifier (with a
progress bars), SDIM-logit, GMM heads and baselines, their reject metrics.

Data: `config.data.dataset` is a dataset string (`jaxrej.data.registry`: digits, a tfds name,
idx:IMAGES[,LABELS], npz:PATH); a local set's fixed train/validation split fits and tunes,
otherwise `data.val_fraction` of the train split is held out for validation. `--test SPEC`
reports on SPEC's test split instead of the dataset's; `--ood [name=]SPEC` (repeatable) replaces
`config.ood.datasets` (a local file is used whole, a registry name's test split). With no OOD set
named, the test split inverted and pure noise (`jaxrej.data.ood.transformed`) stand in, and the
summary says so.

Writes DIR/<stem>.json (the report, the sets used and the config) and DIR/<stem>_scores.npz
(every scorer's test and OOD scores), each atomically, where <stem> is "heads" for the config's
own sets, "heads_<test name>" with --test, and "_ood_<name>..." appended with --ood: a run on
other sets never overwrites another's results; the config's own sets also keep the fitted
classifier and heads (adversarial_heads.msgpack/.json, `scorers.heads.save_heads`) that
`jaxrej evaluate` scores and attacks. Creates DIR and never touches other files in it.
heads.json: per scorer (`scorers.<name>`) the accuracy / acc-left / rejection rate at the global
threshold, mistake detection, and per OOD set `auroc` (positive = in-distribution); `table`: the
SDIM-logit paper's accuracy / acc-left / rejection table.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="ml_collections config file (get_config())")
    parser.add_argument("--workdir", required=True, help="run folder (created if missing)")
    parser.add_argument("--test", default=None, metavar="[name=]SPEC",
                        help="report on this dataset's test split instead of the config's")  # fmt: skip
    parser.add_argument("--ood", action="append", default=None, metavar="[name=]SPEC",
                        help="an OOD set (repeatable); replaces config.ood.datasets")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


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


def result_stem(test: str | None, ood: list[str] | None) -> str:
    """File stem of a run's results: 'heads', 'heads_<test>', '..._ood_<a>_<b>' (module doc)."""
    from jaxrej.data.registry import parse_named

    stem = "heads"
    if test:
        stem += f"_{parse_named(test)[0]}"
    if ood:
        stem += "_ood_" + "_".join(parse_named(o)[0] for o in ood)
    return stem


def run(args) -> dict:
    import jax

    from jaxrej.config import load_config
    from jaxrej.eval.heads import SCORERS, evaluate_heads, load_heads_data, markdown
    from jaxrej.io import atomic_save_npz, atomic_write_json
    from jaxrej.scorers.heads import save_heads

    config = load_config(args.config, args.overrides)
    data_kw, options, seed = settings(config)
    test, ood_flags = getattr(args, "test", None), getattr(args, "ood", None)
    if ood_flags:
        data_kw["ood"] = tuple(ood_flags)
    stem = result_stem(test, ood_flags)
    options = dataclasses.replace(options, progress=not getattr(args, "no_progress", False))
    workdir = args.workdir
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir: {workdir!r} exists and is not a directory")
    t_start = time.time()
    data = load_heads_data(**data_kw, seed=seed, test=test)
    notes = []
    if not data_kw["ood"]:
        notes.append(
            "no OOD set given (config.ood.datasets or --ood [name=]SPEC): the OOD columns are "
            "the test split inverted and uniform noise, not a natural OOD dataset"
        )
    report, scores, fitted = evaluate_heads(data, options=options, key=jax.random.key(seed))
    report = {
        "config": config.to_dict(),
        "sets": dict(data.sources),
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
    print(markdown(report, percentiles=options.percentiles, ood_names=list(data.ood)),
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
