"""The `jaxrej` command: `jaxrej NAME [options]`.

Each subcommand lives in `jaxrej/commands/NAME.py` and defines
`add_arguments(parser)` and `run(args) -> dict`; the dict is printed as a short
summary. Only the command that runs is imported, and its module imports heavy
libraries inside run(), so `--help` is quick. Configs (ml_collections files with
`get_config()`) are read by the commands through jaxrej.config (`load_config`,
`apply_overrides`), and library code receives plain values.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Sequence

COMMANDS = {
    "train": "Train a score-based generative classifier (DSM) from a config.",
    "score": "Class log-likelihoods, predictions and bits/dim for a split of a trained workdir.",
    "heads": "Train a base classifier, fit SDIM-logit and GMM heads, report reject metrics.",
    "gwin": "GWIN: MC-dropout classifier, conditional WGAN-GP, transform rejected inputs; tau table.",
    "evaluate": "Clean, corrupted, OOD and adversarial reject tables and figures for every run in a workdir.",
    "demo": "Train the score-based classifier and heads on digits, evaluate them; tables and PNGs.",
    "bench": "Run a benchmark from benchmarks/ and write benchmarks/results/NAME.json.",
}


def _command_name(argv: Sequence[str]) -> str | None:
    """The subcommand named in `argv`: its first token that is not an option."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="jaxrej", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    name, module = _command_name(argv), None
    for n, help_text in COMMANDS.items():
        p = sub.add_parser(n, help=help_text, description=help_text)
        if n == name:  # import only the command that runs (its options, then its run())
            module = importlib.import_module(f"jaxrej.commands.{n}")
            module.add_arguments(p)
    args, rest = parser.parse_known_args(argv)
    args.overrides = rest
    bad = [r for r in rest if not r.startswith("--config.")]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)}")
    try:
        summary = module.run(args)
    except ValueError as e:
        print(f"jaxrej {args.command}: error: {e}", file=sys.stderr)
        return 2
    if summary is not None:
        print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
