"""Benchmark results on disk, and the README tables generated from them.

`write_report` writes results/STEM.json, STEM.md (and STEM.png), each replaced atomically; the JSON
also records the command that produced it. `benchmarks/README.md` holds marker pairs

    <!-- results:STEM -->
    ...generated: results/STEM.md, a link to results/STEM.json and the command...
    <!-- /results:STEM -->

whose contents `update_readme` rewrites from results/, so every number in a README table traces to
a results file and the command that wrote it. `write_report` calls it after writing into this
folder's results/ (not into another results dir, e.g. a test's tmp dir).

    python -m benchmarks.report            # regenerate, print the regions that changed
    python -m benchmarks.report --check    # exit 1 listing stale regions; writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
README = os.path.join(HERE, "README.md")

OPEN = "<!-- results:{stem} -->"
CLOSE = "<!-- /results:{stem} -->"
_STEM = r"[A-Za-z0-9_.-]+"
_MARKER = re.compile(rf"^<!-- (?P<close>/?)results:(?P<stem>{_STEM}) -->[ \t]*$", re.M)


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
    regenerate README.md's tables from results/ (a README problem is printed, not raised: the
    results are written by then)."""
    from jaxrej.training.checkpoint import atomic_write_json, atomic_write_text

    os.makedirs(results, exist_ok=True)
    command = invocation()
    record = out if command is None or "command" in out else {**out, "command": command}
    atomic_write_json(os.path.join(results, f"{stem}.json"), record)
    md = render(out)
    atomic_write_text(os.path.join(results, f"{stem}.md"), md)
    if plot is not None:
        plot(out, os.path.join(results, f"{stem}.png"))
    print(md)
    if os.path.realpath(results) == os.path.realpath(RESULTS) and os.path.isfile(README):
        try:
            changed = update_readme(README, RESULTS)
        except (OSError, ValueError) as e:
            print(f"benchmarks/README.md not regenerated: {e}", file=sys.stderr)
        else:
            if changed:
                print(f"benchmarks/README.md: regenerated {', '.join(changed)}")
    return md


# ----------------------------------------------------------------------------- README regions


def regions(text: str) -> list[tuple[str, int, int]]:
    """(stem, start, end) of each marked region's contents: text[start:end] lies between the end
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

    return available(os.path.dirname(HERE))


def command_of(stem: str, results: str = RESULTS) -> tuple[str, str]:
    """(command, note): the command that wrote results/stem.json, as recorded there, and the
    json's `command_note` ("" if none). ValueError naming the stem when no command is recorded."""
    with open(os.path.join(results, f"{stem}.json")) as f:
        rec = json.load(f)
    if not isinstance(rec.get("command"), str):
        raise ValueError(
            f"results/{stem}.json records no command: rerun the benchmark that writes it"
        )
    return rec["command"], str(rec.get("command_note", ""))


def _demote_headings(md: str, levels: int = 2) -> str:
    """Headings of a results file sit under the README's `##` sections: `# T` -> `### T`."""
    out, fence = [], False
    for line in md.split("\n"):
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence and re.match(r"#{1,6} ", line):
            line = "#" * levels + line
        out.append(line)
    return "\n".join(out)


def render_region(stem: str, results: str = RESULTS, link_base: str = "results") -> str:
    """The generated contents of region `stem`: results/stem.md (headings demoted), after a line
    linking results/stem.json and naming its command, and a link to stem.png when there is one.
    FileNotFoundError naming the stem when stem.md or stem.json is missing."""
    paths = {ext: os.path.join(results, f"{stem}.{ext}") for ext in ("md", "json", "png")}
    for ext in ("md", "json"):
        if not os.path.isfile(paths[ext]):
            raise FileNotFoundError(
                f"README marker results:{stem} has no results file {paths[ext]} "
                f"(run the benchmark that writes {stem}, or remove the marker)"
            )
    with open(paths["md"]) as f:
        md = f.read().strip("\n")
    command, note = command_of(stem, results)
    note = f" ({note})" if note else ""
    parts = [
        f"<!-- generated from {link_base}/{stem}.md by `python -m benchmarks.report`: "
        "edit the benchmark or its results, not this block -->",
        f"From [`{link_base}/{stem}.json`]({link_base}/{stem}.json), written by `{command}`{note}:",
        _demote_headings(md),
    ]
    if os.path.isfile(paths["png"]):
        parts.append(f"Plot: [`{link_base}/{stem}.png`]({link_base}/{stem}.png).")
    return "\n\n".join(parts) + "\n"


def regenerate(
    text: str, results: str = RESULTS, link_base: str = "results"
) -> tuple[str, list[str]]:
    """(new text, stems whose region changed): every marked region's contents replaced by
    render_region; everything outside the regions, markers included, kept byte for byte."""
    pieces, changed, pos = [], [], 0
    for stem, start, end in regions(text):
        body = render_region(stem, results, link_base)
        if text[start:end] != body:
            changed.append(stem)
        pieces += [text[pos:start], body]
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces), changed


def update_readme(readme: str = README, results: str = RESULTS, check: bool = False) -> list[str]:
    """Regenerate `readme`'s marked regions from `results` (atomically, only when something
    changed) and return the stems of the regions that changed; with check=True write nothing and
    return the stale ones. Links are relative to the README's folder."""
    with open(readme) as f:
        text = f.read()
    link_base = os.path.relpath(results, os.path.dirname(os.path.abspath(readme))).replace(
        os.sep, "/"
    )
    new, changed = regenerate(text, results, link_base)
    if changed and not check:
        from jaxrej.training.checkpoint import atomic_write_text

        atomic_write_text(readme, new)  # keeps the README's mode
    return changed


def unreferenced(readme: str = README, results: str = RESULTS) -> list[str]:
    """Stems of results/*.md that no README region shows."""
    with open(readme) as f:
        shown = {stem for stem, _, _ in regions(f.read())}
    stems = sorted(f[:-3] for f in os.listdir(results) if f.endswith(".md"))
    return [s for s in stems if s not in shown]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Regenerate benchmarks/README.md's tables from results/."
    )
    ap.add_argument(
        "--check", action="store_true", help="list stale regions and exit 1; write nothing"
    )
    ap.add_argument("--readme", default=README)
    ap.add_argument("--results-dir", default=RESULTS)
    args = ap.parse_args(argv)
    try:
        changed = update_readme(args.readme, args.results_dir, check=args.check)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for stem in unreferenced(args.readme, args.results_dir):
        print(f"note: results/{stem}.md is shown in no README region", file=sys.stderr)
    if args.check:
        for stem in changed:
            print(f"stale: results:{stem}")
        if changed:
            print("run `python -m benchmarks.report` to regenerate", file=sys.stderr)
        return 1 if changed else 0
    print("\n".join(f"regenerated: results:{stem}" for stem in changed) or "README up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
