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


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="ml_collections config file (get_config())")
    parser.add_argument("--workdir", required=True, help="run folder (created if missing)")
    parser.add_argument("--test", default=None, metavar="[name=]SPEC",
                        help="report on this dataset's test split instead of the config's")  # fmt: skip
    parser.add_argument("--ood", action="append", default=None, metavar="[name=]SPEC",
                        help="an OOD set (repeatable); replaces config.ood.datasets")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> dict:
    import dataclasses

    from jaxrej.config import heads_settings, load_config
    from jaxrej.eval.heads import run_heads

    config = load_config(args.config, args.overrides)
    data, options, seed = heads_settings(config)
    options = dataclasses.replace(options, progress=not getattr(args, "no_progress", False))
    return run_heads(args.workdir, data=data, options=options, seed=seed, config=config.to_dict(),
                     test=getattr(args, "test", None), ood=getattr(args, "ood", None))  # fmt: skip
