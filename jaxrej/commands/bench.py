"""`jaxrej bench NAME [benchmark options ...]`: run `benchmarks/NAME.py`'s `main(argv)`.

Everything after NAME goes to the benchmark unchanged (`jaxrej bench solver_tolerance --quick`).
The benchmarks live in the repository's `benchmarks/` package, found next to the installed
`jaxrej` package (an editable install) or in the current directory. A benchmark is a module there
that defines `main(argv)` and writes its results with `benchmarks.report.write_report`; the
others (report, trained) are helpers. Each writes `RESULTS_DIR/OUT.json` and `OUT.md`
(`--results-dir`, default benchmarks/results; `--out`, default NAME).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import sys


def benchmarks_root() -> str | None:
    """The folder that contains the `benchmarks` package, or None when there is none."""
    here = os.path.abspath(__file__)  # <root>/jaxrej/commands/bench.py
    candidates = [os.path.dirname(os.path.dirname(os.path.dirname(here))), os.getcwd()]
    for root in candidates:
        if os.path.isfile(os.path.join(root, "benchmarks", "__init__.py")):
            return root
    return None


def available(root: str | None = None) -> list[str]:
    """Names of the runnable benchmarks: modules of `benchmarks/` (not private) whose source
    defines a top-level `main` and imports `write_report` from `benchmarks.report`."""
    root = benchmarks_root() if root is None else root
    if root is None:
        return []
    folder = os.path.join(root, "benchmarks")
    names = sorted(
        f[:-3] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_")
    )
    return [n for n in names if _is_benchmark(os.path.join(folder, f"{n}.py"))]


def _is_benchmark(path: str) -> bool:
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    has_main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    reports = any(
        isinstance(n, ast.ImportFrom)
        and n.module == "benchmarks.report"
        and any(a.name == "write_report" for a in n.names)
        for n in ast.walk(tree)
    )
    return has_main and reports


def results_path(root: str, name: str, argv) -> str:
    """Where benchmark `name` run with `argv` writes its JSON: --results-dir / (--out or name)."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--results-dir", default=os.path.join(root, "benchmarks", "results"))
    p.add_argument("--out", default=name)
    known, _ = p.parse_known_args(list(argv))
    return os.path.join(known.results_dir, f"{known.out}.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="benchmark name: a module of benchmarks/ (e.g. scaling)")
    parser.add_argument(
        "bench_args",
        nargs=argparse.REMAINDER,
        help="options passed to the benchmark's main(argv), e.g. --quick",
    )


def run(args: argparse.Namespace) -> dict:
    """Import `benchmarks.<name>` and call its `main(argv)`; ValueError for an unknown name."""
    root = benchmarks_root()
    names = available(root)
    if root is None:
        raise ValueError(
            "name: no benchmarks/ package found next to jaxrej or in the current directory; "
            "run from the repository root"
        )
    if args.name not in names:
        raise ValueError(f"name: unknown benchmark {args.name!r}; available: {', '.join(names)}")
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module(f"benchmarks.{args.name}")
    if not hasattr(module, "main"):
        raise ValueError(f"name: benchmarks/{args.name}.py defines no main(argv)")
    argv = list(args.bench_args or []) + list(getattr(args, "overrides", []) or [])
    module.main(argv)
    out = results_path(root, args.name, argv)
    return {"benchmark": args.name, "results": out if os.path.exists(out) else None}
