"""Benchmark results on disk, and the tables of README.md, docs/ and benchmarks/README.md
generated from them.

`write_report` writes results/STEM.json, STEM.md (and STEM.png), each replaced atomically; the JSON
also records the command that produced it. The documents (`documents()`: README.md, every
docs/**/*.md, benchmarks/README.md) hold marker pairs

    <!-- results:SOURCE -->
    ...generated: SOURCE.md, a link to SOURCE.json and the command it records...
    <!-- /results:SOURCE -->

whose contents `update_all` rewrites, so every number in a generated table traces to a results
file and the command that wrote it. SOURCE is

    STEM             benchmarks/results/STEM.md, whole (its headings demoted under the document's)
    PATH/STEM        the same for PATH/STEM.md relative to the repository root: the demo's output
                     copied into docs/demo/ (e.g. docs/demo/evaluate)
    ...#N            only the N-th table (1-based) of that markdown file
    ...#N:V1,V2      only the rows of that table with a cell equal to V1 or V2 (a headline table)

A SOURCE.json must record `command` (and may record `command_note`: the commit, where a copy came
from). `write_report` regenerates every document after writing into this folder's results/ (not
into another results dir, e.g. a test's tmp dir).

    python -m benchmarks.report            # regenerate every document, print the regions that changed
    python -m benchmarks.report --check    # exit 1 listing stale regions; writes nothing
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import sys
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
README = os.path.join(HERE, "README.md")

OPEN = "<!-- results:{stem} -->"
CLOSE = "<!-- /results:{stem} -->"
_STEM = r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*(?:#[0-9]+(?::[A-Za-z0-9_.,-]+)?)?"
_MARKER = re.compile(rf"^<!-- (?P<close>/?)results:(?P<stem>{_STEM}) -->[ \t]*$", re.M)
_SOURCE = re.compile(r"^(?P<path>[^#]+)(?:#(?P<table>[0-9]+)(?::(?P<rows>.+))?)?$")


def documents(root: str = ROOT) -> list[str]:
    """The files whose marked regions are generated: README.md, docs/**/*.md, benchmarks/README.md
    (those that exist), in that order."""
    found = [os.path.join(root, "README.md")]
    found += sorted(glob.glob(os.path.join(root, "docs", "**", "*.md"), recursive=True))
    found.append(os.path.join(root, "benchmarks", "README.md"))
    return [p for p in found if os.path.isfile(p)]


def invocation(argv: list[str] | None = None) -> str | None:
    """The command line that is running, as a user would type it: `python -m benchmarks.NAME ...`
    or `jaxrej bench NAME ...`; None when this is neither (e.g. a test calling main(argv))."""
    argv = sys.argv if argv is None else argv
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    args = shlex.join(argv[1:])
    if spec is not None and spec.name.split(".")[0] in ("benchmarks", "jaxrej"):
        name = "jaxrej" if spec.name == "jaxrej.__main__" else spec.name
        return f"python -m {name} {args}".strip()
    if argv and os.path.basename(argv[0]) == "jaxrej":
        return f"jaxrej {args}".strip()
    return None


def write_report(stem: str, out: dict, results: str, render: Callable[[dict], str],
                 plot: Callable[[dict, str], None] | None = None) -> str:  # fmt: skip
    """Write results/stem.json (out, plus `command`: the command line running, unless out has one),
    stem.md (render(out)) and, with `plot`, stem.png; print and return the markdown. A crash
    mid-write leaves the previous files whole. When `results` is this package's results/, then
    regenerate every document's tables from results/ (a document problem is printed, not raised:
    the results are written by then)."""
    from jaxrej.io import atomic_write_json, atomic_write_text

    os.makedirs(results, exist_ok=True)
    command = invocation()
    record = out if command is None or "command" in out else {**out, "command": command}
    atomic_write_json(os.path.join(results, f"{stem}.json"), record)
    md = render(out)
    atomic_write_text(os.path.join(results, f"{stem}.md"), md)
    if plot is not None:
        plot(out, os.path.join(results, f"{stem}.png"))
    print(md)
    if os.path.realpath(results) == os.path.realpath(RESULTS):
        try:
            changed = update_all(results=RESULTS, root=ROOT)
        except (OSError, ValueError) as e:
            print(f"generated tables not regenerated: {e}", file=sys.stderr)
        else:
            if changed:
                print(f"regenerated {', '.join(changed)}")
    return md


# ----------------------------------------------------------------------------- marked regions


def regions(text: str) -> list[tuple[str, int, int]]:
    """(source, start, end) of each marked region's contents: text[start:end] lies between the end
    of the opening marker's line and the start of the closing marker. ValueError for an unclosed,
    unopened, nested or repeated marker, naming it."""
    found, open_stem, start, seen = [], None, 0, set()
    for m in _MARKER.finditer(text):
        stem, closing = m.group("stem"), bool(m.group("close"))
        if not closing:
            if open_stem is not None:
                raise ValueError(f"marker results:{stem} opens inside results:{open_stem}")
            if stem in seen:
                raise ValueError(f"marker results:{stem} appears twice")
            open_stem, start = stem, m.end() + 1  # past the line's newline
        else:
            if open_stem != stem:
                raise ValueError(f"marker /results:{stem} closes "
                                 + (f"results:{open_stem}" if open_stem else "nothing"))  # fmt: skip
            found.append((stem, min(start, m.start()), m.start()))
            seen.add(stem)
            open_stem = None
    if open_stem is not None:
        raise ValueError(
            f"marker results:{open_stem} is never closed (no {CLOSE.format(stem=open_stem)})"
        )
    return found


def _benchmark_modules() -> list[str]:
    """The benchmarks, by the rule `jaxrej bench` lists them with."""
    from jaxrej.commands.bench import available

    return available(ROOT)


def parse_source(source: str) -> tuple[str, int | None, tuple[str, ...]]:
    """(path stem, table index or None, row values) of a marker's SOURCE (module doc)."""
    m = _SOURCE.match(source)
    if m is None:
        raise ValueError(f"marker results:{source}: expected STEM[#N[:V1,V2,...]]")
    table = None if m.group("table") is None else int(m.group("table"))
    if table == 0:
        raise ValueError(f"marker results:{source}: tables are numbered from 1")
    rows = tuple(v for v in (m.group("rows") or "").split(",") if v)
    return m.group("path"), table, rows


