"""`jaxrej train --config CONFIG --workdir DIR [--config.a.b=v ...]`: DSM training of a
class-conditional score model (on the train split less `data.val_fraction` of each class when
set: the rows `jaxrej evaluate` fits reject thresholds on; a local set's train split already
excludes its validation rows); resumes from DIR's newest intact checkpoint if DIR holds the same
run (an unreadable newer one is named and moved to DIR/corrupt_checkpoints/).

Writes DIR/config.json (once), DIR/checkpoints/, DIR/metrics.jsonl and DIR/train.json. A run
already trained to training.n_iters keeps its train.json, which is printed again.
`--init-from RUN[@STEP]` starts a new run from another run's checkpoint (a fine-tune: the data,
sde and model sections must match; the training section may differ) and records it in
DIR/init_from.json.
"""

from __future__ import annotations

from jaxrej.config import load_config, new_run


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="ml_collections config file (get_config())")
    parser.add_argument("--workdir", required=True, help="run folder (created if missing)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--init-from", default=None, metavar="RUN[@STEP]",
                        help="start from another run's checkpoint (default its newest): a "
                             "fine-tune under this config's training settings; the data, sde and "
                             "model sections must match")  # fmt: skip


def run(args) -> dict:
    from jaxrej.training.run import train_run

    config = load_config(args.config, args.overrides)
    return train_run(new_run(config.to_dict()), args.workdir, init_from=getattr(args, "init_from", None),
                     progress=not args.no_progress)  # fmt: skip
