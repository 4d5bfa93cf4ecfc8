"""The layering of jaxrej/ (design.md): the library never imports the command layer. No module
other than jaxrej/commands/* and jaxrej/cli.py imports jaxrej.commands, and no module imports
jaxrej.cli. Checked on the sources by `import_violations`, itself tested on a planted tree."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path, root: Path, package: str) -> tuple[str, bool]:
    """(dotted module name, whether it is a package's __init__) of a source file under root."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_init = parts[-1] == "__init__"
    return ".".join([package, *(parts[:-1] if is_init else parts)]), is_init


def _imported(tree: ast.AST, module: str, is_init: bool):
    """(line, dotted name) of everything a module's source imports, relative imports resolved;
    `from a import b` yields both a and a.b (b may be a submodule); importlib.import_module calls
    with a literal (or f-string with a literal head) name yield that name."""
    pkg = module if is_init else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args:
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            arg = node.args[0]
            if isinstance(arg, ast.JoinedStr) and arg.values:
                arg = arg.values[0]
            if name == "import_module" and isinstance(arg, ast.Constant):
                yield node.lineno, str(arg.value)


def _is(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def import_violations(root: Path, package: str = "jaxrej") -> list[str]:
    """'path:line: MODULE imports NAME (why)' for every import under `root` (the folder of
    `package`) that breaks the rules in the module doc; empty when there is none."""
    out = []
    for path in sorted(root.rglob("*.py")):
        module, is_init = _module_name(path, root, package)
        tree = ast.parse(path.read_text(), str(path))
        command_side = _is(module, f"{package}.commands") or module == f"{package}.cli"
        for line, name in _imported(tree, module, is_init):
            if _is(name, f"{package}.cli") and module != f"{package}.cli":
                out.append(f"{path}:{line}: {module} imports {name} (nothing imports the cli)")
            elif _is(name, f"{package}.commands") and not command_side:
                out.append(
                    f"{path}:{line}: {module} imports {name} (the library imports no command)"
                )
    return sorted(set(out))


def test_the_library_imports_no_command_and_nothing_imports_the_cli():
    assert (ROOT / "jaxrej" / "cli.py").is_file()
    assert import_violations(ROOT / "jaxrej") == []


def _write_tree(root, files):
    """files {relative path: text} written under root (folders made)."""
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_the_checker_finds_planted_violations_and_passes_the_allowed_imports(tmp_path):
    pkg = tmp_path / "jaxrej"
    files = {
        "__init__.py": "",
        "cli.py": "import importlib\nimportlib.import_module(f'jaxrej.commands.{1}')\n",
        "commands/__init__.py": "",
        "commands/train.py": "from jaxrej.commands import score\nfrom . import score as s\n",
        "commands/score.py": "from jaxrej.training import workdir\n",
        "training/__init__.py": "",
        "training/workdir.py": "import json\nfrom jaxrej.config import config_diff\n",
    }
    _write_tree(pkg, files)
    assert import_violations(pkg) == []  # the allowed imports pass
    planted = {
        "abs/run.py": "def f():\n    from jaxrej.commands.train import prepare\n",
        "eval/runs.py": "from ..commands import score\n",
        "eval/__init__.py": "from .. import cli\nimport jaxrej.cli\n",
        "data/x.py": "import importlib\nm = importlib.import_module('jaxrej.commands.score')\n",
        "commands/demo.py": "from jaxrej.cli import main\n",
    }
    _write_tree(pkg, planted)
    found = import_violations(pkg)
    assert {(v.split(":")[0], v.split(" imports ")[1].split(" (")[0]) for v in found} == {
        (str(pkg / "abs/run.py"), "jaxrej.commands.train"),
        (str(pkg / "abs/run.py"), "jaxrej.commands.train.prepare"),
        (str(pkg / "eval/runs.py"), "jaxrej.commands"),
        (str(pkg / "eval/runs.py"), "jaxrej.commands.score"),
        (str(pkg / "eval/__init__.py"), "jaxrej.cli"),
        (str(pkg / "data/x.py"), "jaxrej.commands.score"),
        (str(pkg / "commands/demo.py"), "jaxrej.cli"),
        (str(pkg / "commands/demo.py"), "jaxrej.cli.main"),
    }