def _base(stem: str, results: str, root: str) -> str:
    """The path of a stem without extension: results/STEM, or ROOT/PATH/STEM for a stem with a
    folder."""
    if "/" in stem:
        return os.path.join(root, *stem.split("/"))
    return os.path.join(results, stem)


def command_of(stem: str, results: str = RESULTS, root: str = ROOT) -> tuple[str, str]:
    """(command, note): the command that wrote stem.json, as recorded there, and the json's
    `command_note` ("" if none). ValueError naming the stem when no command is recorded."""
    with open(_base(stem, results, root) + ".json") as f:
        rec = json.load(f)
    if not isinstance(rec.get("command"), str):
        raise ValueError(f"{stem}.json records no command: rerun the benchmark that writes it")
    return rec["command"], str(rec.get("command_note", ""))


def _demote_headings(md: str, levels: int = 2) -> str:
    """Headings of a results file sit under the document's `##` sections: `# T` -> `### T`."""
    out, fence = [], False
    for line in md.split("\n"):
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence and re.match(r"#{1,6} ", line):
            line = "#" * levels + line
        out.append(line)
    return "\n".join(out)


def _tables(md: str) -> list[list[str]]:
    """The markdown tables of md outside code fences, each as its lines."""
    tables, current, fence = [], [], False
    for line in md.split("\n"):
        if line.lstrip().startswith("```"):
            fence = not fence
        if not fence and line.startswith("|"):
            current.append(line)
            continue
        if current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def select_table(md: str, table: int, rows: tuple[str, ...] = (), name: str = "") -> str:
    """The table-th table of md (1-based); with `rows`, only its header and the rows with a cell
    equal to one of them. ValueError naming `name` when there is no such table or no row."""
    tables = _tables(md)
    if table > len(tables):
        raise ValueError(f"{name}.md has {len(tables)} table(s), not {table}")
    lines = tables[table - 1]
    if rows:
        body = [ln for ln in lines[2:] if set(_cells(ln)) & set(rows)]
        if not body:
            raise ValueError(f"table {table} of {name}.md has no row with a cell in {list(rows)}")
        lines = lines[:2] + body
    return "\n".join(lines)


def _link(path: str, doc_dir: str) -> str:
    return os.path.relpath(path, doc_dir).replace(os.sep, "/")


