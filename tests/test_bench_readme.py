"""benchmarks/README.md's tables are generated from benchmarks/results/ (`python -m benchmarks.report`).

No model runs here: these tests read and write markdown and JSON only.
"""

import json
import os
import stat

import pytest

from benchmarks import report

FAKE_MD = "Device: a fake device.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"


def test_committed_documents_are_up_to_date_with_results():
    """README.md, docs/**/*.md and benchmarks/README.md: every generated region equals what
    `python -m benchmarks.report` makes of benchmarks/results/ and docs/demo/ now."""
    docs = [os.path.relpath(d, report.ROOT) for d in report.documents()]
    assert {"README.md", "benchmarks/README.md", "docs/digits.md"} <= set(docs)
    stale = report.update_all(check=True)
    assert stale == [], (
        f"generated regions {stale} differ from their results files; "
        "run `python -m benchmarks.report`"
    )


def test_every_results_table_is_shown_in_the_readme():
    missing = report.unreferenced(report.README, report.RESULTS)
    assert missing == [], f"results {missing} have no <!-- results:STEM --> region in the README"


def test_readme_commands_name_a_benchmark_module():
    """Each region names a command that runs a benchmark module that exists."""
    modules = set(report._benchmark_modules())
    with open(report.README) as f:
        stems = [stem for stem, _, _ in report.regions(f.read())]
    assert stems
    for stem in stems:
        command, _ = report.command_of(stem)
        module = command.split("-m benchmarks.", 1)[-1].split()[0]
        assert module in modules, (stem, command)
        assert (f"--out {stem}" in command) == (stem != module), (stem, command)


def _tmp_results(tmp_path, stem="fake_bench", md=FAKE_MD, command="python -m benchmarks.x --y 1"):
    results = tmp_path / "results"
    results.mkdir()
    (results / f"{stem}.md").write_text(md)
    (results / f"{stem}.json").write_text(json.dumps({"command": command, "value": 1}))
    return results


def test_regeneration_replaces_exactly_the_marked_region(tmp_path):
    results = _tmp_results(tmp_path)
    before = "# Title\n\nProse with 12.5x.\n\n"
    after = "\nMore prose, `<!-- results:fake_bench -->` inline is not a marker.\n"
    readme = tmp_path / "README.md"
    text = (
        before
        + "<!-- results:fake_bench -->\nOLD TABLE | 1 |\n<!-- /results:fake_bench -->\n"
        + after
    )
    readme.write_text(text)
    os.chmod(readme, 0o644)

    assert report.update_readme(str(readme), str(results), check=True) == ["fake_bench"]
    assert readme.read_text() == text  # --check writes nothing
    assert report.update_readme(str(readme), str(results)) == ["fake_bench"]
    new = readme.read_text()

    open_m, close_m = "<!-- results:fake_bench -->\n", "<!-- /results:fake_bench -->\n"
    head, rest = new.split(open_m)
    body, tail = rest.split(close_m)
    assert head == before and tail == after  # byte-identical outside the region
    assert "OLD TABLE" not in body
    assert FAKE_MD.strip() in body
    assert "[`results/fake_bench.json`](results/fake_bench.json)" in body
    assert "`python -m benchmarks.x --y 1`" in body
    assert "reconstructed" not in body  # the json records its command
    assert stat.S_IMODE(os.stat(readme).st_mode) == 0o644  # others can still read it

    # idempotent: a second run changes nothing; a changed results file makes the region stale
    assert report.update_readme(str(readme), str(results)) == []
    (results / "fake_bench.md").write_text(FAKE_MD.replace("| 1 | 2 |", "| 3 | 4 |"))
    assert report.update_readme(str(readme), str(results), check=True) == ["fake_bench"]
    assert report.main(["--check", "--readme", str(readme), "--results-dir", str(results)]) == 1
    assert report.main(["--readme", str(readme), "--results-dir", str(results)]) == 0
    assert report.main(["--check", "--readme", str(readme), "--results-dir", str(results)]) == 0
    assert "| 3 | 4 |" in readme.read_text() and readme.read_text().endswith(after)


