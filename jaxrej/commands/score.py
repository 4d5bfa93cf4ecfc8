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

Scoring, the summary and its warnings are `jaxrej.eval.run_scores.score_run` (its module doc
says what each field is): the run's judge (`jaxrej.scorers.sbgc.run_judge`), the scorer
`jaxrej evaluate`'s clean table calls, so the two commands give a row the same scores. Inputs are
dequantised by eval.dequantize; each row's random draws (its dequantisation noise, probes or
(t, z) draws) come from a hash of its pixels, so its score does not depend on the batch it was
scored in. A row with a failed solve (NaN) gets pred = -1 and ok = False: counted as
failed/rejected, never as correct. `warnings` (also printed) and `notes` are the summary's.

An ABS run (model.name = 'abs') takes the same flags but --scorer and --raw-params, and its eval
section's overrides (`jaxrej.config.ABSEval`); it is scored by `jaxrej.abs.run.score_run` with the
scorer `jaxrej evaluate` loads (`jaxrej.abs.scorer.load_scorer`): the class scores are its bound
on log p(x | y) in nats, the summary has bound_nats (and per OOD set) instead of bits/dim, and
the npz adds log_joint, z and log_px.
"""

from __future__ import annotations

import os
import sys

from jaxrej.config import SCORERS


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


def run(args) -> dict:
    from jaxrej.config import load_run, run_eval_options
    from jaxrej.eval.run_scores import ScoreOptions, score_run
    from jaxrej.io import atomic_save_npz, atomic_write_json
    from jaxrej.training.workdir import score_stem

    run = load_run(args.workdir)  # ValueError for a missing workdir / config, or a bad field
    # the run's eval options (an ABS run's: jaxrej.config.ABSEval); the fields an override
    # changed tag the files' names: no run overwrites another's results
    ev, changed = run_eval_options(run, args.overrides)
    options = ScoreOptions(run_eval=ev, scorer=args.scorer, split=args.split, test=args.test,
                           ood=tuple(args.ood or ()), limit=args.limit, step=args.step,
                           ema=not args.raw_params, progress=not args.no_progress)  # fmt: skip
    rep = score_run(args.workdir, options=options, run=run)

    def path(set_name, ext):
        stem = score_stem(set_name, args.limit, options.kind, args.step, changed)
        return os.path.join(args.workdir, f"{stem}.{ext}")

    files = [path(rep.set_name, "json"), path(rep.set_name, "npz")]
    for name, arrays in rep.ood.items():
        files.append(path("ood_" + name, "npz"))
        atomic_save_npz(files[-1], **arrays)
    atomic_save_npz(files[1], **rep.arrays)
    summary = {**rep.summary, "workdir": args.workdir, "files": files}
    atomic_write_json(files[0], summary)
    for w in summary["warnings"]:
        print(f"jaxrej score: warning: {w}", file=sys.stderr)
    for n in summary["notes"]:
        print(f"jaxrej score: note: {n}", file=sys.stderr)
    return summary