def render_region(source: str, results: str = RESULTS, doc_dir: str = HERE,
                  root: str = ROOT) -> str:  # fmt: skip
    """The generated contents of region `source` in a document in `doc_dir`: SOURCE.md (whole with
    headings demoted, or the selected table), after a line linking SOURCE.json and naming its
    command and its note, and a link to SOURCE.png when the whole file is shown and there is one.
    FileNotFoundError naming the stem when its .md or .json is missing."""
    stem, table, rows = parse_source(source)
    base = _base(stem, results, root)
    paths = {ext: f"{base}.{ext}" for ext in ("md", "json", "png")}
    for ext in ("md", "json"):
        if not os.path.isfile(paths[ext]):
            raise FileNotFoundError(
                f"marker results:{source} has no results file {paths[ext]} "
                f"(run the benchmark that writes {stem}, or remove the marker)"
            )
    with open(paths["md"]) as f:
        md = f.read().strip("\n")
    command, note = command_of(stem, results, root)
    note = f" ({note})" if note else ""
    json_link, md_link = _link(paths["json"], doc_dir), _link(paths["md"], doc_dir)
    if table is None:
        what = f"From [`{json_link}`]({json_link})"
        body = _demote_headings(md)
    else:
        rows_note = f", its rows with {' / '.join(rows)}" if rows else ""
        what = f"From [`{json_link}`]({json_link}) (table {table} of [`{md_link}`]({md_link}){rows_note})"
        body = select_table(md, table, rows, stem)
    parts = [
        f"<!-- generated from {md_link} by `python -m benchmarks.report`: "
        "edit the benchmark or its results, not this block -->",
        f"{what}, written by `{command}`{note}:",
        body,
    ]
    if table is None and os.path.isfile(paths["png"]):
        png = _link(paths["png"], doc_dir)
        parts.append(f"Plot: [`{png}`]({png}).")
    return "\n\n".join(parts) + "\n"


def regenerate(text: str, results: str = RESULTS, doc_dir: str = HERE,
               root: str = ROOT) -> tuple[str, list[str]]:  # fmt: skip
    """(new text, sources whose region changed): every marked region's contents replaced by
    render_region; everything outside the regions, markers included, kept byte for byte."""
    pieces, changed, pos = [], [], 0
    for source, start, end in regions(text):
        body = render_region(source, results, doc_dir, root)
        if text[start:end] != body:
            changed.append(source)
        pieces += [text[pos:start], body]
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces), changed


def update_readme(readme: str = README, results: str = RESULTS, check: bool = False,
                  root: str = ROOT) -> list[str]:  # fmt: skip
    """Regenerate one document's marked regions from `results` (atomically, only when something
    changed) and return the sources of the regions that changed; with check=True write nothing
    and return the stale ones. Links are relative to the document's folder."""
    with open(readme) as f:
        text = f.read()
    doc_dir = os.path.dirname(os.path.abspath(readme))
    new, changed = regenerate(text, results, doc_dir, root)
    if changed and not check:
        from jaxrej.io import atomic_write_text

        atomic_write_text(readme, new)  # keeps the document's mode
    return changed


def update_all(results: str = RESULTS, check: bool = False, root: str = ROOT,
               docs: list[str] | None = None) -> list[str]:  # fmt: skip
    """update_readme on every document (`documents(root)` unless `docs`); returns
    'DOC: source' for each region that changed (with check=True: each stale one)."""
    out = []
    for doc in documents(root) if docs is None else docs:
        rel = os.path.relpath(doc, root).replace(os.sep, "/")
        out += [f"{rel}: {s}" for s in update_readme(doc, results, check, root)]
    return out


def unreferenced(readme: str | list[str] = README, results: str = RESULTS) -> list[str]:
    """Stems of results/*.md that no document (or list of documents) shows whole."""
    shown = set()
    for doc in [readme] if isinstance(readme, str) else readme:
        with open(doc) as f:
            shown |= {s for s, _, _ in regions(f.read()) if "#" not in s}
    stems = sorted(f[:-3] for f in os.listdir(results) if f.endswith(".md"))
    return [s for s in stems if s not in shown]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Regenerate the tables of README.md, docs/ and benchmarks/README.md from "
        "benchmarks/results/ and the demo's output in docs/demo/."
    )
    ap.add_argument(
        "--check", action="store_true", help="list stale regions and exit 1; write nothing"
    )
    ap.add_argument("--readme", default=None, help="one document only (default: every document)")
    ap.add_argument("--results-dir", default=RESULTS)
    args = ap.parse_args(argv)
    docs = documents() if args.readme is None else [args.readme]
    try:
        changed = update_all(args.results_dir, check=args.check, docs=docs)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for stem in unreferenced(docs, args.results_dir):
        print(f"note: results/{stem}.md is shown whole in no document", file=sys.stderr)
    if args.check:
        for region in changed:
            print(f"stale: {region}")
        if changed:
            print("run `python -m benchmarks.report` to regenerate", file=sys.stderr)
        return 1 if changed else 0
    print("\n".join(f"regenerated: {region}" for region in changed) or "every document up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