def test_results_headings_are_demoted_below_the_readme_sections(tmp_path):
    results = _tmp_results(tmp_path, md="# A title\n\n```\n# not a heading\n```\n" + FAKE_MD)
    text = "<!-- results:fake_bench -->\n<!-- /results:fake_bench -->\n"
    new, changed = report.regenerate(text, str(results))
    assert changed == ["fake_bench"]
    assert "\n### A title\n" in new and "\n# not a heading\n" in new


def test_missing_results_file_is_an_error_naming_the_stem(tmp_path):
    results = _tmp_results(tmp_path)
    readme = tmp_path / "README.md"
    text = "x\n<!-- results:no_such_bench -->\n<!-- /results:no_such_bench -->\n"
    readme.write_text(text)
    with pytest.raises(FileNotFoundError, match="no_such_bench"):
        report.update_readme(str(readme), str(results))
    assert readme.read_text() == text
    assert report.main(["--readme", str(readme), "--results-dir", str(results)]) == 2


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- results:a -->\n", "results:a is never closed"),
        ("<!-- /results:a -->\n", "closes nothing"),
        ("<!-- results:a -->\n<!-- results:b -->\n", "opens inside results:a"),
        ("<!-- results:a -->\n<!-- /results:b -->\n", "/results:b closes results:a"),
        ("<!-- results:a -->\n<!-- /results:a -->\n" * 2, "appears twice"),
    ],
)
def test_malformed_markers_are_errors(text, message):
    with pytest.raises(ValueError, match=message):
        report.regions(text)


def test_region_names_the_recorded_command_and_its_note(tmp_path):
    """The region quotes the json's command and its `command_note`; a json that records no
    command is an error naming it."""
    results = _tmp_results(tmp_path)
    path = results / "fake_bench.json"
    path.write_text(json.dumps({"command": "python -m benchmarks.x --y 1", "command_note": "n"}))
    assert "written by `python -m benchmarks.x --y 1` (n):" in report.render_region(
        "fake_bench", str(results)
    )
    path.write_text(json.dumps({"value": 1}))
    with pytest.raises(ValueError, match="fake_bench.json records no command"):
        report.render_region("fake_bench", str(results))


def test_write_report_regenerates_only_the_repositorys_documents(tmp_path, monkeypatch):
    """Into the (here: monkeypatched) own results folder, write_report regenerates the
    repository's documents; into any other folder it leaves them alone."""
    own = tmp_path / "own" / "results"
    readme = tmp_path / "own" / "README.md"
    own.parent.mkdir()
    text = "intro\n<!-- results:fake_bench -->\n<!-- /results:fake_bench -->\nend\n"
    readme.write_text(text)
    monkeypatch.setattr(report, "RESULTS", str(own))
    monkeypatch.setattr(report, "ROOT", str(own.parent))

    def render(out):
        return f"| value |\n|---|\n| {out['value']} |\n"

    other = tmp_path / "elsewhere"
    report.write_report("fake_bench", {"value": 7}, str(other), render)
    assert (other / "fake_bench.md").read_text() == render({"value": 7})
    assert readme.read_text() == text

    report.write_report("fake_bench", {"value": 7, "command": "python -m benchmarks.fake_bench"},
                        str(own), render)  # fmt: skip
    new = readme.read_text()
    assert "| 7 |" in new and new.startswith("intro\n") and new.endswith("end\n")
    assert report.update_readme(str(readme), str(own), check=True) == []


def test_invocation_names_the_command_line():
    assert report.invocation(["/venv/bin/jaxrej", "bench", "adjoint", "--out", "a b"]) == (
        "jaxrej bench adjoint --out 'a b'"
    )
    assert report.invocation(["/usr/bin/python3", "whatever"]) is None


def test_readme_links_point_at_existing_files():
    with open(report.README) as f:
        text = f.read()
    base = os.path.dirname(report.README)
    for stem, start, end in report.regions(text):
        for ext in ("json", "md"):
            assert os.path.isfile(os.path.join(base, "results", f"{stem}.{ext}"))
        assert f"(results/{stem}.json)" in text[start:end]


