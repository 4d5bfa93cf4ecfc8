"""README.md is one screen whose tables are generated, whose links resolve and whose quick start
runs as written; docs/ holds the long pages (their tables: tests/test_bench_readme.py)."""

import os
import re

from benchmarks import report

ROOT = report.ROOT
README = os.path.join(ROOT, "README.md")


def _text(path=README):
    with open(path) as f:
        return f.read()


def test_readme_fits_on_one_screen():
    n = _text().count("\n")
    assert n <= 200, f"README.md has {n} lines; move the long part to docs/"


def test_readme_keeps_the_two_commands():
    """.ci/run runs the README's test command; the demo command is the main job."""
    text = _text()
    assert "```bash\npip install -e . && jaxrej demo\n```" in text
    test_cmd = "python3 -m pip install -q -e '.[test]' && python3 -m pytest -q -n 2"
    assert f"```bash\n{test_cmd}\n```" in text
    assert test_cmd in _text(os.path.join(ROOT, ".ci", "run"))


def test_every_readme_table_is_generated():
    """A table in the README lies inside a region `python -m benchmarks.report` writes, so each
    of its numbers comes from a results file that names its command."""
    text = _text()
    inside = [range(start, end) for _, start, end in report.regions(text)]
    pos = 0
    for line in text.split("\n"):
        if line.startswith("|"):
            assert any(pos in r for r in inside), f"README table line outside a region: {line}"
        pos += len(line) + 1
    assert inside, "the README shows no generated table"


def test_document_links_resolve():
    """Every relative link of README.md and docs/**/*.md names a file or folder that exists."""
    link = re.compile(r"\]\(([^)\s]+)\)")
    for doc in report.documents():
        base = os.path.dirname(doc)
        for target in link.findall(_text(doc)):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = os.path.normpath(os.path.join(base, target.split("#")[0]))
            assert os.path.exists(path), f"{os.path.relpath(doc, ROOT)} links {target}"


def test_readme_quick_start_runs():
    """The README's first python block runs as written and gives what its comments say."""
    block = re.search(r"```python\n(.*?)```", _text(), re.S).group(1)
    ns = {}
    exec(compile(block, "README.md quick start", "exec"), ns)
    assert ns["res"].ok.all() and ns["L"].shape == (3, 2)
    assert ns["pred"].tolist() == [0, 1, 1] and ns["rejected"].tolist() == [False, False, True]
    assert ns["g"].shape == (3, 2) and bool(ns["adv"].x_adv.shape == (3, 2))
