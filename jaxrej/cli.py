"""The `jaxrej` command: `jaxrej NAME [options]`.

Each subcommand lives in `jaxrej/commands/NAME.py` and defines
`add_arguments(parser)` and `run(args) -> dict`; the dict is printed as a short
summary. Configs (ml_collections files with `get_config()`) become objects here,
at the boundary, and library code receives plain values.
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
    "bench": "Run a benchmark from benchmarks/ and write benchmarks/results/NAME.json.",
}


def load_config(path: str, overrides: Sequence[str] = ()):
    """Load `get_config()` from the python file `path` and apply `--config.a.b=v` overrides.

    An override must name an existing field; its value is parsed as a Python
    literal and must keep the field's type (an int field accepts an int, a float
    field an int or a float). Raises ValueError naming the offending override.
    """
    if not os.path.isfile(path):
        raise ValueError(f"--config: no such config file {path!r}")
    spec = importlib.util.spec_from_file_location("_jaxrej_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config: {path!r} defines no get_config()")
    config = module.get_config()
    for item in overrides:
        if not item.startswith("--config.") or "=" not in item:
            raise ValueError(
                f"unrecognised argument {item!r}; overrides look like --config.a.b=value"
            )
        key, raw = item[len("--config.") :].split("=", 1)
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            if p not in node:
                raise ValueError(f"--config.{key}: config has no field {p!r}")
            node = node[p]
        if leaf not in node:
            raise ValueError(f"--config.{key}: config has no field {leaf!r}")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxrej", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            modules[name] = importlib.import_module(f"jaxrej.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"jaxrej.commands.{name}":
                raise
            continue
        modules[name].add_arguments(p)
    args, rest = parser.parse_known_args(argv)
    if args.command not in modules:
        parser.error(f"command {args.command!r} is not available in this version")
    args.overrides = rest
    bad = [r for r in rest if not r.startswith("--config.")]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)}")
    try:
        summary = modules[args.command].run(args)
    except ValueError as e:
        print(f"jaxrej {args.command}: error: {e}", file=sys.stderr)
        return 2
    if summary is not None:
        print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