def test_a_source_selects_one_table_and_its_rows(tmp_path):
    """`STEM#N` shows the N-th table alone, `STEM#N:V1,V2` its rows with a cell V1 or V2 (a
    headline table), each naming the file and command; a missing table or row is an error."""
    md = "Intro.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nMiddle.\n\n| s | v |\n|---|---|\n" + (
        "| x | 1 |\n| y | 2 |\n| z | 3 |\n"
    )
    results = _tmp_results(tmp_path, md=md)
    body = report.render_region("fake_bench#2", str(results), str(tmp_path))
    assert "| s | v |\n|---|---|\n| x | 1 |\n| y | 2 |\n| z | 3 |\n" in body
    assert "Intro." not in body and "| a | b |" not in body
    assert "(table 2 of [`results/fake_bench.md`](results/fake_bench.md))" in body
    assert "written by `python -m benchmarks.x --y 1`:" in body
    body = report.render_region("fake_bench#2:x,z", str(results), str(tmp_path))
    assert "| s | v |\n|---|---|\n| x | 1 |\n| z | 3 |\n" in body and "| y |" not in body
    with pytest.raises(ValueError, match="has 2 table"):
        report.render_region("fake_bench#3", str(results), str(tmp_path))
    with pytest.raises(ValueError, match="no row"):
        report.render_region("fake_bench#1:q", str(results), str(tmp_path))
    # the whole file and a selection of it may stand in one document
    text = (
        "<!-- results:fake_bench -->\n<!-- /results:fake_bench -->\n"
        "<!-- results:fake_bench#2:y -->\n<!-- /results:fake_bench#2:y -->\n"
    )
    new, changed = report.regenerate(text, str(results), str(tmp_path))
    assert changed == ["fake_bench", "fake_bench#2:y"] and new.count("| y | 2 |") == 2


def test_a_source_with_a_folder_is_a_file_of_the_repository(tmp_path):
    """`docs/demo/evaluate` names ROOT/docs/demo/evaluate.md and .json (the demo's output),
    linked relative to the document; every document under ROOT is regenerated and checked."""
    root = tmp_path / "repo"
    (root / "docs" / "demo").mkdir(parents=True)
    (root / "docs" / "demo" / "evaluate.md").write_text(FAKE_MD)
    (root / "docs" / "demo" / "evaluate.json").write_text(json.dumps({"command": "jaxrej demo"}))
    region = "<!-- results:docs/demo/evaluate#1 -->\n<!-- /results:docs/demo/evaluate#1 -->\n"
    (root / "README.md").write_text("# R\n\n" + region)
    (root / "docs" / "page.md").write_text("# P\n\n" + region)
    results = str(tmp_path / "no_results")
    kw = {"results": results, "root": str(root)}
    regenerated = ["README.md: docs/demo/evaluate#1", "docs/page.md: docs/demo/evaluate#1"]
    assert report.update_all(check=True, **kw) == regenerated
    assert report.update_all(**kw) == regenerated
    assert report.update_all(check=True, **kw) == []
    assert (
        "[`docs/demo/evaluate.json`](docs/demo/evaluate.json)" in (root / "README.md").read_text()
    )
    page = (root / "docs" / "page.md").read_text()
    assert "[`demo/evaluate.json`](demo/evaluate.json)" in page and "| 1 | 2 |" in page
    assert "written by `jaxrej demo`:" in page
    # a hand edit inside a generated region is stale
    (root / "docs" / "page.md").write_text(page.replace("| 1 | 2 |", "| 1 | 3 |"))
    assert report.update_all(check=True, **kw) == ["docs/page.md: docs/demo/evaluate#1"]


def test_a_table_index_counts_from_one():
    assert report.parse_source("docs/demo/evaluate#3:photos,noise") == (
        "docs/demo/evaluate",
        3,
        ("photos", "noise"),
    )
    with pytest.raises(ValueError, match="numbered from 1"):
        report.parse_source("a#0")
