"""The `jaxrej` command: `jaxrej NAME [options]`.

Each subcommand lives in `jaxrej/commands/NAME.py` and defines
`add_arguments(parser)` and `run(args) -> dict`; the dict is printed as a short
summary. Only the command that runs is imported, and its module imports heavy
libraries inside run(), so `--help` is quick. Configs (ml_collections files with
`get_config()`) become objects here, at the boundary (`load_config`,
`apply_overrides`), and library code receives plain values.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import os
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


def load_config(path: str, overrides: Sequence[str] = ()):
    """`get_config()` of the python file `path`, with `apply_overrides(config, overrides)`."""
    if not os.path.isfile(path):
        raise ValueError(f"--config: no such config file {path!r}")
    spec = importlib.util.spec_from_file_location("_jaxrej_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config: {path!r} defines no get_config()")
    return apply_overrides(module.get_config(), overrides)


def apply_overrides(config, overrides: Sequence[str], *, sections: Sequence[str] | None = None):
    """Apply `--config.a.b=value` overrides to `config` (a ConfigDict or nested dicts) in place
    and return it; with `sections`, only fields under those top-level sections may be set.

    An override must name an existing field; its value is parsed as a Python literal (else
    taken as a bare string) and must keep the field's type (an int field accepts an int, a
    float field an int or a float, a tuple or list field a tuple or list, a None field
    anything). Raises ValueError naming the offending override.
    """
    for item in overrides:
        if not item.startswith("--config.") or "=" not in item:
            raise ValueError(
                f"unrecognised argument {item!r}; overrides look like --config.a.b=value"
            )
        key, raw = item[len("--config.") :].split("=", 1)
        *parents, leaf = key.split(".")
        if sections is not None and (not parents or parents[0] not in sections):
            allowed = " or ".join(f"--config.{s}.<field>=<value>" for s in sections)
            raise ValueError(f"{item!r}: only {allowed} overrides apply here")
        node = config
        for p in parents:
            if p not in node:
                raise ValueError(f"--config.{key}: config has no field {p!r}")
            node = node[p]
        if leaf not in node:
            raise ValueError(f"--config.{key}: config has no field {leaf!r}; have {sorted(node)}")
        old = node[leaf]
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare string
        if isinstance(old, bool) or isinstance(value, bool):
            ok = isinstance(old, bool) and isinstance(value, bool)
        elif isinstance(old, float):
            ok = isinstance(value, (int, float))
            value = float(value) if ok else value
        elif old is None:
            ok = True
        elif isinstance(old, (tuple, list)):
            ok = isinstance(value, (tuple, list))
            value = type(old)(value) if ok else value
        else:
            ok = isinstance(value, type(old))
        if not ok:
            raise ValueError(
                f"--config.{key}={raw!r}: expected a {type(old).__name__} like {old!r}"
            )
        node[leaf] = value
    return config


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
