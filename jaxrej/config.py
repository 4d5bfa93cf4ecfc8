"""Config files at the command boundary: `get_config()` python files (ml_collections) and the
`--config.a.b=value` overrides of the command line. Commands turn the result into options;
library code below them receives plain values.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from collections.abc import Sequence


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
